"""The results store: durable appends, compaction into parts, recovery from a crash."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from io import FileIO
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batcher._core.errors import WriteFailed
from batcher._rundir.results import read_results
from batcher._rundir.store import ResultStore
from tests.helpers import make_record

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def test_segments_rotate_and_compact_into_parts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, segment_size=3)
    store.open()
    ready = [store.append(make_record(i)) for i in range(7)]
    assert ready == [None, None, 1, None, None, 2, None]
    store.compact(1)
    store.close()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "part-000001.parquet",
        "part-000002.parquet",
        "part-000003.parquet",
    ]
    assert list((tmp_path / "journal").iterdir()) == []
    rows = pq.read_table(tmp_path / "results").to_pylist()
    assert sorted(r["id"] for r in rows) == [f"j{i}" for i in range(7)]
    assert {r["text"] for r in rows} == {f"t{i}" for i in range(7)}


def test_journal_survives_a_crash_and_a_torn_line(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.open()
    for i in range(4):
        store.append(make_record(i, "error" if i == 3 else "ok"))
    store.rotate()  # the process dies here, before any compaction; the last line is torn
    with (tmp_path / "journal" / "seg-000001.jsonl").open("ab") as f:
        f.write(json.dumps({"id": "half"}).encode()[:7])
    assert read_results(tmp_path) == {"ok": 3, "error": 1, "error:permanent": 1}

    again = ResultStore(tmp_path)
    again.open()
    finished, errors = again.finished()
    assert len(finished) == 4 and errors == ["j3"]
    assert all(finished.get(f"j{i}") == 0 for i in range(4))  # no fingerprints in these rows
    again.append(make_record(9))
    again.close()
    ids = pq.read_table(tmp_path / "results").column("id").to_pylist()
    assert sorted(ids) == ["j0", "j1", "j2", "j3", "j9"]


def test_a_segment_already_compacted_is_not_counted_twice(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.open()
    store.append(make_record(1))
    seq = store.rotate()
    assert seq == 1
    segment = tmp_path / "journal" / "seg-000001.jsonl"
    kept = segment.read_bytes()
    store.compact(1)
    segment.write_bytes(kept)  # a crash between the rename of the part and the segment's deletion
    (tmp_path / "results" / "part-000002.parquet.tmp").write_bytes(b"half a part")
    assert read_results(tmp_path)["ok"] == 1
    again = ResultStore(tmp_path)
    again.open()
    assert not segment.exists()
    assert not list((tmp_path / "results").glob("*.tmp"))
    assert pq.read_table(tmp_path / "results").num_rows == 1


def test_id_sets_are_compact_and_exact_for_the_ids_they_hold() -> None:
    from array import array

    from batcher._core.idset import IdMap, IdSet, duplicates, id_hash

    ids = [f"job-{i}" for i in range(10_000)]
    s = IdSet.of(ids[::2])
    assert len(s) == 5_000
    assert all(i in s for i in ids[::2]) and not any(i in s for i in ids[1::2])
    m = IdMap(array("Q", map(id_hash, ids)), array("Q", range(len(ids))))
    assert m.get("job-77") == 77 and m.get("nope") is None
    assert duplicates(array("Q", [3, 1, 3, 2, 1])) == {1, 3}


ENOSPC = OSError(errno.ENOSPC, "No space left on device")


class _FillingFile(FileIO):
    """A segment on a disk with ``space`` bytes left: writes go short, then fail with ENOSPC."""

    space: int | None = None
    truncate_fails = False

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        if self.space is None:
            return super().write(view)
        if self.space == 0:
            raise ENOSPC
        n = super().write(view[: self.space])
        type(self).space = self.space - n
        return n

    def truncate(self, size: int | None = None) -> int:
        if self.truncate_fails:
            raise OSError(errno.EIO, "Input/output error")
        return super().truncate(size)


class _FillingStore(ResultStore):
    def _open_segment(self, path: Path) -> FileIO:
        return _FillingFile(path, "ab")


def _recovered(out: Path) -> list[str]:
    """The ids a fresh store on ``out`` holds once it has recovered, in a sorted list."""
    store = ResultStore(out)
    store.open()
    store.close()
    return sorted(pq.read_table(out / "results").column("id").to_pylist())


@pytest.mark.parametrize("truncate_fails", [False, True])
def test_an_append_on_a_full_disk_fails_and_loses_nothing_written_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truncate_fails: bool
) -> None:
    monkeypatch.setattr(_FillingFile, "truncate_fails", truncate_fails)
    store = _FillingStore(tmp_path)
    store.open()
    for i in range(3):
        store.append(make_record(i))
    segment = tmp_path / "journal" / "seg-000001.jsonl"
    before = segment.read_bytes()
    monkeypatch.setattr(_FillingFile, "space", 40)  # the next line is longer than that
    with pytest.raises(WriteFailed) as caught:
        store.append(make_record(3))
    assert (caught.value.path, caught.value.reason) == (segment, "No space left on device")
    assert "free some space, then rerun the same command" in str(caught.value)
    torn = segment.read_bytes()  # the line cut back off, or else left torn at the end
    assert torn.startswith(before)
    assert len(torn) == len(before) + (40 if truncate_fails else 0)
    assert read_results(tmp_path)["ok"] == 3
    monkeypatch.setattr(_FillingFile, "space", None)  # space was freed
    store.append(make_record(4))  # into a new segment: nothing is ever written after a torn line
    assert (tmp_path / "journal" / "seg-000002.jsonl").exists()
    assert _recovered(tmp_path) == ["j0", "j1", "j2", "j4"]


def test_held_rows_are_written_in_one_go_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _FillingStore(tmp_path, segment_size=4)
    store.open()
    store.append(make_record(0))
    segment = tmp_path / "journal" / "seg-000001.jsonl"
    store.hold()
    for i in range(1, 4):
        assert store.append(make_record(i)) is None
    assert segment.read_bytes().count(b"\n") == 1  # held: nothing written yet
    assert store.flush() == 1  # three lines in one write fill the segment
    assert segment.read_bytes().count(b"\n") == 4
    store.hold()
    for i in range(4, 7):
        store.append(make_record(i))
    monkeypatch.setattr(_FillingFile, "space", 40)  # the group is longer than that
    with pytest.raises(WriteFailed):
        store.flush()
    monkeypatch.setattr(_FillingFile, "space", None)
    store.append(make_record(7))  # not held any more
    store.compact(1)
    assert _recovered(tmp_path) == ["j0", "j1", "j2", "j3", "j7"]


@pytest.mark.parametrize("fails", ["write_table", "fsync", "replace"])
def test_a_compaction_that_fails_leaves_its_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    store = ResultStore(tmp_path, segment_size=2)
    store.open()
    store.append(make_record(0))
    seq = store.append(make_record(1))
    assert seq == 1
    segment = tmp_path / "journal" / "seg-000001.jsonl"
    kept = segment.read_bytes()

    def no_space(*args: object, **kwargs: object) -> None:
        raise ENOSPC

    if fails == "write_table":
        real = pq.write_table

        def half_then_no_space(table: object, where: IO[bytes], **kwargs: object) -> None:
            where.write(b"PAR1 half a part")
            raise ENOSPC

        monkeypatch.setattr(pq, "write_table", half_then_no_space)
    else:
        monkeypatch.setattr(os, fails, no_space)
    with pytest.raises(WriteFailed) as caught:
        store.compact(seq)
    assert caught.value.path == tmp_path / "results" / "part-000001.parquet"
    assert caught.value.reason == "No space left on device"
    assert segment.read_bytes() == kept
    assert list((tmp_path / "results").iterdir()) == []  # no part, no temp part
    monkeypatch.undo()
    if fails == "write_table":
        assert pq.write_table is real
    store.append(make_record(2))
    assert _recovered(tmp_path) == ["j0", "j1", "j2"]


def test_remove_that_fails_keeps_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    store.open()
    for i in range(3):
        store.append(make_record(i))
    store.close()
    part = tmp_path / "results" / "part-000001.parquet"
    kept = part.read_bytes()

    def no_space(*args: object, **kwargs: object) -> None:
        raise ENOSPC

    monkeypatch.setattr(pq, "write_table", no_space)
    with pytest.raises(WriteFailed, match=r"part-000001\.parquet: No space left on device"):
        store.remove({"j1"})
    assert part.read_bytes() == kept
    assert [p.name for p in (tmp_path / "results").iterdir()] == [part.name]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that really fills. Mounting needs root (CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and the mount command")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)


@pytest.mark.parametrize(
    ("segment_size", "fails_in"), [(10, "results"), (1000, "journal")], ids=["compact", "append"]
)
def test_a_disk_that_really_fills_loses_nothing(
    tiny_fs: Path, segment_size: int, fails_in: str
) -> None:
    out = tiny_fs / "out"
    store = ResultStore(out, segment_size=segment_size)
    store.open()
    written: list[str] = []
    failed: WriteFailed | None = None
    for i in range(200):  # ~2 KiB a result: the disk is full long before the end
        record = dataclasses.replace(make_record(i), text=os.urandom(1024).hex())
        try:
            ready = store.append(record)
            written.append(record.id)
            if ready is not None:
                store.compact(ready)
        except WriteFailed as e:
            failed = e
            break
    assert failed is not None and failed.errno == errno.ENOSPC
    assert failed.path.parent == out / fails_in and failed.reason == "No space left on device"
    assert len(written) > 10
    with pytest.raises(WriteFailed):
        store.close()  # the run ends: compacting what is left fails too, and keeps it
    _remount(tiny_fs, "size=4m")  # the user frees space, and runs the same command again
    assert _recovered(out) == sorted(written)
    _remount(tiny_fs, "ro")
    store = ResultStore(out)
    with pytest.raises(WriteFailed) as caught:
        store.open()
        store.append(make_record(999))
    assert caught.value.errno == errno.EROFS
    assert "make the file system writable" in str(caught.value)


def test_status_reads_a_segment_compacted_while_it_reads_from_its_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batcher status`` lists the parts, then the run compacts a segment and deletes it."""
    from batcher._rundir import results as _results

    store = ResultStore(tmp_path)
    store.open()
    for i in range(3):
        store.append(make_record(i))
    store.rotate()
    read_segment = _results.read_segment
    compacted: list[Path] = []

    def compacted_first(path: Path, **kwargs: Any) -> list[dict[str, object]]:
        if not compacted:
            compacted.append(path)
            store.compact(1)
        return read_segment(path, **kwargs)

    monkeypatch.setattr(_results, "read_segment", compacted_first)
    assert read_results(tmp_path) == {"ok": 3}
    assert not (tmp_path / "journal" / "seg-000001.jsonl").exists()


def test_a_consumer_caught_up_waits_for_the_segment_being_compacted(tmp_path: Path) -> None:
    """Between a batch's stretches the collector waits for the compaction a full segment
    started, so that no more than one segment's rows are held beside the one filling."""
    import threading

    import anyio

    from batcher._core.clock import SystemClock
    from batcher._engine.consume import Consumer
    from batcher._engine.tally import Tally

    release = threading.Event()
    compacted: list[int] = []

    class _SlowStore(ResultStore):
        def compact(self, seq: int) -> None:
            release.wait(10)
            super().compact(seq)
            compacted.append(seq)

    store = _SlowStore(tmp_path, segment_size=2)
    store.open()
    consumer = Consumer(store, Tally(SystemClock()))

    async def main() -> list[str]:
        steps: list[str] = []
        async with consumer.running(), anyio.create_task_group() as tg:
            for i in range(2):  # a full segment: its compaction starts on a worker thread
                consumer.record(make_record(i))

            async def collector() -> None:
                await consumer.caught_up()
                steps.append(f"caught up after {compacted}")

            tg.start_soon(collector)
            await anyio.wait_all_tasks_blocked()
            steps.append("waiting")
            release.set()
        await consumer.caught_up()  # nothing compacting: at once
        return steps

    assert anyio.run(main) == ["waiting", "caught up after [1]"]


def test_a_segment_of_several_slices_compacts_into_one_part_row_for_row(tmp_path: Path) -> None:
    """A compaction converts its rows a slice at a time (so the event loop gets its turn): the
    part holds every row, in order, typed as one table would be."""
    from batcher._rundir.journal import SLICE

    n = 2 * SLICE + 7
    store = ResultStore(tmp_path, segment_size=n)
    store.open()
    records = [make_record(i, "ok" if i % 3 else "error") for i in range(n)]
    ready = [store.append(r) for r in records]
    assert ready[-1] == 1
    store.compact(1)
    table = pq.read_table(tmp_path / "results" / "part-000001.parquet")
    assert table.num_rows == n
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [r.id for r in records]
    assert [r["status"] for r in rows] == [r.status for r in records]
    assert [r["input_tokens"] for r in rows] == list(range(n))
    assert table.schema.equals(store.schema())


@pytest.mark.parametrize("fails", [False, True])
def test_a_running_consumer_quiets_the_heap_once_arrow_is_warm_and_gives_it_back(
    tmp_path: Path, fails: bool
) -> None:
    """While a run goes on, what was on the heap before it is out of the collector's way (a
    full collection walks it otherwise, tens of milliseconds of stalled loop); once the run has
    ended, normally or not, it is given back."""
    import gc

    import anyio

    from batcher._core.clock import SystemClock
    from batcher._core.heap import OLDER_EVERY
    from batcher._engine.consume import Consumer
    from batcher._engine.tally import Tally

    store = ResultStore(tmp_path)
    store.open()
    consumer = Consumer(store, Tally(SystemClock()))
    seen: list[int] = []
    during: list[tuple[int, int, int]] = []

    async def main() -> None:
        async with consumer.running():
            with anyio.fail_after(60):  # a bound on a hang, not a margin: it waits for a state
                while not gc.get_freeze_count():  # noqa: ASYNC110 (a state with no event)
                    await anyio.sleep(0.01)
            seen.append(gc.get_freeze_count())
            during.append(gc.get_threshold())
            if fails:
                raise OSError("the run failed")

    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    if fails:
        with pytest.raises(OSError, match="the run failed"):
            anyio.run(main)
    else:
        anyio.run(main)
    assert seen and seen[0] > 1_000  # the modules and what was loaded: thousands of objects
    assert gc.get_freeze_count() == 0
    # the older generations collected less often while it ran, as they were once it ended
    assert during[0][0] == before[0] and min(during[0][1:]) >= OLDER_EVERY > max(before[1:])
    assert gc.get_threshold() == before
