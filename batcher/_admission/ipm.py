"""Images per minute: a cap on the images a model's image-generation requests ask for.

OpenAI's image models are limited in images per minute (IPM) besides requests, and one request
asks for ``n`` of them, so the lane's request pacing alone cannot keep to it. A window
(``ImageWindow``) holds the images admitted in the last 60 s (every attempt counts, retries
included, as the provider counts them) and admits a request only while its ``n`` fits under the
cap. ``ImageGate`` keeps one in this process; ``SharedImageGate`` asks one kept elsewhere (a
cluster's budget, ``_admission.grants.Budget.images``), so a cluster's workers keep one cap
together. Either way requests wait their turn in order, so a large ``n`` is not starved by small
ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias

import anyio

from .._core.clock import Clock
from .._core.window import SlidingWindow

__all__ = ["AskImages", "ImageAdmission", "ImageGate", "ImageWindow", "SharedImageGate"]

_MINUTE = 60.0


class ImageAdmission(Protocol):
    """Admits a request's images under a model's cap: ``admit(n)`` waits until they fit."""

    async def admit(self, n: int) -> None: ...


class ImageWindow:
    """The images admitted in the last 60 s, at most ``ipm`` (times on one clock)."""

    def __init__(self, ipm: int) -> None:
        if ipm < 1:
            raise ValueError("ipm must be at least 1")
        self.ipm = ipm
        self._window = SlidingWindow(_MINUTE)

    def take(self, now: float, n: int) -> float:
        """Count ``n`` images at ``now`` and return 0 if they fit, else count nothing and return
        the seconds until they would (at least a microsecond: float rounding must not leave an
        event at the edge). A request for more than ``ipm`` images is admitted alone, into an
        empty window (it cannot ever fit)."""
        self._window.expire(now)
        if self._window.total + n <= self.ipm or not self._window:
            self._window.add(now, n)
            return 0.0
        return max(1e-6, self._wait(n, now))

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


class ImageGate:
    """At most ``ipm`` images asked for in any 60-second window."""

    def __init__(self, ipm: int, clock: Clock) -> None:
        self.ipm = ipm
        self._clock = clock
        self._window = ImageWindow(ipm)
        self._turn = anyio.Lock()  # FIFO: the first waiter is admitted first

    async def admit(self, n: int) -> None:
        """Wait until ``n`` more images fit in the window, and count them."""
        async with self._turn:
            while wait := self._window.take(self._clock.monotonic(), n):
                await self._clock.sleep(wait)

    @property
    def used(self) -> float:
        """Images counted in the window as it stood at its last admission."""
        return self._window.used


AskImages: TypeAlias = Callable[[str, float, int], Awaitable[float]]
"""``ask(model, now, n)``: take ``n`` images of ``model``'s window at ``now`` (wall time); 0 if
they were taken, else the seconds to wait before asking again (``Budget.images``)."""


class SharedImageGate:
    """A model's images-per-minute gate whose window is kept elsewhere, on wall time (a cluster's
    budget): this process's requests ask it in turn."""

    def __init__(self, model: str, ask: AskImages, clock: Clock) -> None:
        self.model = model
        self._ask = ask
        self._clock = clock
        self._turn = anyio.Lock()

    async def admit(self, n: int) -> None:
        """Wait until the shared window takes ``n`` more images."""
        async with self._turn:
            while wait := await self._ask(self.model, self._clock.time(), n):
                await self._clock.sleep(wait)
