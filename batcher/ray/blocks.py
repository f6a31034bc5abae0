"""A block's results in the output directory, written exactly once however often its worker dies.

A worker (``ray.worker.BlockWorker``) sends a block's jobs and writes their results with the local
run's discipline, in the same output directory (``BlockJournal``):

    journal/blk-KEY               the number N of the block's segment (KEY: a hash of its ids)
    journal/seg-N.jsonl           the block's finished jobs, a line each, as they finish
    results/part-N.parquet        the block's results, written once the block is done

Each finished job is journaled before the block returns; the part is written (temp name, fsync,
rename), then the segment and the marker are deleted. A block retried after its worker died
finds its marker: if the part exists the block was done, else the jobs in the segment are kept
and only the others are sent. Workers claim segment numbers with an exclusive create, so two
never share one; a local run's recovery (``ResultStore.open``) compacts any segment a dead
worker left, whatever its block. Each worker holds ``DIR/journal/.writers`` shared while it writes
a block, so that a driver's rerun can wait for the workers of a killed one (``wait_for_writers``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from io import FileIO
from pathlib import Path
from typing import Any

from .._core.codec import dumps
from .._core.errors import UsageError, WriteFailed
from .._core.idset import IdSet
from .._rundir.durable import fsync_dir, write_all, writing
from .._rundir.journal import PART, read_part, read_segment
from .._rundir.rows import Record
from .._rundir.store import ResultStore

__all__ = [
    "WRITERS",
    "BlockJournal",
    "block_key",
    "done_hashes",
    "recover",
    "stable_hash",
    "wait_for_writers",
    "writing_block",
]


def stable_hash(job_id: str) -> int:
    """A 64-bit hash of an id that is the same in every process (Python's ``hash`` is salted
    per process, so ``IdSet``'s own keys cannot travel to a worker)."""
    return int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8).digest(), "big")


def block_key(ids: Iterable[str]) -> str:
    """A block's name: a hash of its ids in order, the same when Ray retries the block."""
    h = hashlib.blake2b(digest_size=12)
    for i in ids:
        h.update(i.encode() + b"\0")
    return h.hexdigest()


def recover(out: Path, parsed: Any = None) -> ResultStore:
    """Before a cluster run (or after one): compact what dead workers left in the journal and
    drop the block markers, which only a running cluster's retries use. ``parsed`` is the Arrow
    type of the run's ``parsed`` column, if it has an output schema."""
    store = ResultStore(out, parsed=parsed)
    store.open()
    for marker in store.journal_dir.glob("blk-*"):
        with writing(marker):
            marker.unlink(missing_ok=True)
    return store


WRITERS = ".writers"
"""A file in ``DIR/journal`` that each worker holds a shared lock on while it writes a block."""


@contextmanager
def writing_block(out: Path) -> Iterator[None]:
    """Hold ``DIR/journal/.writers`` shared while a block is written (see ``wait_for_writers``)."""
    path = out / "journal" / WRITERS
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def wait_for_writers(out: Path, timeout: float = 120.0) -> None:
    """Wait until no worker writes a block in ``out``: the workers of a driver that was killed
    finish or die (Ray ends them) before a rerun reads what is done. The kernel drops a dead
    worker's lock with it."""
    path = out / "journal" / WRITERS
    if not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(
                        f"workers of another run still write to {out}; try again later"
                    ) from None
                time.sleep(0.2)
    finally:
        os.close(fd)


def done_hashes(out: Path) -> IdSet:
    """The ids finished in ``out``'s results, by ``stable_hash``, read part by part."""
    store = ResultStore(out)
    keys = array("Q")
    for seq in store._numbers(store.results_dir, PART):
        table, _ = read_part(store._part(seq), ["id"])
        if table is not None:
            keys.extend(stable_hash(i) for i in table.column(0).to_pylist())
    return IdSet(keys)


class BlockJournal:
    """One block's results in the output directory, written exactly once (see the module).
    ``parsed`` is the Arrow type of the run's ``parsed`` column, if it has an output schema."""

    def __init__(self, out: Path, key: str, parsed: Any = None) -> None:
        self.store = ResultStore(out, parsed=parsed)
        self.marker = self.store.journal_dir / f"blk-{key}"
        self.seq = 0
        self.rows: list[dict[str, Any]] = []
        self.complete = False
        self._file: FileIO | None = None

    def begin(self) -> list[dict[str, Any]]:
        """Open the block's segment; return the rows an earlier attempt finished already.
        ``complete`` says that attempt wrote the whole block."""
        if self.marker.exists():
            self.seq = int(self.marker.read_text())
            part = self.store._part(self.seq)
            if part.exists():
                table, _ = read_part(part)
                if table is not None:
                    self.rows = table.to_pylist()
                    self.complete = True
                    self._cleanup()
                    return self.rows
            segment = self.store._segment(self.seq)
            if segment.exists():
                self.rows = read_segment(segment)
                with writing(segment):
                    _cut_torn_line(segment)
            with writing(segment):
                self._file = FileIO(segment, "ab")
            return self.rows
        self.seq, self._file = self._claim()
        tmp = self.marker.with_name(self.marker.name + ".tmp")
        with writing(self.marker):
            tmp.write_text(f"{self.seq}\n")
            os.replace(tmp, self.marker)
        return self.rows

    def _claim(self) -> tuple[int, FileIO]:
        """A segment number no other worker holds and no part has: create ``seg-N`` exclusively.
        A segment is deleted only after its part is in place, so once the create succeeds the
        part's absence is final."""
        store = self.store
        with writing(store.journal_dir):
            store.journal_dir.mkdir(parents=True, exist_ok=True)
            store.results_dir.mkdir(parents=True, exist_ok=True)
        n = max([*store._numbers(store.results_dir, PART), 0]) + 1
        while True:
            segment = store._segment(n)
            try:
                fd = os.open(segment, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
            except FileExistsError:
                n += 1
                continue
            except OSError as e:
                raise WriteFailed.from_os_error(e, segment) from e
            if store._part(n).exists():
                os.close(fd)
                os.unlink(segment)
                n += 1
                continue
            return n, FileIO(fd, "a")

    def append(self, record: Record) -> None:
        """Journal one finished job: once this returns, the kernel has its line."""
        assert self._file is not None
        row = record.to_dict()
        try:
            write_all(self._file, dumps(row) + b"\n")
        except OSError as e:
            raise WriteFailed.from_os_error(e, self.store._segment(self.seq)) from e
        self.rows.append(row)

    def compact(self, seq: int) -> None:
        """Nothing to compact along the way (``_engine.consume.Sink``): the block's part is
        written whole by ``finish``."""

    def fit(self, record: Record) -> Record:
        """As it comes (``_engine.consume.Sink``): a cluster runs no embeddings, whose vectors'
        length is what a run's store fits."""
        return record

    def finish(self) -> list[dict[str, Any]]:
        """Write the block's part, then delete its segment and marker; return its rows."""
        import pyarrow as pa

        if self._file is not None:
            with writing(self.store._segment(self.seq)):
                self._file.close()
            self._file = None
        if self.rows:
            part = self.store._part(self.seq)
            table = pa.Table.from_pylist(self.rows, schema=self.store.schema())
            self.store._write_part(part, table)
            with writing(self.store.results_dir):
                fsync_dir(self.store.results_dir)
        self._cleanup()
        return self.rows

    def _cleanup(self) -> None:
        with writing(self.marker):
            self.store._segment(self.seq).unlink(missing_ok=True)
            self.marker.unlink(missing_ok=True)


def _cut_torn_line(segment: Path) -> None:
    """Cut a torn last line (a worker killed mid-write) so the next line starts on its own."""
    data = segment.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with segment.open("r+b") as f:
            f.truncate(end)
