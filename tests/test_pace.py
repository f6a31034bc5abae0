"""The one pacing arithmetic, ``Pace``: a lane paces a process's requests with it, a cluster's
budget grants runs of slots with it, and both come out the same."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from batcher._admission.grants import Pacer
from batcher._admission.pace import MARGIN, PER_SECOND_MARGIN, Pace
from batcher._config.limits import Limits


def test_requests_are_an_interval_apart_at_the_margin() -> None:
    pace = Pace(Limits(rpm=600))
    assert math.isclose(pace.interval(600), 60 / (600 * MARGIN))
    assert math.isclose(pace.interval(600, share=0.5), 2 * 60 / (600 * MARGIN))
    assert pace.interval(None) == 0.0
    pace.advance(10.0, 10.0, tokens=50)
    assert math.isclose(pace.r_next, 10.0 + 60 / (600 * MARGIN))
    assert pace.t_next == 10.0  # no TPM: tokens do not pace


def test_a_429_pauses_slows_and_narrows_only_where_limits_may_be_per_second() -> None:
    plain, per_second = Pace(Limits(rpm=600)), Pace(Limits(rpm=600), per_second=True)
    assert plain.pause(5.0) is False and plain.margin == MARGIN
    assert per_second.pause(5.0) is True and per_second.margin == PER_SECOND_MARGIN
    assert plain.paused_until == 5.0 and plain.slow < 1.0
    given_margin = Pace(Limits(rpm=600), per_second=True, margin=1.0)
    assert given_margin.pause(1.0) is False and given_margin.margin == 1.0
    for _ in range(1000):
        plain.recover()
    assert plain.slow == 1.0


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(1, 100_000),
    asks=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 500)), min_size=1, max_size=40),
    pauses=st.lists(st.tuples(st.integers(0, 39), st.floats(0.1, 30)), max_size=3),
)
def test_a_clusters_grants_never_put_more_in_a_minute_than_one_pace_allows(
    rpm: int, asks: list[tuple[float, int]], pauses: list[tuple[int, float]]
) -> None:
    """Slots granted in runs, however they are asked for, are an interval apart at least, none
    before a pause ends: no window of a minute holds more than the paced rate."""
    pacer = Pacer(Limits(rpm=rpm))
    slots: list[float] = []
    paused_until = float("-inf")
    now = 1_000.0
    for n, (gap, want) in enumerate(asks):
        now += gap
        for at, delay in pauses:
            if at == n:
                pacer.pause(now, delay)
                paused_until = max(paused_until, now + delay)
        grant = pacer.grant(now, want, 1)
        first = grant.start
        assert first >= paused_until and first >= now
        slots += [first + i * grant.interval for i in range(grant.count)]
    allowed = math.floor(rpm * MARGIN) + 1
    for i, t in enumerate(slots):
        j = i + allowed
        assert j >= len(slots) or slots[j] >= t + 60.0 - 1e-6
