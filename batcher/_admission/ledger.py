"""The RPD ledger: requests sent per model per quota day, kept in the output directory.

A run restarted the same day then knows what is already spent. A quota day ends at midnight
America/Los_Angeles (Gemini's documented reset), or, with ``--quota-day rolling``, the count is of
the last 24 hours (reports disagree on which one Google applies). The ledger is rewritten
atomically every few seconds and at the end, so a kill -9 loses at most those seconds of counts.

A ledger that cannot be read stops the run (``DamagedFile``) rather than count from zero: a silent
reset would let the run overspend the day's quota.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._core.clock import next_reset, quota_day
from .._core.errors import DamagedFile, WriteFailed
from .._core.window import SlidingWindow

__all__ = ["DailyCount", "Ledger"]

DAY = 86_400.0


class DailyCount:
    """One model's requests in the current quota day (or the last 24 h, if ``rolling``).

    Rolling counts keep each request's time, but only when a daily limit makes them matter
    (``keep_times``); otherwise a count per Pacific day is enough for ``batcher status``.
    """

    def __init__(self, *, rolling: bool = False, keep_times: bool = False) -> None:
        self.rolling = rolling
        self.keep_times = rolling and keep_times
        self.day: str | None = None
        self.count = 0
        self.times = SlidingWindow(DAY)  # each request's wall time, when keep_times
        self._day_from = self._day_until = 0.0  # the wall-time span known to be ``day``

    def _roll(self, wall: float) -> None:
        if self.keep_times:
            self.times.expire(wall)
            self.count = len(self.times)
            return
        if self._day_from <= wall < self._day_until:
            return  # the same quota day as last time: no time-zone arithmetic
        day = quota_day(wall).isoformat()
        self._day_from, self._day_until = wall, next_reset(wall)
        if day != self.day:
            self.day, self.count = day, 0

    def spent(self, wall: float) -> int:
        self._roll(wall)
        return self.count

    def add(self, wall: float) -> None:
        self._roll(wall)
        self.count += 1
        if self.keep_times:
            self.times.add(wall)

    def take_back(self, wall: float, n: int) -> None:
        """Uncount ``n`` requests counted ahead (granted to a worker) and never sent."""
        self._roll(wall)
        self.count = max(0, self.count - n)
        if self.keep_times:
            self.times.drop_newest(n)
            self.count = len(self.times)

    def resets_at(self, wall: float) -> float:
        """When the count next goes down: the Pacific midnight, or the oldest request + 24 h."""
        if not self.rolling:
            return next_reset(wall)
        self._roll(wall)
        return self.times[0][0] + DAY if len(self.times) else wall + 3600.0

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"day": self.day, "count": self.count}
        if self.keep_times:
            out["times"] = self.times.times()
        return out

    def restore(self, data: dict[str, Any]) -> None:
        if self.keep_times:
            self.times = SlidingWindow(DAY)
            for t in data.get("times", []):
                self.times.add(float(t))
            self.count = len(self.times)
        elif not self.rolling:
            self.day, self.count = data.get("day"), int(data.get("count", 0))
        self._day_from = self._day_until = 0.0


class Ledger:
    """``DIR/ledger.json``: each model's ``DailyCount``, saved and restored."""

    def __init__(self, out: Path) -> None:
        self.path = out / "ledger.json"
        self._saved: dict[str, Any] = {}
        if self.path.is_file():
            self._saved = self._load()

    def _load(self) -> dict[str, Any]:
        """The saved counts, or ``DamagedFile`` naming the ledger and what is wrong with it."""
        try:
            data = json.loads(self.path.read_bytes())
        except OSError as e:
            raise DamagedFile(self.path, e.strerror or str(e)) from e
        except (ValueError, RecursionError) as e:
            raise DamagedFile(self.path, f"not JSON: {e}") from None
        models = data.get("models", {}) if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise DamagedFile(self.path, 'not a ledger: no "models" object')
        for model, saved in models.items():
            if not _valid(saved):
                raise DamagedFile(self.path, f"the count of {model!r} makes no sense: {saved!r}")
        return models

    def restore(self, model: str, count: DailyCount) -> None:
        if model in self._saved:
            count.restore(self._saved[model])

    def save(self, counts: dict[str, DailyCount]) -> None:
        data = {**self._saved, **{m: c.snapshot() for m, c in counts.items()}}
        if data == self._saved:
            return
        tmp = self.path.with_name("ledger.json.tmp")
        try:
            with tmp.open("w") as f:
                f.write(json.dumps({"models": data}, indent=1) + "\n")
                f.flush()
                os.fsync(f.fileno())  # else a power cut may leave an empty ledger, read as damaged
            os.replace(tmp, self.path)
        except OSError as e:
            raise WriteFailed.from_os_error(e, self.path) from e
        self._saved = data

    def spent(self, wall: float, *, rolling: bool = False) -> dict[str, int]:
        """Requests spent per model in the quota day of ``wall``, as saved."""
        out = {}
        for model, data in self._saved.items():
            timed = "times" in data  # saved by a run that counted a rolling 24 h
            count = DailyCount(rolling=rolling or timed, keep_times=timed)
            count.restore(data)
            out[model] = count.spent(wall)
        return out


def _valid(saved: Any) -> bool:
    """Whether ``saved`` is what ``DailyCount.snapshot`` writes: a day and a count, and maybe the
    times of a rolling count."""
    if not isinstance(saved, dict):
        return False
    count, day, times = saved.get("count", 0), saved.get("day"), saved.get("times", [])
    return (
        isinstance(count, int)
        and not isinstance(count, bool)
        and count >= 0
        and (day is None or isinstance(day, str))
        and isinstance(times, list)
        and all(isinstance(t, int | float) and not isinstance(t, bool) for t in times)
    )
