"""Quota-day counting: per Pacific day or over a rolling 24 h, saved and restored in DIR."""

from __future__ import annotations

from pathlib import Path

from batcher._ledger import DailyCount, Ledger

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
