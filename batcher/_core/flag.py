"""The CLI flag of an option, declared on the option's own field (``field(metadata=flag(...))``).

Options live as fields of small frozen dataclasses (``_config.options``, ``ColumnOptions``); the CLI
builds its flags from this metadata, so an option is declared in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["flag"]


def flag(
    help: str,
    *,
    metavar: str | None = None,
    name: str | None = None,
    choices: tuple[str, ...] | None = None,
    const: str | None = None,
    exclusive: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Field metadata for an option's CLI flag: its help, metavar, name (when not the field's
    name with dashes), choices, the value of a bare flag (``const``), the mutually exclusive set
    it belongs to, and the function that parses its text."""
    return {
        "help": help,
        "metavar": metavar,
        "name": name,
        "choices": choices,
        "const": const,
        "exclusive": exclusive,
        "parse": parse,
    }
