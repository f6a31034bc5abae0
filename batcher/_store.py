"""The results store: an append-only journal, compacted into Parquet parts.

Layout under the output directory::

    journal/seg-000007.jsonl      finished results, one JSON line each, flushed per result
    results/part-000006.parquet   a compacted segment (same number), written to a temp name first

A segment is compacted into the part of the same number and then deleted. On open, a segment whose
part exists is a leftover of a crash between those two steps and is deleted; any other segment is
compacted. A torn last line (killed mid-write) is dropped: that job was not finished.
"""

from __future__ import annotations

import json
import os
import re
import threading
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ._idset import IdMap, id_hash

__all__ = ["Record", "ResultStore", "read_results"]

_SEG = re.compile(r"seg-(\d{6})\.jsonl$")
_PART = re.compile(r"part-(\d{6})\.parquet$")


@dataclass(frozen=True, slots=True)
class Record:
    """One finished job, as it is written to the journal and to Parquet."""

    id: str
    status: str
    text: str | None
    input_tokens: int | None
    output_tokens: int | None
    attempts: int
    error: str | None
    error_kind: str | None
    model: str | None
    finish_reason: str | None
    latency_ms: float | None
    response: str | None
    source: str | None
    fingerprint: str | None = None
    """A hash of the request sent, to notice a job whose input changed since it finished."""
    finished_at: float | None = None
    """Wall-clock time the job finished, for the pace ``batcher status`` reports."""


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("status", pa.string()),
            ("text", pa.string()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("attempts", pa.int32()),
            ("error", pa.string()),
            ("error_kind", pa.string()),
            ("model", pa.string()),
            ("finish_reason", pa.string()),
            ("latency_ms", pa.float64()),
            ("response", pa.string()),
            ("source", pa.string()),
            ("fingerprint", pa.string()),
            ("finished_at", pa.float64()),
        ]
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_segment(path: Path) -> list[dict[str, Any]]:
    """The complete records of a segment. A line is complete only with its newline: a process
    killed mid-write leaves a torn last line without one, and that job had not finished."""
    rows = []
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict) and "id" in row:
                rows.append(row)
    return rows


class ResultStore:
    """Durable results for one output directory."""

    def __init__(self, out: Path, *, segment_size: int = 5000) -> None:
        self.out = out
        self.journal_dir = out / "journal"
        self.results_dir = out / "results"
        self.segment_size = segment_size
        self._file: IO[bytes] | None = None
        self._compacting = threading.Lock()  # compactions run on worker threads
        self._seq = 0
        self._count = 0

    def _segment(self, seq: int) -> Path:
        return self.journal_dir / f"seg-{seq:06d}.jsonl"

    def _part(self, seq: int) -> Path:
        return self.results_dir / f"part-{seq:06d}.parquet"

    def _numbers(self, folder: Path, pattern: re.Pattern[str]) -> list[int]:
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))

    def open(self) -> None:
        """Recover what a crash left: compact every segment that has no part yet."""
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.results_dir.glob("*.tmp"):
            tmp.unlink()
        for seq in self._numbers(self.journal_dir, _SEG):
            self.compact(seq)
        numbers = self._numbers(self.results_dir, _PART) + self._numbers(self.journal_dir, _SEG)
        self._seq = max(numbers, default=0)

    def finished(self) -> tuple[IdMap, list[str]]:
        """Every finished job as a compact map id -> request fingerprint, and the ids of those
        that ended in error. Read part by part, so memory stays small for millions of rows."""
        import pyarrow.parquet as pq

        keys, values = array("Q"), array("Q")
        errors: list[str] = []
        for seq in self._numbers(self.results_dir, _PART):
            t = pq.read_table(self._part(seq), columns=["id", "status", "fingerprint"])
            ids, statuses, prints = (t.column(i).to_pylist() for i in range(3))
            for job_id, status, fp in zip(ids, statuses, prints, strict=True):
                keys.append(id_hash(job_id))
                values.append(int(fp, 16) if fp else 0)
                if status == "error":
                    errors.append(job_id)
        return IdMap(keys, values), errors

    def remove(self, ids: set[str]) -> int:
        """Drop the rows of ``ids`` from the parts (to send those jobs again); return how many.

        Each part is rewritten without them under a temporary name and renamed over itself, so a
        crash leaves every row either kept or dropped, never both nor half a part.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if not ids:
            return 0
        wanted = pa.array(sorted(ids), pa.string())
        removed = 0
        for seq in self._numbers(self.results_dir, _PART):
            part = self._part(seq)
            table = pq.read_table(part)
            keep = pc.invert(pc.is_in(table.column("id"), value_set=wanted))
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows:
                continue
            removed += table.num_rows - kept.num_rows
            if kept.num_rows == 0:
                part.unlink()
            else:
                self._write_part(part, kept)
        _fsync_dir(self.results_dir)
        return removed

    def _write_part(self, part: Path, table: Any) -> None:
        import pyarrow.parquet as pq

        tmp = part.with_name(part.name + ".tmp")
        with tmp.open("wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, part)

    def append(self, record: Record) -> int | None:
        """Write one finished job durably; return a segment number that is now ready to compact."""
        if self._file is None:
            self._seq += 1
            self._count = 0
            self._file = self._segment(self._seq).open("ab")
        self._file.write(json.dumps(asdict(record), ensure_ascii=False).encode() + b"\n")
        self._file.flush()
        self._count += 1
        if self._count >= self.segment_size:
            return self.rotate()
        return None

    def rotate(self) -> int | None:
        """Close the current segment; return its number, or None if none was open."""
        if self._file is None:
            return None
        self._file.close()
        self._file = None
        return self._seq

    def compact(self, seq: int) -> None:
        """Write segment ``seq`` as part ``seq`` (temp name, fsync, rename), then delete it."""
        with self._compacting:
            self._compact(seq)

    def _compact(self, seq: int) -> None:
        import pyarrow as pa

        segment, part = self._segment(seq), self._part(seq)
        if not part.exists():
            rows = _read_segment(segment)
            if rows:
                self._write_part(part, pa.Table.from_pylist(rows, schema=_schema()))
                _fsync_dir(self.results_dir)
        segment.unlink(missing_ok=True)

    def close(self) -> None:
        """Compact everything still in the journal."""
        self.rotate()
        for seq in self._numbers(self.journal_dir, _SEG):
            self.compact(seq)


_STATUS_COLUMNS = ("id", "status", "error_kind", "finished_at")


def iter_status(out: Path) -> Iterator[tuple[str, str, str | None, float | None]]:
    """(id, status, error_kind, finished_at) of every finished job in ``out``, parts and journal
    alike, as a reader that runs beside a run (``batcher status``) sees them."""
    import pyarrow.parquet as pq

    results, journal = out / "results", out / "journal"
    parts = set()
    if results.is_dir():
        for p in sorted(results.glob("part-*.parquet")):
            parts.add(p.stem.removeprefix("part-"))
            t = pq.read_table(p, columns=list(_STATUS_COLUMNS))
            yield from zip(*(t.column(i).to_pylist() for i in range(4)), strict=True)
    if journal.is_dir():
        for s in sorted(journal.glob("seg-*.jsonl")):
            if s.stem.removeprefix("seg-") in parts:
                continue
            for r in _read_segment(s):
                yield r["id"], r["status"], r.get("error_kind"), r.get("finished_at")


def read_results(out: Path) -> Counter[str]:
    """Counts of finished jobs by status and error kind: ``ok``, ``error``, ``error:<kind>``."""
    counts: Counter[str] = Counter()
    for _, status, kind, _ in iter_status(out):
        counts[status] += 1
        if status == "error":
            counts[f"error:{kind or 'unknown'}"] += 1
    return counts
