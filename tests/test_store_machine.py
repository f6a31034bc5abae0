"""A hypothesis state machine over the journal and its compaction, with crashes anywhere.

Whatever the interleaving of appends, rotations, compactions and crashes (including a crash
half-way through writing a part, and one between renaming a part and deleting its segment), a
reopened store holds every finished record exactly once, with its own text.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from batcher._store import Record, ResultStore, read_results


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


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.store = ResultStore(self.dir, segment_size=4)
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
            ready = self.store.append(record)
            self.finished.add(record.id)
            if ready is not None:
                self.closed.append(ready)

    @rule()
    def rotate(self) -> None:
        seq = self.store.rotate()
        if seq is not None:
            self.closed.append(seq)

    @precondition(lambda self: self.closed)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.closed))
        self.store.compact(seq)
        self.closed.remove(seq)

    @precondition(lambda self: self.closed)
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
        """kill -9: no close(); the open segment may end in a torn line."""
        if self.store._file is not None:
            self.store._file.write(garbage.replace(b"\n", b""))
            self.store._file.flush()
            self.store._file.close()
            self.store._file = None
        self.store = ResultStore(self.dir, segment_size=4)
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
