"""One lane alone at a high rate, on the real clock: no HTTP, no mock, no journal.

Workers take requests through a lane quantized per second (OpenAI's) and hold each for an
"answer" of 20-200 ms; the lane's admissions per second against its pace, the CPU each costs,
and how late the loop's sleeps wake (how long the process waits for the CPU past a timer): what
is left of the rate before anything else of a run is counted.

    python benchmarks/lane_pace.py [--rpm 30000] [--requests 8000] [--workers 120]
"""

from __future__ import annotations

import argparse
import random
import time

import anyio

from batcher._admission.lane import Lane
from batcher._admission.pace import MARGIN
from batcher._config.limits import Limits
from batcher._core.clock import SystemClock


class _Timed(SystemClock):
    """The system clock, noting how late each sleep woke."""

    def __init__(self) -> None:
        self.late: list[float] = []

    async def sleep(self, seconds: float) -> None:
        due = self.monotonic() + seconds
        await anyio.sleep(seconds)
        self.late.append(self.monotonic() - due)


async def _main(rpm: int, n: int, workers: int) -> None:
    clock = _Timed()
    lane = Lane("m", Limits(rpm=rpm), clock, per_second=True)
    rng = random.Random(1)
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            async with lane.request(1) as slot:
                await anyio.sleep(rng.uniform(0.02, 0.2))
                slot.done(1)

    cpu, wall = time.process_time(), time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    pace = rpm * MARGIN / 60
    late = sorted(clock.late) or [0.0]
    q = [1000 * late[min(len(late) - 1, int(len(late) * p))] for p in (0.5, 0.9, 0.99)]
    print(
        f"{n} admissions at {rpm:,} RPM: {n / wall:.0f}/s against a pace of {pace:.0f}/s"
        f" ({n / wall / pace:.3f}), {cpu / n * 1e6:.0f} us CPU each; sleeps woke late by"
        f" p50 {q[0]:.1f} ms, p90 {q[1]:.1f} ms, p99 {q[2]:.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpm", type=int, default=30_000)
    ap.add_argument("--requests", type=int, default=8_000)
    ap.add_argument("--workers", type=int, default=120)
    args = ap.parse_args()
    anyio.run(_main, args.rpm, args.requests, args.workers)


if __name__ == "__main__":
    main()
