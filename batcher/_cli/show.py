"""``batcher show``: a run's results as a table in the terminal, for a look without Python."""

from __future__ import annotations

import argparse
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config.prices import usd
from .._core.errors import UsageError
from .._rundir.manifest import Manifest
from .._rundir.results import input_order, iter_rows
from .._rundir.rows import result_schema
from .exits import EXIT_OK

__all__ = ["ShowRequest", "show_command", "show_table"]

DEFAULT_COLUMNS = ("id", "status", "model", "input_tokens", "output_tokens", "cost_usd", "text")
ERROR_COLUMNS = ("id", "model", "error_kind", "attempts", "error")
_HEADERS = {"input_tokens": "in", "output_tokens": "out", "cost_usd": "cost", "latency_ms": "ms"}
_NUMERIC = {"input_tokens", "output_tokens", "attempts", "cost_usd", "latency_ms"}
_WIDE = {"text", "error", "response", "source", "parsed"}
"""Columns that share the width left over (cut at the terminal's edge); the others fit content."""
CELL = 200
"""Characters of a long text cell shown; the rest is cut with an ellipsis."""


@dataclass(frozen=True, slots=True)
class ShowRequest:
    """Which rows and columns of ``DIR/results`` to show."""

    out: Path
    limit: int = 20
    errors: bool = False
    columns: tuple[str, ...] | None = None

    def chosen(self, parsed: bool = False) -> tuple[str, ...]:
        """The columns to show; ``UsageError`` naming an unknown one and those that exist.
        ``parsed``: the run has a ``parsed`` column (it was run with ``--schema``)."""
        known = [*result_schema().names, *(["parsed"] if parsed else [])]
        columns = self.columns or (ERROR_COLUMNS if self.errors else DEFAULT_COLUMNS)
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise UsageError(f"--columns: no column {', '.join(unknown)}; choose from {known}")
        return columns


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "cost_usd":
        return usd(value)
    if column == "parsed":
        value = json.dumps(value, ensure_ascii=False, default=str)
    elif column == "latency_ms":
        return f"{value:,.0f}"
    if column == "finished_at":
        from datetime import datetime

        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(value).split())  # one line per row, however the text runs
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def show_table(request: ShowRequest, width: int = 100) -> tuple[Any, str]:
    """A rich ``Table`` of the first ``limit`` rows (errors only, if asked) that fits ``width``
    characters (long text cut), and a line saying how many rows there are."""
    from rich import box
    from rich.table import Table

    manifest = Manifest.read(request.out)
    if manifest is None:
        raise UsageError(f"{request.out} holds no batcher run (no run.json)")
    columns = request.chosen(parsed=manifest.schema is not None)
    read = list(dict.fromkeys((*columns, "status", "id", "source")))
    rows = iter_rows(request.out, read)
    if request.errors:
        rows = (r for r in rows if r["status"] == "error")
    total = 0

    def counted(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal total
        for row in rows:
            total += 1
            yield row

    # the first rows in input order, holding no more than those shown
    shown = heapq.nsmallest(request.limit, counted(rows), key=input_order(manifest.inputs))
    more = total - len(shown)
    cells = [[_cell(c, row[c]) for c in columns] for row in shown]
    headers = [_HEADERS.get(c, c) for c in columns]
    fits = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    wide = [i for i, c in enumerate(columns) if c in _WIDE]
    narrow = sum(f for i, f in enumerate(fits) if i not in wide)
    # what the terminal has left after the narrow columns and 3 characters of padding each
    spare = max(12 * len(wide), width - narrow - 3 * len(columns) - 1)
    for i in wide:
        fits[i] = min(fits[i], max(12, spare // len(wide)))
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, expand=False)
    for c, header, fit in zip(columns, headers, fits, strict=True):
        table.add_column(
            header,
            justify="right" if c in _NUMERIC else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=fit,
        )
    for r in cells:
        table.add_row(*r)
    what = "errors" if request.errors else "results"
    note = f"{len(shown)} of {total} {what} in {request.out}"
    if more:
        note += f" (-n {total} shows them all)"
    return table, note


def show_command(args: argparse.Namespace) -> int:
    """Print the table of ``args.dir``'s results that the flags ask for, at the terminal's width."""
    from rich.console import Console

    if args.n < 0:
        raise UsageError("-n must be 0 or more")
    columns = (
        tuple(c.strip() for c in args.columns.split(",") if c.strip()) if args.columns else None
    )
    console = Console(soft_wrap=False)
    request = ShowRequest(Path(args.dir), args.n, args.errors, columns)
    table, note = show_table(request, console.width)
    console.print(table)
    console.print(note, highlight=False)
    return EXIT_OK
