"""The requests a lane has in flight, and how many it needs to hold its pace.

A lane needs its rate times how long answers take in flight (Little's law): how long answers take
comes from the answers' recent times and, until enough have come back, the age of the oldest
request still out. The scheduler keeps that many workers (``Lane.wanted``).
"""

from __future__ import annotations

import math
from collections import deque

from .._core.clock import Clock

__all__ = ["CALIBRATED_LATENCY", "HEADROOM", "LATENCIES", "SPARE", "InFlight"]

LATENCIES = 256
"""Answer times kept per lane, for how many requests it needs in flight."""
CALIBRATED_LATENCY = 32
"""Answers after which their times alone say how long answers take; before, the oldest request
still out counts too (answers that take longer than any seen yet)."""
HEADROOM = 1.2
"""Requests wanted in flight beyond rate x answer time: the tail of answer times, and requests
ready the moment a paced slot comes."""
SPARE = 4


class InFlight:
    """A lane's requests out (admitted, not yet back) and the times its recent answers took."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._out: dict[object, float] = {}
        """The requests in flight and when each left, oldest first."""
        self._latencies: deque[float] = deque(maxlen=LATENCIES)
        self.answers = 0
        """Requests that came back (answered, failed, timed out) since the lane started."""
        self.peak = 0
        """The most requests in flight at once."""

    def sent(self, request: object) -> None:
        """``request`` left now."""
        out = self._out
        out[request] = self.clock.monotonic()
        if len(out) > self.peak:
            self.peak = len(out)

    def back(self, request: object) -> None:
        """``request`` came back (answered or not); one that never left is ignored."""
        sent = self._out.pop(request, None)
        if sent is not None:
            self.answers += 1
            self._latencies.append(self.clock.monotonic() - sent)

    def answer_time(self) -> float:
        """How long answers take, by a high quantile (p90) of the recent ones; until
        ``CALIBRATED_LATENCY`` have come back, at least the age of the oldest request out."""
        seen = 0.0
        if self._latencies:
            ordered = sorted(self._latencies)
            seen = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        if self.answers < CALIBRATED_LATENCY and self._out:
            seen = max(seen, self.clock.monotonic() - next(iter(self._out.values())))
        return seen

    def wanted(self, rate: float, *, tokens_bind: bool) -> int:
        """Requests needed in flight (or ready) to hold ``rate`` a second: rate x answer time
        with ``HEADROOM``; ``tokens_bind`` says the lane's token limit is what paces it."""
        took = self.answer_time()
        if self.answers < CALIBRATED_LATENCY or tokens_bind:
            # little seen yet, or tokens bind: tokens may go a second's budget ahead (and after
            # a second's budget frees, several requests leave at once), so at least a second's
            # requests are kept ready
            took = max(took, 1.0)
        return math.ceil(rate * took * HEADROOM) + SPARE
