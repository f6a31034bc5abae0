"""Damaged results are set aside, not fatal: their jobs count as not done and are sent again.

A run (``ResultStore``) moves an unreadable part into ``DIR/damaged/`` with a warning; ``batcher
status`` (``iter_status``, ``read_results``, ``damaged_files``) runs beside a live run and only
reports it. A journal segment keeps every good line whatever garbage lies between them.
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batcher._rundir.results import damaged_files, iter_status, read_results
from batcher._rundir.store import ResultStore
from tests.helpers import make_record


def _three_parts(out: Path) -> ResultStore:
    """Jobs j0-j8 in parts 1, 2 and 3 (three each); the store is closed."""
    store = ResultStore(out, segment_size=3)
    store.open()
    for i in range(9):
        store.append(make_record(i))
    store.close()
    return store


def _truncate(path: Path) -> None:
    """What an interrupted copy leaves: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _finished_ids(store: ResultStore) -> list[str]:
    finished, _ = store.finished()
    return sorted(f"j{i}" for i in range(20) if finished.get(f"j{i}") is not None)


def test_a_truncated_part_is_set_aside_and_its_jobs_are_not_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _three_parts(tmp_path)
    part = tmp_path / "results" / "part-000002.parquet"
    _truncate(part)
    torn = part.read_bytes()
    store = ResultStore(tmp_path)
    store.open()
    with caplog.at_level(logging.WARNING, logger="batcher"):
        assert _finished_ids(store) == ["j0", "j1", "j2", "j6", "j7", "j8"]
    assert not part.exists()
    assert (tmp_path / "damaged" / "part-000002.parquet").read_bytes() == torn
    [message] = caplog.messages
    assert str(part) in message and "its jobs will be sent again" in message
    assert _finished_ids(store) == ["j0", "j1", "j2", "j6", "j7", "j8"]  # and stays so, quietly
    assert len(caplog.messages) == 1


def test_a_part_with_corrupt_data_inside_is_set_aside_too(tmp_path: Path) -> None:
    _three_parts(tmp_path)
    part = tmp_path / "results" / "part-000001.parquet"
    data = bytearray(part.read_bytes())
    data[20:60] = b"x" * 40  # the footer is intact; a column's compressed data is not
    part.write_bytes(bytes(data))
    store = ResultStore(tmp_path)
    store.open()
    assert _finished_ids(store) == ["j3", "j4", "j5", "j6", "j7", "j8"]
    assert (tmp_path / "damaged" / "part-000001.parquet").exists()


def test_a_name_taken_in_damaged_gets_a_suffix(tmp_path: Path) -> None:
    _three_parts(tmp_path)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "part-000003.parquet").write_bytes(b"an older one")
    (tmp_path / "damaged" / "part-000003-1.parquet").write_bytes(b"and another")
    _truncate(tmp_path / "results" / "part-000003.parquet")
    store = ResultStore(tmp_path)
    store.open()
    assert _finished_ids(store) == [f"j{i}" for i in range(6)]
    assert (tmp_path / "damaged" / "part-000003.parquet").read_bytes() == b"an older one"
    assert (tmp_path / "damaged" / "part-000003-1.parquet").read_bytes() == b"and another"
    assert (tmp_path / "damaged" / "part-000003-2.parquet").exists()


def test_remove_sets_a_damaged_part_aside_and_rewrites_the_rest(tmp_path: Path) -> None:
    store = _three_parts(tmp_path)
    _truncate(tmp_path / "results" / "part-000001.parquet")
    assert store.remove({"j0", "j4"}) == 1  # j0's part is damaged: set aside, not rewritten
    assert (tmp_path / "damaged" / "part-000001.parquet").exists()
    assert _finished_ids(store) == ["j3", "j5", "j6", "j7", "j8"]


def test_a_damaged_part_whose_segment_remains_is_rebuilt_from_the_segment(tmp_path: Path) -> None:
    """A crash between a part's rename and its segment's deletion, then the part got damaged:
    the segment still holds the rows, so they are kept, not sent again."""
    store = ResultStore(tmp_path)
    store.open()
    for i in range(3):
        store.append(make_record(i))
    store.rotate()
    segment = tmp_path / "journal" / "seg-000001.jsonl"
    kept = segment.read_bytes()
    store.compact(1)
    segment.write_bytes(kept)
    _truncate(tmp_path / "results" / "part-000001.parquet")
    again = ResultStore(tmp_path)
    again.open()
    assert not segment.exists()
    assert (tmp_path / "damaged" / "part-000001.parquet").exists()
    assert _finished_ids(again) == ["j0", "j1", "j2"]


def test_a_system_error_on_reading_is_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO or permission denied says nothing about the content: raised, and nothing moved."""
    store = _three_parts(tmp_path)

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(pq, "read_table", failing)
    with pytest.raises(OSError, match="Input/output error"):
        store.finished()
    assert len(list((tmp_path / "results").iterdir())) == 3
    assert not (tmp_path / "damaged").exists()


def test_status_skips_unreadable_parts_and_moves_nothing(tmp_path: Path) -> None:
    _three_parts(tmp_path)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "part-000009.parquet").write_bytes(b"set aside by an earlier run")
    part = tmp_path / "results" / "part-000002.parquet"
    _truncate(part)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    unreadable: list[Path] = []
    ids = sorted(row[0] for row in iter_status(tmp_path, unreadable=unreadable))
    assert ids == ["j0", "j1", "j2", "j6", "j7", "j8"]
    assert unreadable == [part]
    assert read_results(tmp_path) == {"ok": 6}
    listed = [tmp_path / "damaged" / "part-000009.parquet", part]
    assert damaged_files(tmp_path) == listed
    assert damaged_files(tmp_path, unreadable=unreadable) == listed
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert damaged_files(tmp_path / "nothing-here") == []


def test_status_counts_a_segment_whose_part_was_damaged(tmp_path: Path) -> None:
    """A damaged part does not hide the segment of the same number, still in the journal."""
    store = ResultStore(tmp_path)
    store.open()
    for i in range(3):
        store.append(make_record(i))
    store.rotate()
    segment = tmp_path / "journal" / "seg-000001.jsonl"
    kept = segment.read_bytes()
    store.compact(1)
    segment.write_bytes(kept)
    _truncate(tmp_path / "results" / "part-000001.parquet")
    assert read_results(tmp_path) == {"ok": 3}


def test_a_segment_keeps_every_good_line_whatever_lies_between(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "j1", "status": "ok", "text": "one"}).encode(),
        b"\x00\xff garbage \xfe",
        b"[1, 2, 3]",  # valid JSON, not an object
        b'"a string"',
        b"null",
        b'{"no id": true}',
        b'{"id": 7, "status": "ok"}',  # an id that is not a string
        b'{"id": "j2"}',  # no status
        b'{"id": "half", "sta',  # torn mid-way, then a newline written after it
        json.dumps({"id": "j3", "status": "error", "error_kind": "permanent"}).encode(),
    ]
    journal = tmp_path / "journal"
    journal.mkdir()
    segment = journal / "seg-000001.jsonl"
    segment.write_bytes(b"\n".join(lines) + b"\n" + b'{"id": "torn", "status": "ok"}')
    assert sorted(row[0] for row in iter_status(tmp_path)) == ["j1", "j3"]
    store = ResultStore(tmp_path)
    store.open()
    rows = pq.read_table(tmp_path / "results").to_pylist()
    assert [(r["id"], r["status"], r["text"]) for r in rows] == [
        ("j1", "ok", "one"),
        ("j3", "error", None),
    ]
