"""Reading a run's results beside it: what ``batcher status`` and a run's summary count.

Unlike the store, which a run owns, these readers may run while another process writes: they move
nothing, skip a part they cannot read (and say which), and follow a segment that is compacted
while they read it into its part.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .journal import read_part, read_segment

R = TypeVar("R")

__all__ = [
    "Piece",
    "StatusRow",
    "damaged_files",
    "input_order",
    "iter_pieces",
    "iter_rows",
    "iter_status",
    "iter_tables",
    "read_costs",
    "read_results",
]

_STATUS_COLUMNS = ("id", "status", "error_kind", "finished_at")


StatusRow = tuple[str, str, str | None, float | None]


def iter_status(out: Path, *, unreadable: list[Path] | None = None) -> Iterator[StatusRow]:
    """(id, status, error_kind, finished_at) of every finished job in ``out``, parts and journal
    alike, as a reader that runs beside a run (``batcher status``) sees them.

    It moves nothing: a part that cannot be read is skipped (its jobs are not done), and appended
    to ``unreadable`` if given. A segment compacted while this reads is read from its part."""
    yield from _walk(
        out / "results",
        out / "journal",
        _part_status,
        lambda records: [
            (r["id"], r["status"], r.get("error_kind"), r.get("finished_at")) for r in records
        ],
        unreadable=unreadable,
    )


def _walk(
    parts_dir: Path,
    journal: Path,
    part_rows: Callable[[Path], list[R] | None],
    segment_rows: Callable[[list[dict[str, Any]]], Iterable[R]],
    *,
    required: tuple[str, ...] = ("id", "status"),
    unreadable: list[Path] | None = None,
) -> Iterator[R]:
    """The rows of a stream's parts, then of its segments not yet compacted, as ``part_rows`` and
    ``segment_rows`` make them (of a part's file, of a segment's records). It moves nothing: a
    part that cannot be read is skipped (and appended to ``unreadable``), and a segment
    compacted while this reads is read from its part."""
    parts = set()
    for p in sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else []:
        rows = part_rows(p)
        if rows is None:
            if unreadable is not None:
                unreadable.append(p)
            continue
        parts.add(p.stem.removeprefix("part-"))
        yield from rows
    for s in sorted(journal.glob("seg-*.jsonl")) if journal.is_dir() else []:
        number = s.stem.removeprefix("seg-")
        if number in parts:
            continue
        try:
            records = read_segment(s, required=required)
        except FileNotFoundError:  # compacted since the parts were listed
            yield from part_rows(parts_dir / f"part-{number}.parquet") or []
            continue
        yield from segment_rows(records)


def _part_status(part: Path) -> list[StatusRow] | None:
    """The status rows of ``part``: none if a run has just removed it, None if it is unreadable."""
    try:
        t, _ = read_part(part, list(_STATUS_COLUMNS))
    except FileNotFoundError:
        return []
    if t is None:
        return None
    return list(zip(*(t.column(i).to_pylist() for i in range(4)), strict=True))


def damaged_files(out: Path, *, unreadable: Iterable[Path] | None = None) -> list[Path]:
    """Files in ``out`` whose jobs count as not done: parts a run set aside in ``damaged/``, and
    parts in ``results/`` that cannot be read now (the next run sets them aside). Reads every
    part, unless ``unreadable`` gives those ``iter_status`` has just found."""
    damaged = out / "damaged"
    found = sorted(p for p in damaged.iterdir() if p.is_file()) if damaged.is_dir() else []
    if unreadable is None:
        results = out / "results"
        parts = sorted(results.glob("part-*.parquet")) if results.is_dir() else []
        unreadable = [p for p in parts if _part_status(p) is None]
    return found + sorted(unreadable)


def read_results(out: Path, *, unreadable: list[Path] | None = None) -> Counter[str]:
    """Counts of finished jobs by status and error kind: ``ok``, ``error``, ``error:<kind>``.
    Unreadable parts are skipped, and appended to ``unreadable`` if given."""
    counts: Counter[str] = Counter()
    for _, status, kind, _ in iter_status(out, unreadable=unreadable):
        counts[status] += 1
        if status == "error":
            counts[f"error:{kind or 'unknown'}"] += 1
    return counts


def _part_table(part: Path, columns: list[str]) -> tuple[Any, set[str]] | None:
    """The table of ``columns`` in ``part`` that it has, and the names it has: (None, empty) if
    a run has just removed it, None if its content cannot be read (told apart from the system's
    own errors as ``read_part`` does).

    It reads the one file (``ParquetFile``), not through ``read_table``'s datasets: a tenth of
    the time a part, and no import of pandas."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(part) as f:
            names = set(f.schema_arrow.names)
            t = f.read(columns=[c for c in columns if c in names])
    except FileNotFoundError:
        return None, set()
    except OSError as e:
        if type(e) is not OSError or e.errno is not None:
            raise
        return None
    except Exception as e:  # a footer too damaged to hold a schema
        if type(e).__name__ != "ArrowInvalid":
            raise
        return None
    return t, names


def _part_rows(part: Path, columns: list[str]) -> list[dict[str, Any]] | None:
    """``columns`` of every row of ``part`` (null where the part predates a column): none if a
    run has just removed it, None if it cannot be read."""
    read = _part_table(part, columns)
    if read is None:
        return None
    t, names = read
    if t is None:
        return []
    rows: list[dict[str, Any]] = t.to_pylist()
    missing = [c for c in columns if c not in names]
    for row in rows:
        for c in missing:
            row[c] = None
    return rows


def iter_rows(
    out: Path,
    columns: list[str],
    *,
    stream: str = "results",
    unreadable: list[Path] | None = None,
) -> Iterator[dict[str, Any]]:
    """``columns`` of every row of a stream in ``out`` (``results``, or ``attempts``), parts and
    journal alike, read beside a live run as ``iter_status`` reads (moving nothing)."""
    parts_dir, journal = _stream_dirs(out, stream)
    yield from _walk(
        parts_dir,
        journal,
        lambda p: _part_rows(p, columns),
        lambda records: [{c: r.get(c) for c in columns} for r in records],
        required=(),
        unreadable=unreadable,
    )


def iter_tables(
    out: Path,
    columns: list[str],
    *,
    stream: str = "results",
    schema: Any = None,
    unreadable: list[Path] | None = None,
) -> Iterator[Any]:
    """``columns`` of a stream in ``out`` (``results``, or ``attempts``) as Arrow tables, one a
    part and one a journal segment not yet compacted: what a reader sums a part at a time, its
    memory bounded by a part's, whatever the number of rows. Columns a part predates are null;
    ``schema`` (default the stream's, without ``parsed``) types the journal's rows as compaction
    would. Read beside a live run as ``iter_status`` reads (moving nothing)."""
    for piece in iter_pieces(out, columns, stream=stream, schema=schema, unreadable=unreadable):
        yield piece.table


@dataclass(frozen=True, slots=True)
class Piece:
    """One part, or journal segment not yet compacted, of a stream: some columns of its rows,
    and how to read others of the same rows (null if the part has gone since)."""

    table: Any
    more: Callable[[list[str]], Any]


def iter_pieces(
    out: Path,
    columns: list[str],
    *,
    stream: str = "results",
    schema: Any = None,
    unreadable: list[Path] | None = None,
) -> Iterator[Piece]:
    """``iter_tables``, each table with a way to read more of its rows' columns: a reader that
    needs the wide columns (answers, errors) of a few rows reads them only for the parts that
    hold those rows."""
    import pyarrow as pa

    from .attempts import attempt_schema
    from .rows import result_schema

    full = schema or (result_schema() if stream == "results" else attempt_schema())

    def typed(names: list[str]) -> Any:
        return pa.schema([full.field(c) for c in names])

    def part_pieces(part: Path) -> list[Piece] | None:
        read = _part_table(part, columns)
        if read is None:
            return None
        t, present = read
        if t is None:
            return []
        rows = t.num_rows
        table = _with_nulls(t, present, typed(columns))
        return [Piece(table, lambda names: _reread(part, names, rows, typed(names)))]

    def segment_pieces(records: list[dict[str, Any]]) -> list[Piece]:
        if not records:
            return []
        table = pa.Table.from_pylist(records, schema=typed(columns))
        return [Piece(table, lambda names: pa.Table.from_pylist(records, schema=typed(names)))]

    parts_dir, journal = _stream_dirs(out, stream)
    yield from _walk(
        parts_dir, journal, part_pieces, segment_pieces, required=(), unreadable=unreadable
    )


def _with_nulls(t: Any, present: set[str], wanted: Any) -> Any:
    """``t`` with a null column for each of ``wanted`` it lacks (a part written before it), in
    ``wanted``'s order."""
    import pyarrow as pa

    for field in wanted:
        if field.name not in present:
            t = t.append_column(field, pa.nulls(t.num_rows, field.type))
    return t.select(wanted.names)


def _reread(part: Path, names: list[str], rows: int, wanted: Any) -> Any:
    """``names`` of the ``rows`` rows of ``part`` read a moment ago; null if it is gone since
    (set aside by a run) or no longer reads."""
    import pyarrow as pa

    read = _part_table(part, names)
    if read is None or read[0] is None or read[0].num_rows != rows:
        return pa.table([pa.nulls(rows, f.type) for f in wanted], schema=wanted)
    return _with_nulls(read[0], read[1], wanted)


_FILE_SOURCE = re.compile(r"(.*)(?::| row )(\d+)")
_PYTHON_SOURCE = re.compile(r"jobs\[(\d+)\]")


def input_order(inputs: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[int, str, int, str]]:
    """A sort key that puts result rows (with ``source`` and ``id``) in input order: by the file's
    place among the run's ``inputs`` (``run.json``), then by line or row (``FILE:LINE``, ``FILE row
    N``); Python jobs by their index (``jobs[N]``). A row whose source names a file the run's
    inputs do not (an earlier run's) comes after, by file; one whose source says neither, last; ties
    by id. The order a run finished its jobs in is its concurrency's, not the user's."""
    rank = {path: i for i, path in enumerate(inputs)}
    later, last = len(inputs), len(inputs) + 1

    def key(row: Mapping[str, Any]) -> tuple[int, str, int, str]:
        source, job_id = row.get("source") or "", row.get("id") or ""
        if m := _PYTHON_SOURCE.fullmatch(source):
            return -1, "", int(m[1]), job_id
        if m := _FILE_SOURCE.fullmatch(source):
            return rank.get(m[1], later), m[1], int(m[2]), job_id
        return last, "", 0, job_id

    return key


def _stream_dirs(out: Path, stream: str) -> tuple[Path, Path]:
    """(parts folder, journal folder) of a stream: results keep the original layout."""
    if stream == "results":
        return out / "results", out / "journal"
    return out / stream, out / stream / "_journal"


def read_costs(out: Path) -> dict[str, float]:
    """Dollars spent per model by the results in ``out``: rows without a known price add
    nothing (``batcher status`` names those models with a cost of None elsewhere)."""
    import numpy as np
    import pyarrow.compute as pc

    costs: dict[str, float] = {}
    for t in iter_tables(out, ["model", "cost_usd"]):
        priced = t.filter(pc.is_valid(t["cost_usd"]))
        coded = pc.dictionary_encode(priced["model"].combine_chunks(), null_encoding="encode")
        which = coded.indices.to_numpy(zero_copy_only=False)
        cost = priced["cost_usd"].to_numpy()
        for i, model in enumerate(coded.dictionary.to_pylist()):
            key = model or "?"
            # a running sum in row order (add.accumulate), as the run's own sums add them
            row_costs = np.concatenate(([costs.get(key, 0.0)], cost[which == i]))
            costs[key] = float(np.add.accumulate(row_costs)[-1])
    return costs
