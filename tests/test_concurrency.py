"""How many requests a run keeps in flight: as many as the lanes' rate times the answers' time
needs (Little's law), so slow answers do not cap the rate; ``--max-concurrency`` bounds it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batcher import Runner, RunOptions
from batcher._config.options import UNPACED
from tests.helpers import read_results
from tests.virtual import VirtualClock, run_virtual


class SlowServer:
    """Answers each request after ``latency`` virtual seconds (uniform in a range); counts how
    many are in flight at once."""

    def __init__(self, low: float, high: float, seed: int = 1) -> None:
        self.low, self.high = low, high
        self.rng = random.Random(seed)
        self.in_flight = 0
        self.peak = 0
        self.sent: list[float] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(anyio.current_time())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(self.rng.uniform(self.low, self.high))
        finally:
            self.in_flight -= 1
        prompt = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": f"re: {prompt}"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 300},
            },
        )


def _run(out: Path, server: SlowServer, n: int, **options: Any) -> tuple[float, int]:
    """Run ``n`` jobs in virtual time; (seconds it took, the runner's peak in flight)."""
    jobs = [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(n)]
    clock = VirtualClock()

    async def main() -> tuple[float, int]:
        opts = RunOptions(api_key="k", model="m", base_url="http://p.test/v1", **options)
        transport = httpx.MockTransport(server)
        async with Runner(jobs, out, opts, clock=clock, transport=transport) as runner:
            summary = await runner.run()
            assert (summary.ok, summary.exit_code) == (n, 0)
            return anyio.current_time(), runner.peak_in_flight()

    return run_virtual(main)


@pytest.mark.parametrize(
    ("rpm", "low", "high"),
    [(1_200, 2.0, 4.0), (600, 10.0, 30.0)],
)
def test_slow_answers_still_reach_the_ceiling_with_no_flag(
    tmp_path: Path, rpm: int, low: float, high: float
) -> None:
    """Two minutes of jobs at the limit: the run takes two minutes and the answer time of the
    last ones (plus the lane's opening), where a fixed 16 in flight would take many times that."""
    server = SlowServer(low, high)
    n = rpm * 2
    took, peak = _run(tmp_path, server, n, rpm=rpm)
    assert len(server.sent) == n
    assert set(read_results(tmp_path)) == {f"j{i}" for i in range(n)}
    ideal = 60.0 * n / rpm
    # sending at 0.99 of the limit after the lane opens (2 s), then the last answers
    assert took <= ideal / 0.99 + 2.0 + high + 1.0, took
    # rate x answer time were in flight, not far more: about rpm/60 x mean latency
    little = rpm / 60 * (low + high) / 2
    assert 0.8 * little <= server.peak <= 2.0 * little, (server.peak, little)
    assert peak == server.peak
    # every minute's sends stay within the limit
    times = sorted(server.sent)
    for i, t in enumerate(times):
        j = i + rpm
        assert j >= len(times) or times[j] >= t + 60.0


def test_max_concurrency_is_an_upper_bound(tmp_path: Path) -> None:
    server = SlowServer(10.0, 30.0)
    took, peak = _run(tmp_path, server, 200, rpm=600, max_concurrency=24)
    assert server.peak == peak == 24
    assert took >= 200 / 24 * 10.0  # the bound, not the limit, set the pace


def test_a_lane_no_limit_paces_keeps_the_default_in_flight(tmp_path: Path) -> None:
    server = SlowServer(1.0, 2.0)
    _, peak = _run(tmp_path, server, 200)
    assert server.peak == peak == UNPACED


def test_without_a_limit_an_explicit_max_concurrency_is_what_is_in_flight(tmp_path: Path) -> None:
    server = SlowServer(1.0, 2.0)
    _, peak = _run(tmp_path, server, 300, max_concurrency=64)
    assert server.peak == peak == 64
