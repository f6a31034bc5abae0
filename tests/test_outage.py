"""Outages in virtual time: the lane pauses and probes instead of burning jobs' attempts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow.parquet as pq
import pytest

from batcher import Outage, Runner, RunOptions, RunSummary
from batcher._admission.outage import FAILURES_IN_A_ROW
from batcher.mock import MockConfig, MockState, create_app
from tests.helpers import read_results, write_jsonl
from tests.virtual import VirtualClock, run_virtual

ROOT = Path(__file__).resolve().parent.parent


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


def _on_the_mock(
    tmp_path: Path, jobs: Path, provider: str = "openai", **options: Any
) -> tuple[RunSummary, MockState]:
    """A run against the mock provider, in process and in virtual time."""
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    base = "http://mock.test/v1beta" if provider == "gemini" else "http://mock.test/v1"
    opts = RunOptions(api_key="k", provider=provider, base_url=base, **options)

    async def main() -> RunSummary:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=app)
        ) as runner:
            return await runner.run()

    return run_virtual(main), app.state


def test_answers_that_never_fit_the_schema_are_the_jobs_errors_not_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 23: the tickets with ``max_tokens`` too small for their JSON, every answer cut off.
    Each answer shows the endpoint is up: every job ends as an ``invalid_output`` row after its
    attempts (exit 1), with no pause and no probe, never as an outage (exit 75, no rows)."""
    tickets = (ROOT / "jobs" / "tickets.jsonl").read_text().splitlines()
    jobs = write_jsonl(
        tmp_path / "tickets.jsonl", [json.loads(line) | {"max_tokens": 5} for line in tickets]
    )
    schema = str(ROOT / "jobs" / "tickets.schema.json")
    summary, state = _on_the_mock(
        tmp_path, jobs, model="gpt-4o-mini", schema=schema, max_outage=10.0
    )
    assert (summary.ok, summary.errors, summary.exit_code) == (0, 5, 1)
    rows = read_results(tmp_path / "out")
    assert len(rows) == 5
    assert {r["error_kind"] for r in rows.values()} == {"invalid_output"}
    assert all(r["attempts"] == 5 for r in rows.values())
    assert state.requests == 25
    assert not [r for r in caplog.records if "not answering" in r.getMessage()]


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_job_invalid_on_every_attempt_gets_exactly_max_attempts(
    tmp_path: Path, provider: str
) -> None:
    """More invalid answers in a row than make an outage, all of them the job's attempts."""
    attempts = FAILURES_IN_A_ROW + 3
    model = "gemini-2.5-flash" if provider == "gemini" else "gpt-4o-mini"
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "bad", "prompt": "Acme [[invalid:99]]"}])
    summary, state = _on_the_mock(
        tmp_path,
        jobs,
        provider,
        model=model,
        schema=str(ROOT / "jobs" / "tickets.schema.json"),
        max_attempts=attempts,
    )
    assert (summary.ok, summary.errors, summary.exit_code) == (0, 1, 1)
    row = read_results(tmp_path / "out")["bad"]
    assert row["status"] == "error" and row["error_kind"] == "invalid_output"
    assert row["attempts"] == attempts
    assert state.requests == attempts


def _under_200(error: dict[str, Any], times: int, prompts: tuple[str, ...] = ("p0",)) -> Any:
    """An OpenAI-compatible proxy that sends ``error`` under HTTP 200 for the first ``times``
    requests of each of ``prompts`` (all of them if empty), and answers every other; it notes
    when each request came, by prompt."""
    sent: dict[str, list[float]] = {}

    def server(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        seen = sent.setdefault(prompt, [])
        seen.append(anyio.current_time())
        if (not prompts or prompt in prompts) and len(seen) <= times:
            return httpx.Response(200, json=error)
        return Downtime(0, 0)(request)

    server.sent = sent  # type: ignore[attr-defined]
    return server


BUSY = {"error": {"message": "upstream model busy, please retry", "type": "server_error"}}


def test_a_server_error_under_http_200_is_retried_with_the_providers_message(
    tmp_path: Path,
) -> None:
    server = _under_200(BUSY, times=99)
    summary = _run(tmp_path, server, jobs=4)
    assert (summary.ok, summary.errors, summary.exit_code) == (3, 1, 1)
    row = read_results(tmp_path / "out")["0"]
    assert row["error_kind"] == "retryable" and row["attempts"] == 3
    assert "upstream model busy, please retry" in row["error"]
    log = [
        a for a in pq.read_table(tmp_path / "out" / "attempts").to_pylist() if a["job_id"] == "0"
    ]
    assert [(a["outcome"], a["http_status"]) for a in log] == [("retryable", 200)] * 3
    assert all("upstream model busy, please retry" in a["error"] for a in log)


def test_server_errors_under_http_200_in_a_row_are_an_outage_as_5xx_are(tmp_path: Path) -> None:
    server = _under_200(BUSY, times=10_000, prompts=())
    with pytest.raises(Outage, match=r"last error: .*upstream model busy, please retry"):
        _run(tmp_path, server, jobs=10, max_outage=60.0)


def test_a_rate_limit_under_http_200_pauses_the_lane_as_a_429_does(tmp_path: Path) -> None:
    limited = {
        "error": {
            "message": "Rate limit reached, please try again in 20s",
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
        }
    }
    server = _under_200(limited, times=1)
    summary = _run(tmp_path, server, jobs=10)
    assert (summary.ok, summary.errors) == (10, 0)
    limited_at = server.sent["p0"][0]
    assert server.sent["p0"][1] - limited_at >= 20.0
    after = [t for times in server.sent.values() for t in times if t > limited_at]
    assert min(after) >= limited_at + 20.0  # the whole lane paused, not just the job
    log = pq.read_table(tmp_path / "out" / "attempts").to_pylist()
    assert [a["outcome"] for a in log if a["job_id"] == "0"] == ["rate_limited", "ok"]


def test_an_invalid_request_under_http_200_is_the_jobs_permanent_error(tmp_path: Path) -> None:
    invalid = {
        "error": {
            "message": "temperature must be at most 2",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    summary = _run(tmp_path, _under_200(invalid, times=99), jobs=4)
    assert (summary.ok, summary.errors, summary.exit_code) == (3, 1, 1)
    row = read_results(tmp_path / "out")["0"]
    assert row["status"] == "error" and row["error_kind"] == "permanent"
    assert row["attempts"] == 1
    assert "temperature must be at most 2" in row["error"]


def test_timeouts_in_a_row_never_bill_a_job_more_than_max_attempts(tmp_path: Path) -> None:
    """Every request times out after leaving (the provider may finish and bill each): the run of
    timeouts makes an outage, yet its probes count as attempts, so no job is sent more than
    --max-attempts times; the attempt log and the summary say they may have been billed."""
    sent: dict[str, int] = {}

    def server(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        sent[prompt] = sent.get(prompt, 0) + 1
        raise httpx.ReadTimeout("timed out", request=request)

    summary = _run(tmp_path, server, jobs=8, max_outage=3600.0)
    assert (summary.ok, summary.errors) == (0, 8)
    assert sent and max(sent.values()) <= 3
    rows = read_results(tmp_path / "out")
    assert {r["error_kind"] for r in rows.values()} == {"timeout"}
    assert summary.timeouts == sum(sent.values()) == sum(r["attempts"] for r in rows.values())
    log = pq.read_table(tmp_path / "out" / "attempts").to_pylist()
    assert {a["outcome"] for a in log} == {"timeout"} and len(log) == summary.timeouts


def test_a_connect_timeout_sent_nothing_and_is_not_a_billed_timeout(tmp_path: Path) -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["messages"][-1]["content"] == "p0":
            raise httpx.ConnectTimeout("timed out", request=request)
        return Downtime(0, 0)(request)

    summary = _run(tmp_path, server, jobs=3)
    assert summary.timeouts == 0
    assert read_results(tmp_path / "out")["0"]["error_kind"] == "retryable"


def test_a_request_that_timed_out_is_tried_again_within_the_time_budget() -> None:
    from batcher._admission.retry import RetryPolicy
    from batcher._core.errors import TimedOut

    clock = VirtualClock()
    tries = 0

    async def fn() -> str:
        nonlocal tries
        tries += 1
        await clock.sleep(600.0)  # the default --timeout, spent waiting
        if tries == 1:
            raise TimedOut("request timed out (read)")
        return "ok"

    policy = RetryPolicy(max_attempts=5, timeout=600.0)
    assert run_virtual(lambda: policy.call(fn, clock=clock)) == "ok" and tries == 2


def test_the_run_summary_says_how_many_timed_out_requests_may_have_been_billed() -> None:
    from batcher._cli.run import _timeouts_line

    summary = RunSummary(
        out="o", total=3, ok=2, errors=1, skipped=0, finished=3, requests=7,
        input_tokens=0, output_tokens=0, elapsed=1.0, timeouts=4,
    )  # fmt: skip
    line = _timeouts_line(summary, "o")
    assert line.startswith("4 timed-out requests may have been billed") and "'timeout'" in line


def test_the_default_timeout_outlasts_a_long_generation() -> None:
    assert RunOptions().requests.timeout == 600.0  # OpenAI's SDK's read timeout
