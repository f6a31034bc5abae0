"""Outages in virtual time: the lane pauses and probes instead of burning jobs' attempts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batcher import Outage, Runner, RunOptions, RunSummary
from tests.helpers import read_results
from tests.virtual import VirtualClock, run_virtual


class Downtime:
    """An endpoint that refuses connections from ``start`` to ``end`` (loop seconds)."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.refused: list[float] = []
        self.answered = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        now = anyio.current_time()
        if self.start <= now < self.end:
            self.refused.append(now)
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        self.answered += 1
        prompt = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(
            200,
            json={
                "model": "m",
                "choices": [{"message": {"content": prompt}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )


def _run(
    tmp_path: Path, server: Callable[[httpx.Request], httpx.Response], jobs: int, **options: Any
) -> RunSummary:
    opts = RunOptions(
        api_key="k", model="m", base_url="http://p.test/v1", rpm=600, max_attempts=3, **options
    )

    async def main() -> RunSummary:
        async with Runner(
            [{"id": str(i), "prompt": f"p{i}"} for i in range(jobs)],
            tmp_path / "out",
            opts,
            clock=VirtualClock(),
            transport=httpx.MockTransport(server),
        ) as runner:
            return await runner.run()

    return run_virtual(main)


def test_an_outage_of_minutes_costs_no_job_and_spends_no_attempts(tmp_path: Path) -> None:
    server = Downtime(start=2.0, end=300.0)  # down for five minutes from the 2nd second
    summary = _run(tmp_path, server, jobs=60)
    assert (summary.ok, summary.errors, summary.exit_code) == (60, 0, 0)
    rows = read_results(tmp_path / "out")
    assert all(r["status"] == "ok" for r in rows.values())
    # during the outage only probes went out, one at a time at growing intervals (not 60 jobs
    # times 3 attempts), and every request sent is counted in some job's attempts
    assert len(server.refused) < 25
    gaps = [b - a for a, b in zip(server.refused, server.refused[1:], strict=False)]
    assert max(gaps) >= 30  # the probes' interval grew
    assert sum(r["attempts"] for r in rows.values()) == len(server.refused) + server.answered


def test_an_outage_longer_than_max_outage_stops_the_run_and_keeps_what_finished(
    tmp_path: Path,
) -> None:
    server = Downtime(start=2.0, end=10_000.0)
    with pytest.raises(Outage, match=r"unreachable for 2 min") as info:
        _run(tmp_path, server, jobs=60, max_outage=120.0)
    assert "rerun the same command" in str(info.value)
    rows = read_results(tmp_path / "out")
    assert rows and all(r["status"] == "ok" for r in rows.values())  # nothing recorded as error
    assert len(rows) < 60


def test_a_single_jobs_own_failures_still_use_up_its_attempts(tmp_path: Path) -> None:
    def server(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        if prompt == "p0":
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return Downtime(0, 0)(request)

    summary = _run(tmp_path, server, jobs=20)
    row = read_results(tmp_path / "out")["0"]
    assert (summary.ok, summary.errors) == (19, 1)
    assert row["attempts"] == 3 and row["error_kind"] == "retryable"
