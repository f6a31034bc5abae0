"""One attempt's way through a lane: ``async with lane.request(x) as slot``.

Entering checks the job can ever fit and waits for admission; the block sends and calls
``slot.done`` with the tokens the answer reported; leaving settles the charge, teaches the
estimator, and on a 429 pauses the lane.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from .._core.errors import (
    FatalProviderError,
    ProviderError,
    RateLimitError,
    RetryableError,
    TimedOut,
)
from .._wire.providers import RateHints
from .estimate import Features

if TYPE_CHECKING:
    from .lane import Lane

__all__ = ["Slot"]


class Slot:
    """One attempt admitted by a lane (see ``Lane.request``); an async context manager.

    Leaving the block opens the lane to full concurrency after its first answer, pauses it on a
    429, tells the outage watch whether an answer came (any answer the endpoint sent, an error or
    an output that would not do included, says it is up), and, after ``done``, settles the
    tokens charged and teaches the estimator.
    """

    __slots__ = ("_entry", "_features", "_known", "_lane", "_output", "_reported", "_succeeded")

    def __init__(self, lane: Lane, x: Features | int, output: int) -> None:
        self._lane = lane
        self._features: Features | None = x if isinstance(x, tuple) else None
        self._known = 0 if isinstance(x, tuple) else x
        self._output = output
        self._entry: list[float] = []
        self._reported: int | None = None
        self._succeeded = False

    async def __aenter__(self) -> Slot:
        lane = self._lane
        x = self._features
        if x is None:
            tokens = self._known + self._output
            lane.check_size(tokens)
        else:
            # whether it can ever fit is by the cautious estimate; it is charged more in doubt
            lane.check_size(lane.estimator.estimate(x, cautious=True) + self._output)
            tokens = self._estimate()
        lane.waiting += 1
        try:
            self._entry = await lane.admit(tokens, self._estimate if x is not None else None)
        finally:
            lane.waiting -= 1
        lane.flight.sent(self)
        return self

    def _estimate(self) -> int:
        """The tokens this request is charged: its prompt's estimate now, and its output."""
        assert self._features is not None
        return self._lane.estimator.charge(self._features) + self._output

    def observe(self, hints: RateHints) -> None:
        """Adopt the limits an answer's ``x-ratelimit-*`` headers reveal (errors included)."""
        self._lane.observe(hints)

    def done(self, input_tokens: int | None) -> None:
        """The request succeeded; the answer reported ``input_tokens`` (None if it did not say)."""
        self._succeeded = True
        self._reported = input_tokens

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lane = self._lane
        lane.flight.back(self)
        lane.opening.open()
        if isinstance(exc, FatalProviderError):
            lane.refused = exc
        if isinstance(exc, RetryableError) and exc.unanswered:
            if lane.outage.failed(exc) and not isinstance(exc, TimedOut):
                # the endpoint's outage, not this job's failure; but a timed-out request may
                # have been billed, so it counts: a job is billed for --max-attempts at most
                exc.counted = False
            return
        if isinstance(exc, ProviderError) or self._succeeded:
            lane.outage.answered()
        else:
            lane.outage.released()
        if isinstance(exc, RateLimitError):
            lane.on_rate_limited(exc)
        elif self._succeeded:
            lane.succeeded += 1
            if self._reported is not None:
                if self._features is not None:
                    lane.estimator.learn(self._features, self._reported)
                lane.settle(self._entry, self._reported + self._output)
