"""The one clock everything reads, injectable so tests can run a day in a second."""

from __future__ import annotations

import asyncio
import time
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import anyio

__all__ = ["QUOTA_TZ", "Clock", "SystemClock", "next_reset", "quota_day"]


class Clock(Protocol):
    """Monotonic time for pacing, wall time for quota days, and sleeping."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The event loop's clock (so ``looptime`` can fake it) and the system's wall clock."""

    def monotonic(self) -> float:
        # the running asyncio loop's clock (batcher runs anyio on asyncio): what anyio.sleep
        # measures, without anyio's backend lookup on every call
        return asyncio.get_running_loop().time()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


QUOTA_TZ = ZoneInfo("America/Los_Angeles")
"""Gemini's daily quotas reset at midnight Pacific time."""


def quota_day(wall: float) -> date:
    """The quota day that the wall-clock instant ``wall`` falls in."""
    return datetime.fromtimestamp(wall, QUOTA_TZ).date()


def next_reset(wall: float) -> float:
    """The wall-clock instant of the next quota-day reset after ``wall``."""
    day = quota_day(wall) + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=QUOTA_TZ).timestamp()
