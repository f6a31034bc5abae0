"""Images per minute: a cap on the images a model's image-generation requests ask for.

OpenAI's image models are limited in images per minute (IPM) besides requests, and one request
asks for ``n`` of them, so the lane's request pacing alone cannot keep to it. The gate holds a
sliding window of the images admitted in the last 60 s (every attempt counts, retries included, as
the provider counts them) and admits a request only while its ``n`` fits under the cap; requests
wait their turn in order, so a large ``n`` is not starved by small ones.
"""

from __future__ import annotations

import anyio

from .._core.clock import Clock
from .._core.window import SlidingWindow

__all__ = ["ImageGate"]

_MINUTE = 60.0


class ImageGate:
    """At most ``ipm`` images asked for in any 60-second window."""

    def __init__(self, ipm: int, clock: Clock) -> None:
        if ipm < 1:
            raise ValueError("ipm must be at least 1")
        self.ipm = ipm
        self._clock = clock
        self._window = SlidingWindow(_MINUTE)
        self._turn = anyio.Lock()  # FIFO: the first waiter is admitted first

    async def admit(self, n: int) -> None:
        """Wait until ``n`` more images fit in the window, and count them. A request for more
        than ``ipm`` images is admitted alone, into an empty window (it cannot ever fit)."""
        async with self._turn:
            while True:
                now = self._clock.monotonic()
                self._window.expire(now)
                if self._window.total + n <= self.ipm or not self._window:
                    self._window.add(now, n)
                    return
                # at least a microsecond: float rounding must not leave an event at the edge
                await self._clock.sleep(max(1e-6, self._wait(n, now)))

    def _wait(self, n: int, now: float) -> float:
        """Seconds until enough of the oldest events leave the window for ``n`` to fit."""
        excess = self._window.total + n - self.ipm
        for t, weight in self._window:
            excess -= weight
            if excess <= 0:
                return max(0.0, t + _MINUTE - now)
        return max(0.0, self._window[-1][0] + _MINUTE - now)

    @property
    def used(self) -> float:
        """Images counted in the window as it stood at its last admission."""
        return self._window.total
