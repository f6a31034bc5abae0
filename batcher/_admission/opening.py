"""A lane's opening: one request until the first answer, then as many as pacing lets through.

A lane starts with one request (the probe) and admits more once it is answered or ``OPEN_AFTER``
seconds after it left, whichever comes first: a bad key or an unknown model (refused in
milliseconds) then costs one request, the first answer's rate-limit headers pace the ones after
it, and a model that takes half a minute to answer does not hold the run back for that long.
"""

from __future__ import annotations

import anyio

from .._core.clock import Clock

__all__ = ["OPEN_AFTER", "Opening"]

OPEN_AFTER = 2.0
"""Seconds after the first request left when the lane opens even without its answer."""


class Opening:
    """Whether a lane is open yet. The first request whose turn comes while it is closed is the
    probe; the ones after it wait for its answer or ``OPEN_AFTER``. Requests take their turns
    one at a time, holding the lane's lock: a probe holds it until it has left."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._answered = anyio.Event()
        self.opened_at = float("inf")
        """When the lane opened: the first answer, or ``OPEN_AFTER`` seconds after the probe
        left without one."""
        self._probing = False
        self._open_by = float("inf")
        """When the lane opens without the first answer (``OPEN_AFTER`` after the probe left)."""

    @property
    def is_open(self) -> bool:
        return self._answered.is_set()

    async def enter(self) -> bool:
        """A request's turn has come: True if it is the probe (the lane is closed and no probe
        is out); a request after the probe waits here until the lane opens."""
        if self._answered.is_set():
            return False
        if not self._probing:
            self._probing = True
            return True
        delay = self._open_by - self.clock.monotonic()
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._answered.wait()
        self.open()
        return False

    def probe_left(self, now: float) -> None:
        """The probe left at ``now``: the lane opens ``OPEN_AFTER`` later if no answer has."""
        self._open_by = now + OPEN_AFTER

    def probe_failed(self) -> None:
        """The probe never left (cancelled, refused, stopped): the next request in line probes
        instead."""
        self._probing = False

    def open(self) -> None:
        """An answer came back: the lane is open (if it was not already)."""
        if not self._answered.is_set():
            self.opened_at = self.clock.monotonic()
            self._answered.set()
