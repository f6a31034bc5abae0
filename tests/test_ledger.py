"""Quota-day counting: per Pacific day or over a rolling 24 h, saved and restored in DIR."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from batcher._admission.ledger import DailyCount, Ledger
from batcher._core.errors import DamagedFile, WriteFailed

MIDNIGHT_PT = 1_800_000_000.0  # 2027-01-15 00:00 Pacific


def test_pacific_days_reset_at_midnight_los_angeles() -> None:
    count = DailyCount()
    for t in (MIDNIGHT_PT - 10, MIDNIGHT_PT - 5):
        count.add(t)
    assert count.spent(MIDNIGHT_PT - 1) == 2
    assert count.resets_at(MIDNIGHT_PT - 1) == MIDNIGHT_PT
    assert count.spent(MIDNIGHT_PT) == 0
    assert count.resets_at(MIDNIGHT_PT) == MIDNIGHT_PT + 86_400


def test_rolling_counts_the_last_24_hours() -> None:
    count = DailyCount(rolling=True, keep_times=True)
    for h in (0, 6, 12):
        count.add(MIDNIGHT_PT + h * 3600)
    assert count.spent(MIDNIGHT_PT + 23 * 3600) == 3
    assert count.resets_at(MIDNIGHT_PT + 23 * 3600) == MIDNIGHT_PT + 24 * 3600
    assert count.spent(MIDNIGHT_PT + 24 * 3600 + 1) == 2  # the first has rolled out
    assert count.spent(MIDNIGHT_PT + 36 * 3600 + 1) == 0


def test_the_ledger_restores_todays_count_and_forgets_yesterdays(tmp_path: Path) -> None:
    pacific = DailyCount()
    rolling = DailyCount(rolling=True, keep_times=True)
    for t in (MIDNIGHT_PT + 60, MIDNIGHT_PT + 120):
        pacific.add(t)
        rolling.add(t)
    Ledger(tmp_path).save({"a": pacific, "b": rolling})

    ledger = Ledger(tmp_path)
    again, again_rolling = DailyCount(), DailyCount(rolling=True, keep_times=True)
    ledger.restore("a", again)
    ledger.restore("b", again_rolling)
    assert again.spent(MIDNIGHT_PT + 3600) == 2
    assert again.spent(MIDNIGHT_PT + 86_400) == 0  # the next Pacific day
    assert again_rolling.spent(MIDNIGHT_PT + 86_400 + 90) == 1  # one of two rolled out
    assert ledger.spent(MIDNIGHT_PT + 3600) == {"a": 2, "b": 2}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"models": {"a": {"day": "2027-01-15", "co', "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", 'no "models" object'),
        (b'{"models": [1]}', 'no "models" object'),
        (b'{"models": {"a": {"day": "2027-01-15", "count": "many"}}}', "the count of 'a'"),
        (b'{"models": {"a": {"day": 5, "count": 3}}}', "the count of 'a'"),
        (b'{"models": {"a": {"count": 3, "times": ["noon"]}}}', "the count of 'a'"),
        (b'{"models": {"a": 3}}', "the count of 'a'"),
    ],
)
def test_a_ledger_that_cannot_be_read_stops_the_run_rather_than_count_from_zero(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    with pytest.raises(DamagedFile) as caught:
        Ledger(tmp_path)
    assert caught.value.path == path
    assert why in caught.value.reason
    assert f"{path} cannot be read (" in str(caught.value)
    assert "fix it or delete it: deleting it loses only today's request count" in str(caught.value)
    assert path.read_bytes() == content  # left for the user to look at


def test_a_ledger_that_cannot_be_saved_raises_write_failed_and_keeps_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = DailyCount()
    count.add(MIDNIGHT_PT + 60)
    Ledger(tmp_path).save({"a": count})
    saved = (tmp_path / "ledger.json").read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    count.add(MIDNIGHT_PT + 120)
    ledger = Ledger(tmp_path)
    with pytest.raises(WriteFailed) as caught:
        ledger.save({"a": count})
    assert (caught.value.path, caught.value.reason) == (
        tmp_path / "ledger.json",
        "No space left on device",
    )
    assert (tmp_path / "ledger.json").read_bytes() == saved
    monkeypatch.undo()
    ledger.save({"a": count})  # not taken as saved: the next save writes it
    assert Ledger(tmp_path).spent(MIDNIGHT_PT + 3600) == {"a": 2}
