"""The retry policy on an injected clock: the server's delay first, capped attempts and time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from batcher import PermanentJobError, RetryableError
from batcher._admission.retry import RetryPolicy
from tests.virtual import VirtualClock, run_virtual


def _failing(errors: list[Exception]) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    return calls, fn


def _call(policy: RetryPolicy, fn: Callable[[], Awaitable[str]], clock: VirtualClock) -> str:
    return run_virtual(lambda: policy.call(fn, clock=clock))


def test_server_delay_wins_over_backoff() -> None:
    clock = VirtualClock()
    calls, fn = _failing([RetryableError("429", retry_after=12.5), RetryableError("503")])
    assert _call(RetryPolicy(max_attempts=5, max_wait=2), fn, clock) == "done"
    assert len(calls) == 3
    assert clock.sleeps[0] == 12.5
    assert 0 <= clock.sleeps[1] <= 2


def test_backoff_grows_and_stays_under_the_cap() -> None:
    clock = VirtualClock()
    calls, fn = _failing([RetryableError("x") for _ in range(9)])
    with pytest.raises(RetryableError):
        _call(RetryPolicy(max_attempts=8, initial=1, max_wait=10), fn, clock)
    assert len(calls) == 8
    assert len(clock.sleeps) == 7
    assert all(0 <= s <= 10 for s in clock.sleeps)


def test_total_time_is_capped() -> None:
    clock = VirtualClock()
    calls, fn = _failing([RetryableError("x", retry_after=40) for _ in range(20)])
    with pytest.raises(RetryableError):
        _call(RetryPolicy(max_attempts=100, max_time=100), fn, clock)
    assert len(calls) == 4  # at t=0, 40, 80, 120: the budget of 100 s is spent after the 4th


def test_permanent_errors_are_not_retried() -> None:
    clock = VirtualClock()
    calls, fn = _failing([PermanentJobError("400")])
    with pytest.raises(PermanentJobError):
        _call(RetryPolicy(), fn, clock)
    assert len(calls) == 1 and clock.sleeps == []
