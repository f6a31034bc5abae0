"""The cluster's budget without a cluster: grants, pauses and the day's quota, and lanes of two
"workers" drawing on one budget in virtual time."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher._admission.budget_gate import Gate
from batcher._admission.grants import LATE, Budget, GiveBack, Grant, Pacer
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


def _asking(
    budget: Budget, round_trip: float, grants: list[Grant] | None = None
) -> Callable[..., Awaitable[Grant]]:
    """A gate's ``ask`` on ``budget`` taking ``round_trip`` seconds (the actor's), half each way;
    each grant made is kept in ``grants``."""

    async def ask(
        model: str, now: float, want: int, tokens: float, settle: float, back: GiveBack | None
    ) -> Grant:
        await anyio.sleep(round_trip / 2)
        grant = await budget.grant(model, now, want, tokens, settle, back)
        if grants is not None:
            grants.append(grant)
        await anyio.sleep(round_trip / 2)
        return grant

    return ask


def test_a_busy_lane_never_stands_waiting_for_a_round_trip() -> None:
    """One worker alone, 80 ms from its budget: it asks for the next grant before the one held
    runs out, so it keeps the pace of a lane of its own (before, each grant cost it the round
    trip: 0.9 of the rate)."""
    limits = Limits(rpm=1200)
    budget = Budget(LimitTable(everywhere=limits))
    n, admitted = 600, []

    async def main() -> tuple[float, Gate]:
        clock = VirtualClock()
        gate = Gate("m", _asking(budget, 0.08), lambda *_: None, clock)
        lane = Lane("m", limits, clock, gate=gate)

        async def one() -> None:
            async with lane.request(10) as slot:
                admitted.append(clock.monotonic())
                await anyio.sleep(0.1)
                slot.done(10)

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        await gate.flush()
        return admitted[-1] - admitted[0], gate

    span, gate = run_virtual(main)
    interval = 60 / (1200 * 0.99)
    assert span <= (n - 1) * interval * 1.005
    assert gate.round_trip == pytest.approx(0.08)
    assert run_virtual(budget.counters)["m"][0] == n


@st.composite
def _workloads(draw: st.DrawFn) -> tuple[int, list[tuple[float, list[tuple[float, float]]]]]:
    """An RPM limit, and for each worker its round trip to the budget and its requests: when
    each arrives (bursts and lulls) and how long it is in flight."""
    rpm = draw(st.integers(60, 6000))
    workers = draw(
        st.lists(
            st.tuples(
                st.floats(0, 0.3),
                st.lists(st.tuples(st.floats(0, 1.5), st.floats(0, 0.4)), min_size=1, max_size=60),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return rpm, workers


@settings(max_examples=60, deadline=None)
@given(_workloads())
def test_slots_asked_for_ahead_are_each_used_once_and_in_time(
    workload: tuple[int, list[tuple[float, list[tuple[float, float]]]]],
) -> None:
    """Workers at various round trips from one budget (some longer than ``LATE``), their
    requests coming in bursts and lulls, each lane's asks made ahead of its grant's end: every
    request leaves in a slot of its own, used from its time to ``LATE`` after, the slots used an
    interval apart at least, so no window holds more than the pacing allows however the asks
    overlap; and once each gate is flushed, the day counts exactly the requests that left. (A
    budget further than ``LATE`` away granted slots stale on arrival, over and over.)"""
    rpm, workers = workload
    budget = Budget(LimitTable(everywhere=Limits(rpm=rpm, rpd=1_000_000)))
    grants: list[Grant] = []
    sent: list[float] = []

    async def main() -> None:
        clock = VirtualClock()

        async def worker(round_trip: float, requests: list[tuple[float, float]]) -> None:
            gate = Gate("m", _asking(budget, round_trip, grants), lambda *_: None, clock)
            lock = anyio.Lock()  # a lane admits one request at a time

            async def one(at: float, flight: float) -> None:
                await anyio.sleep(at)
                async with lock:
                    await gate.admit(10, lock.statistics().tasks_waiting + 1)
                    sent.append(clock.time())
                await anyio.sleep(flight)

            async with anyio.create_task_group() as tg:
                at = 0.0
                for gap, flight in requests:
                    at += gap
                    tg.start_soon(one, at, flight)
            await gate.flush()

        async with anyio.create_task_group() as tg:
            for round_trip, requests in workers:
                tg.start_soon(worker, round_trip, requests)

    run_virtual(main)
    assert len(sent) == sum(len(requests) for _, requests in workers)
    # each request in a slot of its own: the earliest granted slot not yet taken that it may
    # use (a slot given back unused and granted again counts once per grant)
    free = iter(sorted(t for g in grants for t in _slots(g)))
    used = []
    for t in sorted(sent):
        used.append(next(s for s in free if s >= t - LATE - 1e-6))
        assert used[-1] <= t + 1e-6
    interval = 60 / (rpm * 0.99)
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(used))
    sent.sort()
    for i, first in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < first + 60) <= rpm
        assert sum(1 for t in sent[i:] if t < first + 1) <= (1 + LATE) / interval + 1
    assert run_virtual(budget.days)["m"]["count"] == len(sent)
    assert run_virtual(budget.counters)["m"][0] == len(sent)


def test_an_admission_cancelled_while_its_grant_is_asked_for_loses_no_slot() -> None:
    """The ask goes on without the admission that made it: the grant is kept for the next one,
    or given back whole by ``flush``, so the day still counts only what was sent."""
    budget = Budget(LimitTable(everywhere=Limits(rpm=600, rpd=1000)))

    async def main() -> None:
        clock = VirtualClock()
        gate = Gate("m", _asking(budget, 0.5), lambda *_: None, clock)
        with anyio.move_on_after(0.1):
            await gate.admit(10, 5)
        await gate.flush()
        assert budget.pacers["m"].granted["default"] == 0
        with anyio.move_on_after(0.1):
            await gate.admit(10, 5)
        await gate.admit(10, 5)  # takes the grant the cancelled one asked for
        await gate.flush()
        assert budget.pacers["m"].granted["default"] == 1

    run_virtual(main)
