"""The option groups as command-line flags: each field's metadata (``_core.flag``) makes its
flag, and the flags a command was given make its options back."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar

from .._config.options import _GROUPS, RunOptions

__all__ = ["add_flags", "group_from_args", "options_from_args"]

T = TypeVar("T")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """The options the CLI's flags gave (every option that has a flag); a flag left at None
    (not given) leaves its option's default."""
    given = {name: getattr(args, name) for name in _flagged(_GROUPS)}
    return RunOptions(**{name: value for name, value in given.items() if value is not None})


def group_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """One option group from the flags a command has of it (the rest keep their defaults)."""
    names = [f.name for f in fields(cls) if f.init and hasattr(args, f.name)]  # type: ignore[arg-type]
    return cls(**{name: getattr(args, name) for name in names})


def _flag_fields(groups: Mapping[str, Any]) -> Iterator[Field[Any]]:
    for cls in groups.values():
        for f in fields(cls):
            if f.init and f.metadata:
                yield f


def _flagged(groups: Mapping[str, Any]) -> list[str]:
    return [f.name for f in _flag_fields(groups)]


def add_flags(
    parser: argparse.ArgumentParser,
    groups: tuple[str, ...],
    *,
    only: tuple[str, ...] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add the flags of these option groups (or ``only`` these options) to ``parser``.

    ``overrides`` changes argparse's keywords for an option in this command (e.g. ``plan``'s
    provider default, ``bench``'s concurrency).
    """
    chosen = {g: _GROUPS[g] for g in groups}
    exclusive: dict[str, Any] = {}
    for f in _flag_fields(chosen):
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": default}
        if f.type in ("bool", bool):
            kwargs["action"] = "store_true"
        elif meta["choices"]:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["metavar"] = meta["metavar"]
            if meta["const"] is not None:
                kwargs.update(nargs="?", const=meta["const"])
            kind = meta["parse"] or {"int | None": int, "int": int, "float": float}.get(str(f.type))
            if kind is not None:
                kwargs["type"] = kind
        kwargs.update((overrides or {}).get(f.name, {}))
        target: Any = parser
        if meta["exclusive"]:
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = parser.add_mutually_exclusive_group()
            target = exclusive[meta["exclusive"]]
        target.add_argument(meta["name"] or "--" + f.name.replace("_", "-"), **kwargs)
