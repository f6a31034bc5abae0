"""A stream's journal (results, attempts): appended durably, compacted into Parquet parts.

Layout under the output directory::

    journal/seg-000007.jsonl      finished results, one JSON line each, flushed per result
    results/part-000006.parquet   a compacted segment (same number), written to a temp name first
    damaged/part-000003.parquet   a part that could not be read, set aside; its jobs are sent again

A segment is compacted into the part of the same number and then deleted. On open, a segment whose
part exists is a leftover of a crash between those two steps and is deleted; any other segment is
compacted. A torn last line (killed mid-write) is dropped: that job was not finished.

A part is only ever written whole, so one that cannot be read was damaged from outside (most often
by an interrupted copy of the directory). A run sets it aside in ``damaged/``, with a warning, and
its jobs count as not done; ``batcher status``, which runs beside a live run, only reports it.

A failed write raises ``WriteFailed`` and loses nothing written before: a failed append is cut back
off its segment (a line counts only with its newline) and that segment is closed, so the next
append starts a new one; a segment is deleted only once its part is durable.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from contextlib import suppress
from io import FileIO
from pathlib import Path
from typing import Any

from .._core.codec import dumps, loads
from .._core.errors import WriteFailed
from .durable import fsync_dir, write_all, writing

__all__ = ["PART", "JournalStore", "read_part", "read_segment"]

log = logging.getLogger("batcher")

_SEG = re.compile(r"seg-(\d{6})\.jsonl$")
PART = re.compile(r"part-(\d{6})\.parquet$")


def read_segment(path: Path, required: tuple[str, ...] = ("id", "status")) -> list[dict[str, Any]]:
    """The complete records of a segment (objects with a string in each ``required`` field); any
    other line is skipped and the rest kept. A line is complete only with its newline: a process
    killed mid-write leaves a torn last line without one, and that job had not finished."""
    rows = []
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                continue
            try:
                row = loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and all(isinstance(row.get(k), str) for k in required):
                rows.append(row)
    return rows


SLICE = 500
"""Rows converted to Arrow at a time in a compaction: converting Python rows holds the
interpreter's lock for the whole call (5,000 rows: 30-50 ms, a stall of the event loop beside
it); between slices the loop gets its turn."""


def _table(pa: Any, rows: list[dict[str, Any]], schema: Any) -> Any:
    """``rows`` as an Arrow table of ``schema``, converted ``SLICE`` rows at a time."""
    batches = [
        pa.RecordBatch.from_pylist(rows[i : i + SLICE], schema=schema)
        for i in range(0, len(rows), SLICE)
    ]
    return pa.Table.from_batches(batches, schema=schema)


def read_part(path: Path, columns: list[str] | None = None) -> tuple[Any, str | None]:
    """The table in part ``path`` and None, or None and why its content cannot be read.

    pyarrow tells the two kinds of failure apart: damaged content raises ``ArrowInvalid`` or an
    ``OSError`` without an errno (a failed decompression); the system's own errors (a missing
    file, permission denied, EIO) carry an errno, and are raised as they are.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns), None
    except (pa.ArrowInvalid, OSError) as e:
        if isinstance(e, OSError) and (type(e) is not OSError or e.errno is not None):
            raise
        why = str(e) or type(e).__name__
        return None, why.rpartition(f"{path}': ")[2]  # without "Could not open ... '<path>': "


class JournalStore:
    """Durable rows of one stream (results, attempts): a journal compacted into Parquet parts.

    ``schema`` makes the stream's Arrow schema; ``required`` names the string fields without
    which a journal line is not a row (a line torn or damaged)."""

    def __init__(
        self,
        journal_dir: Path,
        results_dir: Path,
        damaged_dir: Path,
        schema: Callable[[], Any],
        *,
        required: tuple[str, ...],
        segment_size: int = 5000,
    ) -> None:
        self.journal_dir = journal_dir
        self.results_dir = results_dir
        """Where the stream's parts go (``results/`` for results)."""
        self.damaged_dir = damaged_dir
        self.schema = schema
        self.required = required
        self.segment_size = segment_size
        self._file: FileIO | None = None
        self._compacting = threading.Lock()  # compactions run on worker threads
        self._seq = 0
        self._count = 0
        self._size = 0  # bytes in the open segment, all of them complete lines
        # The rows of the open segment, and of closed ones not yet compacted: compaction writes
        # them from here instead of reading the journal back (recovery still reads it).
        self._rows: list[dict[str, Any]] = []
        self._closed: dict[int, list[dict[str, Any]]] = {}
        # Between ``hold`` and ``flush``: the lines appended, not yet written, and their rows.
        self._held: bytearray | None = None
        self._held_rows: list[dict[str, Any]] = []

    def _segment(self, seq: int) -> Path:
        return self.journal_dir / f"seg-{seq:06d}.jsonl"

    def _part(self, seq: int) -> Path:
        return self.results_dir / f"part-{seq:06d}.parquet"

    def _numbers(self, folder: Path, pattern: re.Pattern[str]) -> list[int]:
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))

    def open(self) -> None:
        """Recover what a crash left: compact every segment that has no part yet.

        A segment whose part exists is deleted only if that part reads whole; a damaged one is
        set aside and the segment compacted again."""
        for folder in (self.journal_dir, self.results_dir):
            with writing(folder):
                folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.results_dir.glob("*.tmp"):
            with writing(tmp):
                tmp.unlink()
        for seq in self._numbers(self.journal_dir, _SEG):
            if self._part(seq).exists():
                self._read(self._part(seq))
            self.compact(seq)
        numbers = self._numbers(self.results_dir, PART) + self._numbers(self.journal_dir, _SEG)
        self._seq = max(numbers, default=0)

    def _read(self, part: Path, columns: list[str] | None = None) -> Any:
        """The table in ``part``, or None if it cannot be read, in which case it is set aside."""
        table, why = read_part(part, columns)
        if table is None:
            self._set_aside(part, why)
        return table

    def _set_aside(self, part: Path, why: str | None) -> None:
        """Move a damaged part into ``damaged/`` under its own name (or a numbered one, if that
        name is taken), so its rows no longer count and its bytes are still there to look at."""
        target = self.damaged_dir / part.name
        n = 0
        while target.exists():
            n += 1
            target = self.damaged_dir / f"{part.stem}-{n}{part.suffix}"
        with writing(target):
            self.damaged_dir.mkdir(exist_ok=True)
            os.rename(part, target)
            fsync_dir(self.damaged_dir)
            fsync_dir(part.parent)
        log.warning(
            "part %s cannot be read (%s); moved it to %s: its jobs will be sent again",
            part,
            why,
            target,
        )

    def _write_part(self, part: Path, table: Any) -> None:
        """Write ``part`` whole or not at all: a temp name, fsync, then rename over ``part``."""
        import pyarrow.parquet as pq

        tmp = part.with_name(part.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, part)
        except OSError as e:
            with suppress(OSError):  # else open() deletes it
                tmp.unlink(missing_ok=True)
            raise WriteFailed.from_os_error(e, part) from e

    def append_row(self, row: dict[str, Any]) -> int | None:
        """Write one row durably; return a segment number that is now ready to compact.

        Raises ``WriteFailed`` if the line could not be written whole; the row then counts as not
        written, and every line appended before is kept."""
        line = dumps(row) + b"\n"
        if self._held is not None:
            self._held += line
            self._held_rows.append(row)
            return None
        return self._write_lines(line, [row])

    def hold(self) -> None:
        """Keep the rows appended from now on until ``flush``, which writes them in one go: a
        batch's answers journaled in bulk (a write a line costs more than the rest of a line's
        journaling). A row held counts as written only once ``flush`` returns."""
        if self._held is None:
            self._held, self._held_rows = bytearray(), []

    def flush(self) -> int | None:
        """Write the rows held since ``hold`` in one write and stop holding; return a segment
        number that is now ready to compact. Raises ``WriteFailed`` as ``append_row`` does: the
        rows held then count as not written, and every line written before is kept."""
        held, rows = self._held, self._held_rows
        self._held, self._held_rows = None, []
        if not held:
            return None
        return self._write_lines(bytes(held), rows)

    def _write_lines(self, lines: bytes, rows: list[dict[str, Any]]) -> int | None:
        """Append whole ``lines`` (of ``rows``) to the open segment, opening one if none is."""
        if self._file is None:
            self._seq += 1
            self._count = self._size = 0
            self._rows = []
            with writing(self._segment(self._seq)):
                self._file = self._open_segment(self._segment(self._seq))
        try:
            write_all(self._file, lines)
        except OSError as e:
            self._abandon()
            raise WriteFailed.from_os_error(e, self._segment(self._seq)) from e
        self._size += len(lines)
        self._rows += rows
        self._count += len(rows)
        if self._count >= self.segment_size:
            return self.rotate()
        return None

    def _open_segment(self, path: Path) -> FileIO:
        """A new segment, unbuffered: once ``write`` returns, the kernel has the line."""
        return FileIO(path, "ab")

    def _abandon(self) -> None:
        """After a failed append: cut the torn line off and close the segment, so that nothing is
        ever written after a torn line. Should the cut fail too, the torn line is that segment's
        last, and reading drops it."""
        file, self._file = self._file, None
        if file is None:
            return
        self._closed[self._seq], self._rows = self._rows, []
        with suppress(OSError):
            file.truncate(self._size)
        with suppress(OSError):
            file.close()

    def rotate(self) -> int | None:
        """Close the current segment; return its number, or None if none was open."""
        file, self._file = self._file, None
        if file is None:
            return None
        self._closed[self._seq], self._rows = self._rows, []
        with writing(self._segment(self._seq)):
            file.close()
        return self._seq

    def compact(self, seq: int) -> None:
        """Write segment ``seq`` as part ``seq`` (temp name, fsync, rename), then delete it."""
        with self._compacting:
            self._compact(seq)

    def _compact(self, seq: int) -> None:
        import pyarrow as pa

        segment, part = self._segment(seq), self._part(seq)
        kept = self._closed.pop(seq, None)
        if not part.exists():
            rows = kept if kept is not None else read_segment(segment, self.required)
            if rows and not self._typed():
                self._closed[seq] = rows  # kept in the journal until its type is known
                return
            if rows:
                self._write_part(part, _table(pa, rows, self.schema()))
                with writing(self.results_dir):
                    fsync_dir(self.results_dir)
        with writing(segment):
            segment.unlink(missing_ok=True)

    def _typed(self) -> bool:
        """Whether the stream's schema is known yet (a part is written only in it)."""
        return True

    def close(self) -> None:
        """Compact everything still in the journal. Raises ``WriteFailed`` if a compaction fails;
        what is not compacted stays in the journal, for the next ``open``."""
        self.rotate()
        for seq in self._numbers(self.journal_dir, _SEG):
            self.compact(seq)
