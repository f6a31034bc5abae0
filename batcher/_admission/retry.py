"""The retry policy: which errors, how many attempts, how long; the server's own delay first.

tenacity does the looping and the jittered exponential backoff; it stays behind this small API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from .._core.clock import Clock
from .._core.errors import RateLimitError, RetryableError

__all__ = ["RetryPolicy"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Retry ``RetryableError`` up to ``max_attempts`` times and ``max_time`` seconds per job.

    Without a server hint, waits are random exponential (``initial`` doubling up to ``max_wait``);
    a server's ``retry_after`` wins, capped at ``max_server_wait``. A 429 waits in the lane, which
    pauses every request of that model, so the policy adds no wait of its own for it; nor for a
    failure during an outage, which also costs no attempt (the lane probes, and bounds the
    outage), unless it timed out: that one may have been billed, and counts.

    ``timeout`` is the request timeout: the time budget is at least two of them, so that a
    request that timed out once is tried again (within ``max_attempts``).

    ``paced`` False is for calls no lane paces (uploads through a Files API): a 429 then waits
    the server's delay, or the backoff, like any other retryable failure.
    """

    max_attempts: int = 5
    max_time: float = 600.0
    initial: float = 0.5
    max_wait: float = 30.0
    max_server_wait: float = 300.0
    timeout: float = 0.0
    paced: bool = True

    def _wait(self) -> Callable[[RetryCallState], float]:
        backoff = wait_random_exponential(multiplier=self.initial, max=self.max_wait)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if self.paced and (
                isinstance(exc, RateLimitError)
                or (isinstance(exc, RetryableError) and not exc.counted)
            ):
                return 0.0  # the lane holds every request back: for a 429's delay, or an outage
            if isinstance(exc, RetryableError) and exc.retry_after is not None:
                return min(exc.retry_after, self.max_server_wait)
            return float(backoff(state))

        return wait

    async def call(self, fn: Callable[[], Awaitable[T]], *, clock: Clock) -> T:
        """Run ``fn`` until it succeeds, raises a non-retryable error, or the budget is spent.

        The first attempt runs on its own: most succeed, and setting up tenacity's loop costs
        more CPU than a whole request does elsewhere. Only a retryable failure hands over to
        tenacity, whose first "attempt" is that failure again."""
        start = clock.monotonic()
        try:
            return await fn()
        except RetryableError as e:
            first: RetryableError | None = e
        counted = 0
        budget = max(self.max_time, 2 * self.timeout)

        async def again() -> T:
            nonlocal first
            if first is not None:
                error, first = first, None
                raise error
            return await fn()

        def stop(state: RetryCallState) -> bool:
            nonlocal counted
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RetryableError) and not exc.counted:
                return False  # an outage's failure: the lane paces the probes, and bounds them
            counted += 1
            return counted >= self.max_attempts or clock.monotonic() - start >= budget

        retrying = AsyncRetrying(
            stop=stop,
            wait=self._wait(),
            retry=retry_if_exception_type(RetryableError),
            sleep=clock.sleep,
            reraise=True,
        )
        return await retrying(again)
