"""``batcher show``: a run's results as a table in the terminal, for a look without Python."""

from __future__ import annotations

import argparse
import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config.prices import usd
from .._core.errors import UsageError
from .._rundir.answers import stored_schema
from .._rundir.manifest import Manifest
from .._rundir.results import input_order, iter_pieces
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
VECTOR_SHOWN = 4
"""Values of an embedding shown, after its dimension: the rest would be noise in a table."""


@dataclass(frozen=True, slots=True)
class ShowRequest:
    """Which rows and columns of ``DIR/results`` to show."""

    out: Path
    limit: int = 20
    errors: bool = False
    columns: tuple[str, ...] | None = None

    def chosen(self, schema: Any) -> tuple[str, ...]:
        """The columns to show; ``UsageError`` naming an unknown one and those that exist in
        ``schema``, the results' (with ``parsed`` after ``--schema``, ``embedding`` for a run of
        embeddings)."""
        known = list(schema.names)
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
    if column == "embedding":  # the dimension and the first values: [1536] 0.0123, -0.0456, …
        head = ", ".join(f"{x:.4g}" for x in value[:VECTOR_SHOWN])
        return f"[{len(value)}] {head}" + (", …" if len(value) > VECTOR_SHOWN else "")
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
    from .._config.schema import OutputSchema

    parsed = OutputSchema.from_json(manifest.schema).arrow_type() if manifest.schema else None
    schema = stored_schema(request.out, parsed)
    columns = request.chosen(schema)
    shown, total = _first_rows(request, manifest, columns, schema)
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


def _first_rows(
    request: ShowRequest, manifest: Manifest, columns: tuple[str, ...], schema: Any
) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` rows in input order (errors only, if asked) and how many rows there
    are, read a part at a time: of each part, its ids and sources first; its first rows in
    input order (sorted by Arrow on ``input_order``'s key) join those kept so far if any comes
    before the last of them, and only then are their other columns read. A run's parts come
    roughly in input order, so the answers' text is read from the first few parts alone."""
    import numpy as np
    import pyarrow.compute as pc

    keys = ["id", "source", "status"]
    read = list(dict.fromkeys((*columns, *keys)))
    key = input_order(manifest.inputs)
    kept: list[tuple[Any, int, dict[str, Any]]] = []  # (key, place in the reading, row)
    total = 0
    for piece in iter_pieces(request.out, keys, schema=schema):
        t = piece.table
        rows = np.arange(t.num_rows)  # the rows of the part shown, if among the first
        if request.errors:
            errors = pc.coalesce(pc.equal(t["status"], "error"), False)
            t, rows = t.filter(errors), rows[errors.to_numpy(zero_copy_only=False)]
        if request.limit and t.num_rows:
            first = _first_in_order(t, manifest.inputs, request.limit).to_pylist()
            found = [
                (key(r), total + i, int(rows[i]))
                for i, r in zip(first, t.take(first).to_pylist(), strict=True)
            ]
            if len(kept) == request.limit:
                found = [f for f in found if (f[0], f[1]) < (kept[-1][0], kept[-1][1])]
            if found:
                more = piece.more(read).take([f[2] for f in found]).to_pylist()
                kept += [(k, place, row) for (k, place, _), row in zip(found, more, strict=True)]
                kept = heapq.nsmallest(request.limit, kept, key=lambda k: (k[0], k[1]))
        total += t.num_rows
    return [row for _, _, row in kept], total


def _first_in_order(t: Any, inputs: Sequence[str], n: int) -> Any:
    """The indices of ``t``'s first ``n`` rows in input order: ``input_order``'s key computed
    with Arrow (Python's, row by row, where Arrow cannot: a line number past 64 bits, digits
    other than 0-9)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        keys = _order_keys(t, inputs)
    except pa.ArrowInvalid:
        key = input_order(inputs)
        rows = t.select(["id", "source"]).to_pylist()
        return pa.array(sorted(range(len(rows)), key=lambda i: key(rows[i]))[:n], pa.int64())
    order = [("rank", "ascending"), ("file", "ascending"), ("line", "ascending")]
    return pc.sort_indices(keys, sort_keys=[*order, ("id", "ascending")])[:n]


def _order_keys(t: Any, inputs: Sequence[str]) -> Any:
    """``input_order``'s key of each row of ``t`` as a table (rank, file, line, id)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rank = {path: i for i, path in enumerate(inputs)}  # a path given twice: its last place
    later, last = len(inputs), len(inputs) + 1
    source = pc.coalesce(t["source"].combine_chunks(), "")
    python = pc.extract_regex(source, r"^jobs\[(?P<n>\p{Nd}+)\]$")
    # FILE:LINE or FILE row N: the separator and number that end the source (one place at most
    # can, so the first found is the one Python's greedy (.*) leaves), on one line as (.*) is
    suffix = r"(?::| row )(?P<line>\p{Nd}+)$"
    file = pc.extract_regex(source, suffix)
    is_python = pc.is_valid(python).to_numpy(zero_copy_only=False)
    one_line = pc.invert(pc.match_substring(source, "\n")).to_numpy(zero_copy_only=False)
    is_file = pc.is_valid(file).to_numpy(zero_copy_only=False) & one_line & ~is_python
    path = pc.replace_substring_regex(source, pattern=suffix, replacement="")
    known = pc.index_in(path, value_set=pa.array(list(rank), pa.string()))
    known = pc.coalesce(known, -1).to_numpy(zero_copy_only=False)
    ranks = np.append(np.array(list(rank.values()), np.int64), later)[known]  # -1: later
    number = pc.if_else(is_python, pc.struct_field(python, "n"), pc.struct_field(file, "line"))
    number = pc.cast(pc.if_else(is_python | is_file, number, "0"), pa.int64())
    return pa.table(
        {
            "rank": np.where(is_python, -1, np.where(is_file, ranks, last)),
            "file": pc.if_else(is_file, path, ""),
            "line": number,
            "id": pc.coalesce(t["id"], ""),
        }
    )


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
