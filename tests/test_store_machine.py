"""A hypothesis state machine over the journal and its compaction, with crashes anywhere.

Whatever the interleaving of appends, rotations, compactions and crashes (including a crash
half-way through writing a part, and one between renaming a part and deleting its segment), and of
a disk that fills up (appends and compactions fail, the cut of a torn line may fail too), a
reopened store holds every finished record exactly once, with its own text. A record counts as
finished once ``append`` returned; one whose append raised ``WriteFailed`` must not appear.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from unittest import mock

import pyarrow.parquet as pq
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from batcher._core.errors import WriteFailed
from batcher._rundir.results import read_results
from batcher._rundir.rows import Record
from batcher._rundir.store import ResultStore

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def _record(i: int) -> Record:
    return Record(
        id=f"job-{i}",
        status="ok" if i % 3 else "error",
        text=f"text {i}",
        input_tokens=i,
        output_tokens=1,
        attempts=1,
        error=None,
        error_kind=None,
        model="m",
        finish_reason="stop",
        latency_ms=1.0,
        response="{}",
        source=f"f:{i}",
    )


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@dataclass
class Disk:
    """How much room is left: None for plenty; else writes go short at the limit, then fail."""

    space: int | None = None
    cut_fails: bool = False


class _SegmentFile(FileIO):
    disk: Disk

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        if self.disk.space is None:
            return super().write(view)
        if self.disk.space == 0:
            raise _no_space()
        n = super().write(view[: self.disk.space])
        self.disk.space -= n
        return n

    def truncate(self, size: int | None = None) -> int:
        if self.disk.cut_fails:
            raise OSError(errno.EIO, "Input/output error")
        return super().truncate(size)


class _Store(ResultStore):
    """A store on ``disk``: its segments and its parts run out of room with it."""

    def __init__(self, out: Path, disk: Disk) -> None:
        super().__init__(out, segment_size=4)
        self.disk = disk

    def _open_segment(self, path: Path) -> FileIO:
        file = _SegmentFile(path, "ab")
        file.disk = self.disk
        return file

    def _write_part(self, part: Path, table: Any) -> None:
        if self.disk.space is None:
            return super()._write_part(part, table)

        def half_a_part(table: Any, where: IO[bytes], **kwargs: Any) -> None:
            where.write(b"PAR1 half a part")
            raise _no_space()

        with mock.patch.object(pq, "write_table", half_a_part):
            super()._write_part(part, table)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.disk = Disk()
        self.store = _Store(self.dir, self.disk)
        self.store.open()
        self.finished: set[str] = set()
        self.closed: list[int] = []
        self.next = 0

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(n=st.integers(1, 6))
    def append(self, n: int) -> None:
        for _ in range(n):
            record = _record(self.next)
            self.next += 1
            try:
                ready = self.store.append(record)
            except WriteFailed:
                assert self.disk.space is not None
                continue
            self.finished.add(record.id)
            if ready is not None:
                self.closed.append(ready)

    @rule(space=st.integers(0, 400), cut_fails=st.booleans())
    def disk_fills(self, space: int, cut_fails: bool) -> None:
        """Only ``space`` bytes are left (a record's line is about 300)."""
        self.disk.space, self.disk.cut_fails = space, cut_fails

    @rule()
    def space_freed(self) -> None:
        self.disk.space, self.disk.cut_fails = None, False

    @rule()
    def rotate(self) -> None:
        seq = self.store.rotate()
        if seq is not None:
            self.closed.append(seq)

    @precondition(lambda self: self.closed)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.closed))
        try:
            self.store.compact(seq)
        except WriteFailed:
            assert self.disk.space is not None
            assert self.store._segment(seq).exists()
            return
        self.closed.remove(seq)

    @precondition(lambda self: self.closed and self.disk.space is None)
    @rule(data=st.data(), torn=st.booleans(), renamed=st.booleans())
    def crash_while_compacting(self, data: st.DataObject, torn: bool, renamed: bool) -> None:
        """Die half-way through a compaction: a temp part, or a part whose segment remains."""
        seq = data.draw(st.sampled_from(self.closed))
        part = self.store._part(seq)
        if renamed:
            segment = self.store._segment(seq)
            kept = segment.read_bytes()
            self.store.compact(seq)
            segment.write_bytes(kept)
        elif torn:
            part.with_name(part.name + ".tmp").write_bytes(b"PAR1 half a part")
        self.crash()

    @rule(garbage=st.binary(max_size=20))
    def crash(self, garbage: bytes = b"") -> None:
        """kill -9: no close(); the open segment may end in a torn line. The next run starts
        once the disk has room again."""
        self.space_freed()
        if self.store._file is not None:
            self.store._file.write(garbage.replace(b"\n", b""))
            self.store._file.flush()
            self.store._file.close()
            self.store._file = None
        self.store = _Store(self.dir, self.disk)
        self.store.open()
        self.closed = []

    @invariant()
    def every_finished_record_once(self) -> None:
        counts = read_results(self.dir)
        assert counts["ok"] + counts["error"] == len(self.finished)

    def teardown_check(self) -> None:
        self.crash()
        self.store.close()
        rows = pq.read_table(self.dir / "results").to_pylist() if self.finished else []
        assert sorted(r["id"] for r in rows) == sorted(self.finished)
        for r in rows:
            assert r["text"] == f"text {r['id'].removeprefix('job-')}"


class CheckedStoreMachine(StoreMachine):
    def teardown(self) -> None:
        try:
            self.teardown_check()
        finally:
            super().teardown()


TestStore = CheckedStoreMachine.TestCase
TestStore.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
