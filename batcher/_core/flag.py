"""The CLI flag of an option, declared on the option's own field (``field(metadata=flag(...))``),
and ``duration``, which parses the text of the flags that take a duration.

Options live as fields of small frozen dataclasses (the option groups in ``_config``, and
``ColumnOptions``); the CLI builds its flags from this metadata, so an option is declared in one
place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["duration", "flag"]


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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


def duration(text: str) -> float:
    """A duration flag's value in seconds: ``90`` (seconds), ``90s``, ``30m``, ``1h30m``."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        import argparse  # here, not above: `import batcher` does not load argparse

        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 1h30m)")
    return total
