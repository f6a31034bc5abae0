"""Reading a run's results beside it: what ``batcher status`` and a run's summary count.

Unlike the store, which a run owns, these readers may run while another process writes: they move
nothing, skip a part they cannot read (and say which), and follow a segment that is compacted
while they read it into its part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._store import read_part, read_segment

__all__ = ["StatusRow", "damaged_files", "iter_status", "read_results"]

_STATUS_COLUMNS = ("id", "status", "error_kind", "finished_at")


StatusRow = tuple[str, str, str | None, float | None]


def iter_status(out: Path, *, unreadable: list[Path] | None = None) -> Iterator[StatusRow]:
    """(id, status, error_kind, finished_at) of every finished job in ``out``, parts and journal
    alike, as a reader that runs beside a run (``batcher status``) sees them.

    It moves nothing: a part that cannot be read is skipped (its jobs are not done), and appended
    to ``unreadable`` if given. A segment compacted while this reads is read from its part."""
    results, journal = out / "results", out / "journal"
    parts = set()
    for p in sorted(results.glob("part-*.parquet")) if results.is_dir() else []:
        rows = _part_status(p)
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
            records = read_segment(s)
        except FileNotFoundError:  # compacted since the parts were listed
            yield from _part_status(results / f"part-{number}.parquet") or []
            continue
        for r in records:
            yield r["id"], r["status"], r.get("error_kind"), r.get("finished_at")


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
