"""The lane limiter in virtual time: budgets hold in every window, 429s pause the whole lane."""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_left, bisect_right
from itertools import pairwise

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher import FatalProviderError, PermanentJobError, QuotaExhausted, RateLimitError
from batcher._admission.lane import Lane
from batcher._admission.opening import OPEN_AFTER
from batcher._admission.pace import EARLY
from batcher._config.limits import Limits
from batcher._wire.providers import RateHints
from tests.virtual import VirtualClock, run_virtual

arrivals = st.lists(
    st.tuples(st.floats(0, 180, allow_nan=False), st.floats(0, 5, allow_nan=False)),
    min_size=1,
    max_size=120,
)


def _max_in_window(times: list[float], width: float, weights: list[float] | None = None) -> float:
    """The largest total in any half-open window ``(t - width, t]`` (to a microsecond)."""
    order = sorted(range(len(times)), key=times.__getitem__)
    ts = [times[i] for i in order]
    ws = [weights[i] if weights else 1.0 for i in order]
    best = 0.0
    for j, t in enumerate(ts):
        i = bisect_right(ts, t - width + 1e-6)
        k = bisect_right(ts, t)
        best = max(best, sum(ws[i:k]))
        del j
    return best


async def _drive(lane: Lane, jobs: list[tuple[float, float]], costs: list[int]) -> list[float]:
    """Each job arrives at its time, is admitted, and holds for its latency; returns admissions."""
    admitted: list[float] = [math.nan] * len(jobs)

    async def one(i: int) -> None:
        await anyio.sleep(jobs[i][0])
        async with lane.request(costs[i]) as slot:
            admitted[i] = anyio.current_time()
            await anyio.sleep(jobs[i][1])
            slot.done(costs[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(jobs)):
            tg.start_soon(one, i)
    return admitted


@settings(max_examples=60, deadline=None)
@given(jobs=arrivals, rpm=st.integers(1, 3000), per_second=st.booleans())
def test_requests_never_exceed_the_budget_in_any_window(
    jobs: list[tuple[float, float]], rpm: int, per_second: bool
) -> None:
    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=rpm), VirtualClock(), per_second=per_second)
        return await _drive(lane, jobs, [1] * len(jobs))

    times = run_virtual(main)
    assert _max_in_window(times, 60.0) <= rpm
    if per_second:
        assert _max_in_window(times, 1.0) <= math.ceil(rpm / 60)


@settings(max_examples=60, deadline=None)
@given(
    jobs=arrivals,
    tpm=st.integers(1_000, 200_000),
    sizes=st.lists(st.integers(1, 5_000), min_size=120, max_size=120),
)
def test_tokens_never_exceed_the_budget_in_any_window(
    jobs: list[tuple[float, float]], tpm: int, sizes: list[int]
) -> None:
    costs = [min(s, int(tpm * 0.9)) for s in sizes[: len(jobs)]]

    async def main() -> list[float]:
        lane = Lane("m", Limits(tpm=tpm), VirtualClock())
        return await _drive(lane, jobs, costs)

    times = run_virtual(main)
    assert _max_in_window(times, 60.0, [float(c) for c in costs]) <= tpm
    # and over any 10 s (a server may enforce there), that part of the limit, unless one
    # request is alone in those 10 s (as servers allow)
    order = sorted(range(len(times)), key=times.__getitem__)
    ts = [times[i] for i in order]
    for k, t in enumerate(ts):
        i = bisect_right(ts, t - 10.0 + 1e-6)
        if k > i:
            assert sum(costs[order[j]] for j in range(i, k + 1)) <= tpm / 6 + 1e-6


@settings(max_examples=60, deadline=None)
@given(
    jobs=arrivals,
    rpm=st.none() | st.integers(60, 3000),
    which=st.integers(0, 119),
    delay=st.floats(0.01, 120, allow_nan=False),
)
def test_no_request_leaves_before_a_429_delay_has_passed(
    jobs: list[tuple[float, float]], rpm: int | None, which: int, delay: float
) -> None:
    which %= len(jobs)
    told: list[float] = []

    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=rpm), VirtualClock())
        admitted: list[float] = [math.nan] * len(jobs)

        async def one(i: int) -> None:
            await anyio.sleep(jobs[i][0])
            with contextlib.suppress(RateLimitError):
                async with lane.request(1):
                    admitted[i] = anyio.current_time()
                    await anyio.sleep(jobs[i][1])
                    if i == which:
                        told.append(anyio.current_time())
                        raise RateLimitError("429", retry_after=delay)

        async with anyio.create_task_group() as tg:
            for i in range(len(jobs)):
                tg.start_soon(one, i)
        return admitted

    times = sorted(run_virtual(main))
    (t429,) = told
    # nothing admitted strictly after the 429 arrived and before its delay ran out
    lo, hi = bisect_right(times, t429), bisect_left(times, t429 + delay - 1e-6)
    assert times[lo:hi] == []


@settings(max_examples=40, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(st.floats(0, 2, allow_nan=False), st.floats(0, 0.05, allow_nan=False)),
        min_size=1,
        max_size=300,
    ),
    rpm=st.integers(60_000, 1_200_000),
)
def test_at_thousands_a_second_the_budgets_hold_in_every_second_and_minute(
    jobs: list[tuple[float, float]], rpm: int
) -> None:
    """Requests within ``EARLY`` of their pace leave without a sleep: no second gets more."""

    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=rpm), VirtualClock(), per_second=True)
        return await _drive(lane, jobs, [1] * len(jobs))

    times = run_virtual(main)
    assert _max_in_window(times, 1.0) <= math.ceil(rpm / 60)
    assert _max_in_window(times, 0.1) <= math.ceil(rpm / 600 + EARLY * rpm / 60) + 1


def test_at_high_rates_requests_go_in_bursts_of_at_most_early_s_worth_at_the_pace() -> None:
    interval = 0.0001  # 600,000 a minute

    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=600_000), VirtualClock(), margin=1.0)
        return await _drive(lane, [(0.0, 0.0)] * 200, [1] * 200)

    times = sorted(run_virtual(main))
    burst = EARLY / interval
    assert _max_in_window(times, EARLY) <= burst + 2
    assert sum(1 for t in times if t == times[0]) >= burst  # not a sleep for each one
    # on average at the pace: the last leaves no sooner than its slot less one burst
    assert times[-1] >= (len(times) - 1) * interval - EARLY - 1e-9


class _LaggingClock(VirtualClock):
    """A loop that wakes every sleeper ``lag`` late, as a busy one does."""

    def __init__(self, lag: float) -> None:
        super().__init__()
        self.lag = lag

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.lag)


def test_a_late_wake_up_is_not_lost_rate_and_bursts_stay_bounded() -> None:
    interval, lag = 0.001, 0.0008  # 60,000 a minute; every wake-up 0.8 ms late

    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=60_000), _LaggingClock(lag), margin=1.0)
        return await _drive(lane, [(0.0, 0.0)] * 300, [1] * 300)

    times = sorted(run_virtual(main))
    # held to its pace, not to pace plus lag (which would end near 300 * 1.8 ms)
    assert times[-1] <= 300 * interval * 1.02
    # a burst is at most the credit (half an interval, at least EARLY) and EARLY's worth
    assert _max_in_window(times, interval) <= 2 + (EARLY + max(interval / 2, EARLY)) / interval


def test_pacing_is_even_not_a_burst() -> None:
    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=600), VirtualClock(), margin=1.0)
        return await _drive(lane, [(0.0, 0.0)] * 30, [1] * 30)

    times = sorted(run_virtual(main))
    gaps = {round(b - a, 4) for a, b in pairwise(times)}
    assert gaps == {0.1}


def test_a_job_larger_than_a_minute_of_tokens_is_refused_and_a_large_one_passes() -> None:
    lane = Lane("m", Limits(tpm=10_000), VirtualClock())

    async def main() -> list[float]:
        with pytest.raises(PermanentJobError, match="more than m's budget of 10,000 tokens per"):
            async with lane.request(20_000):
                pass
        return await _drive(lane, [(0.0, 0.0)] * 3, [9_000, 9_000, 9_000])

    times = sorted(run_virtual(main))
    assert times[1] - times[0] >= 54 and times[2] - times[1] >= 54  # paced, not deadlocked


def test_unknown_limits_are_learned_from_a_429_and_from_headers() -> None:
    async def main() -> float:
        clock = VirtualClock()
        lane = Lane("m", Limits(), clock)
        assert lane.limits.rpm is None
        for _ in range(7):
            async with lane.request(10) as slot:
                slot.done(10)
        with contextlib.suppress(RateLimitError):
            async with lane.request(10):
                raise RateLimitError("429", retry_after=1.0, scope="requests")
        assert lane.limits.rpm == 7
        async with lane.request(10) as slot:
            slot.observe(RateHints(limit_requests=5, limit_tokens=900))
            assert (lane.limits.rpm, lane.limits.tpm) == (5, 900)
            slot.observe(RateHints(limit_requests=50))  # a higher number does not raise a limit
            assert lane.limits.rpm == 5
            slot.observe(RateHints(remaining_requests=0, reset_requests=2.5, limit_requests=5))
            return lane.pace.paused_until - clock.monotonic()

    assert run_virtual(main) == pytest.approx(2.5)


def test_daily_budget_stops_the_lane_until_the_pacific_midnight() -> None:
    clock = VirtualClock(start=1_800_000_000.0 + 23 * 3600 + 59 * 60)  # 23:59 Pacific

    async def main() -> tuple[int, float]:
        lane = Lane("m", Limits(rpd=3), clock)
        for _ in range(3):
            async with lane.request(1):
                pass
        with pytest.raises(QuotaExhausted) as info:
            async with lane.request(1):
                pass
        assert "the day's 3 requests are spent" in str(info.value)
        assert "00:00 PST" in str(info.value)
        await anyio.sleep(info.value.resets_at - clock.time())
        async with lane.request(1):  # a new quota day
            pass
        return lane.daily.spent(clock.time()), info.value.resets_at

    today, resets_at = run_virtual(main)
    assert today == 1
    assert resets_at == 1_800_000_000.0 + 86_400


def test_a_per_day_429_stops_the_lane() -> None:
    async def main() -> None:
        lane = Lane("m", Limits(), VirtualClock())
        with contextlib.suppress(RateLimitError):
            async with lane.request(1):
                raise RateLimitError("429", per_day=True, quota="GenerateRequestsPerDay")
        with pytest.raises(QuotaExhausted, match="GenerateRequestsPerDay"):
            async with lane.request(1):
                pass

    run_virtual(main)


@pytest.mark.parametrize(
    ("first", "opens_at"),
    [(0.5, 0.5), (1.9, 1.9), (3.0, OPEN_AFTER), (30.0, OPEN_AFTER)],
)
def test_a_lane_sends_one_request_until_the_first_answer_or_open_after(
    first: float, opens_at: float
) -> None:
    """A refusal comes back in milliseconds, so one request is all a bad key costs; a model that
    takes half a minute to answer holds the lane back only ``OPEN_AFTER`` seconds."""

    async def main() -> list[float]:
        lane = Lane("m", Limits(), VirtualClock())
        admitted: list[float] = []

        async def one(latency: float) -> None:
            async with lane.request(1):
                admitted.append(anyio.current_time())
                await anyio.sleep(latency)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, first)
            for _ in range(5):
                tg.start_soon(one, 1.0)
        return admitted

    assert run_virtual(main) == [0.0] + [opens_at] * 5


def test_a_refused_first_request_stops_the_lane_before_it_opens() -> None:
    async def main() -> int:
        lane = Lane("m", Limits(), VirtualClock())
        sent = 0

        async def one() -> None:
            nonlocal sent
            with contextlib.suppress(FatalProviderError):
                async with lane.request(1):
                    sent += 1
                    await anyio.sleep(0.05)
                    raise FatalProviderError("the API key was refused")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
        return sent

    assert run_virtual(main) == 1


@settings(max_examples=40, deadline=None)
@given(
    jobs=arrivals,
    tpm=st.integers(6_000, 120_000),
    sizes=st.lists(st.integers(1, 3_000), min_size=120, max_size=120),
)
def test_after_a_per_second_429_tokens_hold_a_seconds_budget_in_every_second(
    jobs: list[tuple[float, float]], tpm: int, sizes: list[int]
) -> None:
    """Once a 429 shows per-second enforcement, no second holds more than tpm/60 tokens (a
    request alone in its second excepted, as servers let it through)."""
    costs = [min(s, int(tpm * 0.9)) for s in sizes[: len(jobs)]]

    async def main() -> list[float]:
        lane = Lane("m", Limits(tpm=tpm), VirtualClock(), per_second=True)
        with contextlib.suppress(RateLimitError):
            async with lane.request(1):
                raise RateLimitError("429", retry_after=0.5, scope="tokens")
        return await _drive(lane, jobs, costs)

    times = run_virtual(main)
    order = sorted(range(len(times)), key=times.__getitem__)
    for i in order:
        window = [j for j in order if times[i] - 1.0 + 1e-6 < times[j] <= times[i]]
        if len(window) > 1:
            assert sum(costs[j] for j in window) <= tpm / 60 + 1e-6


def test_a_refused_lane_fails_the_attempts_waiting_on_it_without_sending_them() -> None:
    """A bad key costs one request, not one per job in flight: the others fail unsent (and a
    pool then moves them to another endpoint)."""
    from batcher import FatalProviderError

    async def main() -> tuple[int, int]:
        lane = Lane("m", Limits(rpm=600), VirtualClock())
        sent = refused = 0

        async def one() -> None:
            nonlocal sent, refused
            try:
                async with lane.request(1):
                    sent += 1
                    raise FatalProviderError("the key was refused", status=401)
            except FatalProviderError:
                refused += 1

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        return sent, refused

    assert run_virtual(main) == (1, 10)


@pytest.mark.parametrize("rpm", [61, 100, 500, 1_000, 3_000])
def test_a_quantized_lane_never_puts_more_than_a_seconds_whole_requests_into_any_second(
    rpm: int,
) -> None:
    """Where limits may be enforced per clock second (OpenAI: 500 RPM is 8 in any second, not
    8.33), no second of any phase holds more than the whole requests a second allows, from the
    first request on, however late the loop wakes the requests."""

    async def main() -> list[float]:
        lane = Lane("m", Limits(rpm=rpm), VirtualClock(), per_second=True)
        sent: list[float] = []

        async def one(i: int) -> None:
            async with lane.request(1) as slot:
                sent.append(anyio.current_time())
                await anyio.sleep(0.05 + (i % 7) * 0.013)  # answers of varying times
                slot.done(1)

        async with anyio.create_task_group() as tg:
            for i in range(rpm // 2):
                tg.start_soon(one, i)
        return sent

    sent = sorted(run_virtual(main))
    whole = rpm // 60
    # any window [t, t + 1) starting at a send holds the most: at most `whole` sends
    for i, t in enumerate(sent):
        assert bisect_left(sent, t + 1.0) - i <= max(1, whole), (t, whole)
    if whole >= 1:
        span = sent[-1] - sent[0]
        assert (len(sent) - 1) / span >= whole * 0.98  # and close to that many a second


class LateClock(VirtualClock):
    """A loop that wakes sleepers late by the amounts given, in turn: stalls and lag."""

    def __init__(self, lateness: list[float]) -> None:
        super().__init__()
        self._lateness = lateness
        self._n = 0

    async def sleep(self, seconds: float) -> None:
        late = self._lateness[self._n % len(self._lateness)]
        self._n += 1
        await super().sleep(seconds + late)


@settings(max_examples=40, deadline=None)
@given(
    rpm=st.integers(61, 3_000),
    margin=st.sampled_from([None, 1.0]),
    tpm=st.sampled_from([None, 20_000, 200_000]),
    sizes=st.lists(st.integers(1, 2_000), min_size=1, max_size=12),
    lateness=st.lists(st.floats(0, 0.3, allow_nan=False), min_size=1, max_size=20),
    share=st.sampled_from([1.0, 0.5]),
)
def test_no_second_holds_more_than_its_whole_requests_whatever_the_loop_s_lateness(
    rpm: int,
    margin: float | None,
    tpm: int | None,
    sizes: list[int],
    lateness: list[float],
    share: float,
) -> None:
    """A quantized lane puts at most the whole requests a second allows into any second of any
    phase, however late each wake-up, with a token limit whose backfilling lets small requests
    go ahead (and takes back those that would delay the holder), at any margin and share."""

    class Half:
        share = 0.5
        left = 10**9

    async def main() -> list[float]:
        lane = Lane(
            "m", Limits(rpm=rpm, tpm=tpm), LateClock(lateness), per_second=True, margin=margin
        )
        if share != 1.0:
            lane.quota = Half()  # type: ignore[assignment]
        sent: list[float] = []

        async def one(i: int) -> None:
            with contextlib.suppress(PermanentJobError):
                async with lane.request(sizes[i % len(sizes)]) as slot:
                    sent.append(anyio.current_time())
                    await anyio.sleep(0.05)
                    slot.done(sizes[i % len(sizes)])

        async with anyio.create_task_group() as tg:
            for i in range(min(rpm // 3, 400)):
                tg.start_soon(one, i)
        return sent

    sent = sorted(run_virtual(main))
    whole = max(1, math.floor(rpm * share / 60))
    for i, t in enumerate(sent):
        assert bisect_left(sent, t + 1.0) - i <= whole, (t, whole)


def test_a_request_that_queued_is_charged_what_the_estimator_says_when_its_turn_comes() -> None:
    """Hundreds of requests may queue at a run's start; each is charged by the estimate at its
    turn, after the first answers have taught the estimator, not the one it joined with."""
    from batcher._admission.estimate import features

    x = features("word " * 400)  # 2,000 characters: 500 tokens by the starting rule

    async def main() -> list[float]:
        lane = Lane("m", Limits(tpm=600_000), VirtualClock())
        charged: list[float] = []

        async def one() -> None:
            async with lane.request(x) as slot:
                charged.append(slot._entry[1])
                await anyio.sleep(0.1)
                slot.done(2_000)  # the server's tokenizer counts four times the rule

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(one)
        return charged

    charged = run_virtual(main)
    assert charged[0] == 1_000  # the starting rule, doubled: nothing learned yet
    assert charged[-1] > 1_500  # the last in the queue: what the answers taught


def test_the_admissions_kept_for_the_short_token_cap_stay_short_without_a_tpm() -> None:
    """Every admission is kept for the cap over 10 s, read only where there is a TPM: without
    one it must not grow for the whole run (hours at hundreds a second)."""

    async def main() -> int:
        lane = Lane("m", Limits(rpm=6_000), VirtualClock())
        for _ in range(3_000):  # 30 s at 100 a second
            async with lane.request(1) as slot:
                slot.done(None)  # an answer that reports no tokens settles nothing
        return len(lane.cap._short)

    assert run_virtual(main) <= 1_001  # 10 s of them


def test_a_429_on_tokens_makes_the_lane_charge_double_again_until_answers_say() -> None:
    """After a 429 on tokens the estimates may fall short (the prompts or the tokenizer
    changed): the next request is charged double its estimate, as before any answer."""
    from batcher._admission.estimate import features

    x = features("word " * 400)  # 500 tokens by the starting rule

    async def main() -> list[float]:
        lane = Lane("m", Limits(tpm=600_000), VirtualClock())
        charged: list[float] = []
        for _ in range(12):
            async with lane.request(x) as slot:
                charged.append(slot._entry[1])
                slot.done(500)  # the rule was right
        with contextlib.suppress(RateLimitError):
            async with lane.request(x) as slot:
                raise RateLimitError("429", retry_after=1.0, scope="tokens")
        async with lane.request(x) as slot:
            charged.append(slot._entry[1])
        return charged

    charged = run_virtual(main)
    assert charged[0] == 1_000  # before any answer
    assert charged[11] <= 510  # answers said the estimate holds
    assert charged[-1] == 1_000  # after the 429 on tokens


@pytest.mark.parametrize("with_small", [True, False])
def test_a_smaller_request_queued_behind_fills_the_second_without_delaying_the_one_ahead(
    with_small: bool,
) -> None:
    """Tokens capped per second: 700 leave, 600 must wait a second for them to expire, and a
    200 queued behind the 600 fits in what is left of this second, so it leaves now (first come
    first served would have left that room unused); the 600 leaves when it would have alone."""

    async def main() -> dict[int, float]:
        lane = Lane("m", Limits(tpm=60_000), VirtualClock(), per_second=True)
        with contextlib.suppress(RateLimitError):
            async with lane.request(1):
                raise RateLimitError("429", retry_after=0.5, scope="tokens")
        left: dict[int, float] = {}

        async def one(tokens: int) -> None:
            async with lane.request(tokens) as slot:
                left[tokens] = anyio.current_time()
                slot.done(tokens)

        async with anyio.create_task_group() as tg:
            for tokens in (700, 600, 200) if with_small else (700, 600):
                tg.start_soon(one, tokens)
                await anyio.sleep(0.001)  # queued in this order
        return left

    left = run_virtual(main)
    start = left[700]
    assert left[600] == pytest.approx(start + 1.0, abs=0.01)
    if with_small:
        assert left[200] == pytest.approx(start, abs=0.01)
