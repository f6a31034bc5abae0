"""The images-per-minute gate under virtual time: never more than its cap in any minute."""

from __future__ import annotations

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher._admission.ipm import ImageGate
from tests.virtual import VirtualClock, run_virtual


def _admissions(ipm: int, asks: list[tuple[float, int]]) -> list[tuple[float, int, int]]:
    """(time admitted, n, order asked) of requests asking ``n`` images at the given times."""
    admitted: list[tuple[float, int, int]] = []

    async def main() -> None:
        clock = VirtualClock()
        gate = ImageGate(ipm, clock)

        async def ask(i: int, at: float, n: int) -> None:
            await anyio.sleep(at)
            await gate.admit(n)
            admitted.append((clock.monotonic(), n, i))

        async with anyio.create_task_group() as tg:
            for i, (at, n) in enumerate(asks):
                tg.start_soon(ask, i, at, n)

    run_virtual(main)
    return admitted


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.lists(st.tuples(st.floats(0, 120), st.integers(1, 15)), min_size=1, max_size=30),
)
def test_no_minute_holds_more_images_than_the_cap(ipm: int, asks: list[tuple[float, int]]) -> None:
    admitted = _admissions(ipm, asks)
    assert len(admitted) == len(asks)
    for t, _, _ in admitted:
        window = [n for s, n, _ in admitted if t - 60 < s <= t]
        # a request larger than the cap goes alone into an empty minute
        assert sum(window) <= ipm or len(window) == 1


def test_requests_wait_their_turn_and_the_minute_passes() -> None:
    # 4 requests of 3 images under 6 IPM: two now, two a minute later, in the order asked
    admitted = _admissions(6, [(0.0, 3), (0.001, 3), (0.002, 3), (0.003, 3)])
    times = [round(t, 3) for t, _, _ in admitted]
    assert times == [0.0, 0.001, 60.0, 60.001]
    assert [i for _, _, i in admitted] == [0, 1, 2, 3]


def test_workers_sharing_a_budget_keep_one_cap_between_them() -> None:
    """Two workers' gates, each asking the cluster's budget (a round trip away), never let a
    minute hold more images than one cap: the cap is the cluster's, not each worker's."""
    from batcher._admission.grants import Budget
    from batcher._admission.ipm import SharedImageGate
    from batcher._config.limits import LimitTable

    budget = Budget(LimitTable())
    admitted: list[tuple[float, int]] = []

    async def main() -> None:
        clock = VirtualClock()

        async def ask(model: str, now: float, n: int) -> float:
            await anyio.sleep(0.002)  # a round trip to the actor
            return await budget.images(model, now, n, 6)

        async def worker(gate: SharedImageGate, sizes: list[int]) -> None:
            async def one(n: int) -> None:
                await gate.admit(n)
                admitted.append((clock.time(), n))

            async with anyio.create_task_group() as tg:
                for n in sizes:
                    tg.start_soon(one, n)

        async with anyio.create_task_group() as tg:
            for sizes in ([1, 2, 3, 1], [2, 2, 1, 3]):
                tg.start_soon(worker, SharedImageGate("img", ask, clock), sizes)

    run_virtual(main)
    assert sorted(n for _, n in admitted) == sorted([1, 2, 3, 1, 2, 2, 1, 3])
    for t, _ in admitted:
        assert sum(n for s, n in admitted if t - 60 < s <= t) <= 6
    # 15 images under 6 a minute: the last ones wait two minutes, not one per worker
    assert max(t for t, _ in admitted) - min(t for t, _ in admitted) >= 120
