"""Virtual time for tests, their one clock: a coroutine on looptime's event loop, which skips idle
waits, and batcher's ``Clock`` reading that loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
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


async def _in_executor(
    func: Callable[..., T], *args: Any, abandon_on_cancel: bool = False, **_: Any
) -> T:
    """``anyio.to_thread.run_sync`` through the loop's executor, whose futures looptime sees: while
    one runs, virtual time follows real time. anyio's own threads are invisible to it, so the
    loop looked idle and jumped to its next timer (a ledger save every 2 s, itself a thread): a
    first read of Parquet in a fresh process could pass minutes of virtual time."""
    del abandon_on_cancel
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args))


def run_virtual(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on a fresh virtual-time loop starting at 0; a day passes in milliseconds."""
    real = anyio.to_thread.run_sync
    anyio.to_thread.run_sync = _in_executor  # type: ignore[assignment]
    try:
        return anyio.run(
            fn,
            backend="asyncio",
            backend_options={"loop_factory": lambda: looptime.new_event_loop(start=0)},
        )
    finally:
        anyio.to_thread.run_sync = real
