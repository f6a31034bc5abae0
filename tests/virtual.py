"""Virtual time for tests, their one clock: a coroutine on looptime's event loop, which skips idle
waits, and batcher's ``Clock`` reading that loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import looptime

T = TypeVar("T")

EPOCH = 1_800_000_000.0
"""A wall-clock instant for virtual runs: 2027-01-15 08:00 UTC (00:00 Pacific)."""


class VirtualClock:
    """batcher's clock on the virtual loop: wall time is ``start`` plus loop time. ``sleeps``
    records every sleep asked of it, for tests that check delays."""

    def __init__(self, start: float = EPOCH) -> None:
        self.start = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return anyio.current_time()

    def time(self) -> float:
        return self.start + anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await anyio.sleep(seconds)


def run_virtual(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on a fresh virtual-time loop starting at 0; a day passes in milliseconds."""
    return anyio.run(
        fn,
        backend="asyncio",
        backend_options={"loop_factory": lambda: looptime.new_event_loop(start=0)},
    )
