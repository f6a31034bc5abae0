"""The cluster's budget without a cluster: grants, pauses and the day's quota, and lanes of two
"workers" drawing on one budget in virtual time."""

from __future__ import annotations

import itertools

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher._admission.grants import LATE, Budget, Gate, GiveBack, Grant, Pacer
from batcher._admission.lane import Lane
from batcher._config.limits import Limits, LimitTable
from batcher._core.errors import QuotaExhausted, RateLimitError
from tests.virtual import EPOCH, VirtualClock, run_virtual


def _slots(grant: Grant) -> list[float]:
    return [grant.start + i * grant.interval for i in range(grant.count)]


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(1, 5000),
    asks=st.lists(st.tuples(st.floats(0, 3), st.integers(1, 200)), min_size=1, max_size=80),
)
def test_slots_granted_to_many_workers_never_crowd_a_minute(
    rpm: int, asks: list[tuple[float, int]]
) -> None:
    """However the asks come, no two slots are closer than the pacing's interval, so no minute
    holds more than the limit, however late each slot is used (up to ``LATE``)."""
    pacer = Pacer(Limits(rpm=rpm))
    now, slots = EPOCH, []
    for gap, want in asks:
        now += gap
        grant = pacer.grant(now, want, 10)
        assert grant.count >= 1 and grant.start >= now
        slots += _slots(grant)
    slots.sort()
    interval = 60 / (rpm * 0.99)
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(slots))  # wall-time ulps
    for i, first in enumerate(slots):
        in_window = sum(1 for t in slots[i:] if t < first + 60 + LATE)
        assert in_window <= rpm


def test_a_grant_covers_half_a_second_of_the_rate_at_most() -> None:
    pacer = Pacer(Limits(rpm=6000))
    assert pacer.grant(EPOCH, 1000, 1).count == 49  # 6000 * 0.99 / 120
    assert Pacer(Limits(rpm=10)).grant(EPOCH, 1000, 1).count == 1


def test_tokens_space_the_slots_when_they_bind() -> None:
    pacer = Pacer(Limits(rpm=6000, tpm=60_000))
    grant = pacer.grant(EPOCH, 10, 1000)  # 1000 tokens a request: 1 request a second
    assert grant.interval == pytest.approx(60 * 1000 / (60_000 * 0.99))


def test_a_pause_holds_back_every_later_grant_and_slows_the_pacing() -> None:
    pacer = Pacer(Limits(rpm=600))
    first = pacer.grant(EPOCH, 1, 1)
    pacer.pause(EPOCH, 7.0)
    later = pacer.grant(EPOCH + 0.5, 1, 1)
    assert later.start >= EPOCH + 7.0
    assert later.interval > first.interval


def test_the_days_quota_stops_grants_until_the_reset() -> None:
    pacer = Pacer(Limits(rpm=6000, rpd=5))
    assert pacer.grant(EPOCH, 3, 1).count == 3
    assert pacer.grant(EPOCH, 3, 1).count == 2
    spent = pacer.grant(EPOCH, 3, 1)
    assert spent.count == 0 and spent.stopped is not None
    assert "5 requests" in spent.stopped[0] and spent.stopped[1] > EPOCH


def _gated(budget: Budget, clock: VirtualClock, limits: Limits) -> Lane:
    async def ask(
        model: str, now: float, want: int, tokens: float, settle: float, back: GiveBack | None
    ) -> Grant:
        await anyio.sleep(0.002)  # a round trip to the actor
        return await budget.grant(model, now, want, tokens, settle, back)

    def tell(model: str, now: float, delay: float) -> None:
        budget.pacers[model].pause(now, delay)

    return Lane("m", limits, clock, gate=Gate("m", ask, tell, clock))


def test_two_workers_together_reach_the_ceiling_and_never_pass_it() -> None:
    limits = Limits(rpm=600)
    budget = Budget(LimitTable(everywhere=limits))
    per_worker, admitted = 300, []

    async def main() -> float:
        clock = VirtualClock()
        lanes = [_gated(budget, clock, limits) for _ in range(2)]

        async def worker(lane: Lane) -> None:
            async def one() -> None:
                async with lane.request(10) as slot:
                    admitted.append(clock.monotonic())
                    await anyio.sleep(0.05)
                    slot.done(10)

            async with anyio.create_task_group() as tg:
                for _ in range(per_worker):
                    tg.start_soon(one)

        async with anyio.create_task_group() as tg:
            for lane in lanes:
                tg.start_soon(worker, lane)
        return clock.monotonic()

    elapsed = run_virtual(main)
    admitted.sort()
    assert len(admitted) == 2 * per_worker
    for i, first in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < first + 60) <= 600
    # the pair reaches the limit a single lane would: 600 requests in about a minute
    assert elapsed < 60 / 0.99 + 2


def test_a_429_in_one_worker_pauses_the_other() -> None:
    limits = Limits(rpm=600)
    budget = Budget(LimitTable(everywhere=limits))

    async def main() -> tuple[float, float]:
        clock = VirtualClock()
        a, b = _gated(budget, clock, limits), _gated(budget, clock, limits)
        async with a.request(1) as slot:
            slot.done(1)
        async with b.request(1) as slot:
            slot.done(1)
        hit_at = clock.monotonic()
        a.on_rate_limited(RateLimitError("429", retry_after=20.0))
        async with b.request(1) as slot:
            slot.done(1)
        return hit_at, clock.monotonic()

    hit_at, b_sent_at = run_virtual(main)
    assert b_sent_at >= hit_at + 20.0 - LATE


def test_a_spent_day_defers_the_job() -> None:
    limits = Limits(rpm=600, rpd=1)
    budget = Budget(LimitTable(everywhere=limits))

    async def main() -> None:
        clock = VirtualClock()
        lane = _gated(budget, clock, limits)
        async with lane.request(1) as slot:
            slot.done(1)
        with pytest.raises(QuotaExhausted, match="1 requests are spent"):
            async with lane.request(1):
                pass

    run_virtual(main)


def test_budget_keeps_the_days_counts_and_takes_a_ledgers() -> None:
    async def main() -> dict[str, object]:
        budget = Budget(LimitTable(everywhere=Limits(rpd=10)))
        await budget.configure(LimitTable(everywhere=Limits(rpd=10)), {"m": {"day": None}})
        await budget.grant("m", EPOCH, 2, 1, 0)
        return await budget.days()

    days = run_virtual(main)
    assert days["m"]["count"] == 2  # type: ignore[index]


def test_the_day_counts_the_requests_sent_not_the_slots_granted() -> None:
    """A gate asks for slots for every request waiting; some are not used in time (a request
    slow to come) or not at all (the work ran out): they are given back with the next ask and
    at the end, so the day counts what was sent."""
    limits = Limits(rpm=600, rpd=10_000)
    budget = Budget(LimitTable(everywhere=limits))

    async def main() -> int:
        clock = VirtualClock()

        async def ask(
            model: str, now: float, want: int, tokens: float, settle: float, back: GiveBack | None
        ) -> Grant:
            return await budget.grant(model, now, want, tokens, settle, back)

        gate = Gate("m", ask, lambda *_: None, clock)
        sent = 0
        for _ in range(3):
            await gate.admit(10, waiting=5)  # five asked for, one sent
            sent += 1
            await anyio.sleep(2.0)  # the others' slots go stale meanwhile
        for _ in range(2):
            await gate.admit(10, waiting=5)
            sent += 1
        assert budget.pacers["m"].granted["default"] > sent
        await gate.flush()
        return sent

    sent = run_virtual(main)
    assert run_virtual(budget.days)["m"]["count"] == sent == 5
    assert run_virtual(budget.counters)["m"][0] == sent


def test_slots_given_back_untouched_are_granted_again_at_once() -> None:
    """A grant nobody used and nobody granted after is rewound: the next grant starts where
    it started, so a block's last grant costs the cluster no time."""
    pacer = Pacer(Limits(rpm=600))
    first = pacer.grant(EPOCH, 5, 1)
    end = first.start + first.count * first.interval
    used = 2
    back = GiveBack(first.count - used, first.start + used * first.interval, end)
    pacer.give_back(EPOCH, back)
    assert pacer.count().spent(EPOCH) == used
    again = pacer.grant(EPOCH, 5, 1)
    assert again.start == pytest.approx(first.start + used * first.interval)
    # a grant made after it keeps its slots: the pace is not rewound under them
    third = pacer.grant(EPOCH, 1, 1)
    end = again.start + again.count * again.interval
    pacer.give_back(EPOCH, GiveBack(again.count, again.start, end))
    assert pacer.grant(EPOCH, 1, 1).start > third.start


def test_endpoints_of_one_project_keep_their_own_counts_under_one_daily_limit() -> None:
    async def main() -> tuple[dict[str, object], dict[str, object], Grant]:
        budget = Budget(LimitTable(everywhere=Limits(rpm=6000, rpd=10)))
        await budget.configure(budget.limits, {"m": {"day": None, "count": 0}}, "one")
        await budget.grant("m", EPOCH, 4, 1, 0, None, "one")
        await budget.grant("m", EPOCH, 5, 1, 0, None, "two")
        last = await budget.grant("m", EPOCH, 5, 1, 0, None, "two")
        return await budget.days("one"), await budget.days("two"), last

    one, two, last = run_virtual(main)
    assert one["m"]["count"] == 4  # type: ignore[index]
    assert two["m"]["count"] == 6  # type: ignore[index]
    assert last.count == 1  # the project's 10 a day, whichever endpoint spends them
