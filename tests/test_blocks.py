"""A block's results written exactly once, however often its worker dies (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.ray.blocks import BlockJournal, block_key, done_hashes, recover, stable_hash
from tests.helpers import make_record, read_results


def _die(journal: BlockJournal) -> None:
    """The worker writing ``journal`` dies: the kernel closes its file, nothing else happens."""
    assert journal._file is not None
    journal._file.close()


def test_a_block_is_journaled_then_written_as_one_part(tmp_path: Path) -> None:
    journal = BlockJournal(tmp_path, "k1")
    assert journal.begin() == [] and not journal.complete
    for i in range(3):
        journal.append(make_record(i))
    assert len(journal.store._segment(journal.seq).read_bytes().splitlines()) == 3
    assert [r["id"] for r in journal.finish()] == ["j0", "j1", "j2"]
    assert set(read_results(tmp_path)) == {"j0", "j1", "j2"}
    assert sorted(p.name for p in (tmp_path / "journal").iterdir()) == []


def test_a_retried_block_keeps_what_the_dead_worker_journaled(tmp_path: Path) -> None:
    dead = BlockJournal(tmp_path, "k1")
    dead.begin()
    dead.append(make_record(0))
    dead.append(make_record(1))
    _die(dead)
    segment = dead.store._segment(dead.seq)
    with segment.open("ab") as f:
        f.write(b'{"id": "j2", "sta')  # killed mid-line: j2 had not finished
    retry = BlockJournal(tmp_path, "k1")
    assert [r["id"] for r in retry.begin()] == ["j0", "j1"]
    assert not retry.complete and retry.seq == dead.seq
    retry.append(make_record(2))
    retry.finish()
    assert set(read_results(tmp_path)) == {"j0", "j1", "j2"}  # each once


def test_a_block_whose_part_was_written_is_not_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = BlockJournal(tmp_path, "k1")
    dead.begin()
    dead.append(make_record(0))
    monkeypatch.setattr(dead, "_cleanup", lambda: None)  # died after the part, before cleaning
    dead.finish()
    retry = BlockJournal(tmp_path, "k1")
    assert [r["id"] for r in retry.begin()] == ["j0"]
    assert retry.complete
    assert not retry.marker.exists()
    assert list(read_results(tmp_path)) == ["j0"]


def test_workers_claim_different_segments_and_skip_numbers_with_parts(tmp_path: Path) -> None:
    first = BlockJournal(tmp_path, "a")
    first.begin()
    second = BlockJournal(tmp_path, "b")
    second.begin()
    assert first.seq != second.seq
    first.append(make_record(0))
    first.finish()
    third = BlockJournal(tmp_path, "c")
    third.begin()
    assert third.seq not in (first.seq, second.seq)  # one has a part, one is held
    second.finish()
    third.finish()


def test_recover_compacts_a_dead_workers_segment_and_drops_markers(tmp_path: Path) -> None:
    dead = BlockJournal(tmp_path, "k1")
    dead.begin()
    dead.append(make_record(7))
    _die(dead)
    recover(tmp_path)
    assert list(read_results(tmp_path)) == ["j7"]
    assert not dead.marker.exists()
    assert done_hashes(tmp_path).has_hash(stable_hash("j7"))
    assert not done_hashes(tmp_path).has_hash(stable_hash("j8"))


def test_block_keys_depend_on_the_ids_and_their_order() -> None:
    assert block_key(["a", "b"]) == block_key(["a", "b"])
    assert block_key(["a", "b"]) != block_key(["b", "a"])
    assert block_key(["ab"]) != block_key(["a", "b"])
