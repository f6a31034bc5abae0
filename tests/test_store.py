"""The results store: durable appends, compaction into parts, recovery from a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from batcher._store import Record, ResultStore, read_results


def _rec(i: int, status: str = "ok") -> Record:
    return Record(
        id=f"j{i}",
        status=status,
        text=f"t{i}" if status == "ok" else None,
        input_tokens=i,
        output_tokens=1,
        attempts=1,
        error=None if status == "ok" else "boom",
        error_kind=None if status == "ok" else "permanent",
        model="m",
        finish_reason="stop",
        latency_ms=1.0,
        response="{}",
        source=f"f:{i}",
    )


def test_segments_rotate_and_compact_into_parts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, segment_size=3)
    store.open()
    ready = [store.append(_rec(i)) for i in range(7)]
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
        store.append(_rec(i, "error" if i == 3 else "ok"))
    store.rotate()  # the process dies here, before any compaction; the last line is torn
    with (tmp_path / "journal" / "seg-000001.jsonl").open("ab") as f:
        f.write(json.dumps({"id": "half"}).encode()[:7])
    assert read_results(tmp_path) == {"ok": 3, "error": 1, "error:permanent": 1}

    again = ResultStore(tmp_path)
    again.open()
    finished, errors = again.finished()
    assert len(finished) == 4 and errors == ["j3"]
    assert all(finished.get(f"j{i}") == 0 for i in range(4))  # no fingerprints in these rows
    again.append(_rec(9))
    again.close()
    ids = pq.read_table(tmp_path / "results").column("id").to_pylist()
    assert sorted(ids) == ["j0", "j1", "j2", "j3", "j9"]


def test_a_segment_already_compacted_is_not_counted_twice(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.open()
    store.append(_rec(1))
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

    from batcher._idset import IdMap, IdSet, duplicates, id_hash

    ids = [f"job-{i}" for i in range(10_000)]
    s = IdSet.of(ids[::2])
    assert len(s) == 5_000
    assert all(i in s for i in ids[::2]) and not any(i in s for i in ids[1::2])
    m = IdMap(array("Q", map(id_hash, ids)), array("Q", range(len(ids))))
    assert m.get("job-77") == 77 and m.get("nope") is None
    assert duplicates(array("Q", [3, 1, 3, 2, 1])) == {1, 3}
