"""The run loop through ``httpx.MockTransport``: retries, errors, results, the key kept secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from batcher import FatalProviderError, Job, Runner, RunOptions, RunSummary
from tests.helpers import read_results
from tests.virtual import VirtualClock, run_virtual

SECRET = "sk-test-SECRET-0123456789"


def _ok(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    prompt = body["messages"][-1]["content"]
    return httpx.Response(
        200,
        json={
            "model": body["model"],
            "choices": [
                {
                    "message": {"role": "assistant", "content": prompt.upper()},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": 0},
        },
    )


def _flaky(failures: dict[str, list[httpx.Response]]) -> Callable[[httpx.Request], httpx.Response]:
    """Answer each prompt's queued failures first, then succeed."""

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        queue = failures.get(prompt)
        if queue:
            return queue.pop(0)
        return _ok(request)

    return handler


def _run(
    tmp_path: Path,
    jobs: list[Any],
    handler: Callable[[httpx.Request], httpx.Response],
    clock: VirtualClock | None = None,
    **options: Any,
) -> RunSummary:
    """A run in virtual time: retries' and the server's delays pass without real waiting."""
    opts = RunOptions(api_key=SECRET, model="m", base_url="http://provider.test/v1", **options)

    async def main() -> RunSummary:
        async with Runner(
            jobs,
            tmp_path / "out",
            opts,
            clock=clock or VirtualClock(),
            transport=httpx.MockTransport(handler),
        ) as runner:
            return await runner.run()

    return run_virtual(main)


def test_jobs_from_python_objects(tmp_path: Path) -> None:
    jobs = [Job.from_prompt("a", "hello", system="be brief"), {"id": "b", "prompt": "world"}]
    summary = _run(tmp_path, jobs, _ok)
    assert (summary.total, summary.ok, summary.errors, summary.exit_code) == (2, 2, 0, 0)
    results = read_results(tmp_path / "out")
    assert results["a"]["text"] == "HELLO" and results["b"]["text"] == "WORLD"
    assert results["a"]["input_tokens"] == 5 and results["a"]["attempts"] == 1


def test_retryable_errors_are_retried_and_every_attempt_counted(tmp_path: Path) -> None:
    clock = VirtualClock()
    failures = {
        "flaky": [
            httpx.Response(503, json={"error": {"message": "overloaded"}}),
            httpx.Response(500, content=b"<html>oops</html>"),
        ],
        "limited": [
            httpx.Response(
                429, headers={"retry-after": "7"}, json={"error": {"message": "slow down"}}
            )
        ],
    }
    sent: list[tuple[str, float]] = []
    answer = _flaky(failures)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((json.loads(request.content)["messages"][-1]["content"], clock.monotonic()))
        return answer(request)

    summary = _run(
        tmp_path,
        [{"id": "f", "prompt": "flaky"}, {"id": "l", "prompt": "limited"}],
        handler,
        clock,
    )
    assert summary.exit_code == 0
    results = read_results(tmp_path / "out")
    assert results["f"]["attempts"] == 3 and results["f"]["text"] == "FLAKY"
    assert results["l"]["attempts"] == 2
    limited = [t for prompt, t in sent if prompt == "limited"]
    assert limited[1] - limited[0] >= 7.0  # the server's delay, not a computed one


def test_permanent_error_is_recorded_once_and_not_retried(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        seen.append(prompt)
        if prompt == "bad":
            return httpx.Response(400, json={"error": {"message": "invalid 'temperature'"}})
        return _ok(request)

    summary = _run(tmp_path, [{"id": "x", "prompt": "bad"}, {"id": "y", "prompt": "good"}], handler)
    assert (summary.ok, summary.errors, summary.exit_code) == (1, 1, 1)
    assert seen.count("bad") == 1
    row = read_results(tmp_path / "out")["x"]
    assert row["status"] == "error" and row["attempts"] == 1 and row["text"] is None
    assert row["error"] == "HTTP 400: invalid 'temperature'" and row["error_kind"] == "permanent"


def test_retries_stop_at_max_attempts_with_the_last_cause(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    summary = _run(tmp_path, [{"id": "x", "prompt": "p"}], handler, max_attempts=3)
    row = read_results(tmp_path / "out")["x"]
    assert summary.exit_code == 1
    assert row["attempts"] == 3 and row["error_kind"] == "retryable"
    assert "connection failed (ConnectError" in row["error"]


def test_fatal_error_stops_the_run_and_keeps_the_key_secret(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {SECRET}"
        return httpx.Response(
            401,
            json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}},
        )

    jobs = [{"id": str(i), "prompt": f"p{i}"} for i in range(50)]
    with pytest.raises(FatalProviderError, match="invalid_api_key") as info:
        _run(tmp_path, jobs, handler, max_concurrency=4)
    assert SECRET not in str(info.value)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_key_is_never_written_to_results(tmp_path: Path) -> None:
    _run(tmp_path, [{"id": "a", "prompt": "x"}], _ok)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


def test_a_second_run_sends_nothing_already_finished(tmp_path: Path) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["messages"][-1]["content"])
        return _ok(request)

    jobs = [{"id": str(i), "prompt": f"p{i}"} for i in range(10)]
    _run(tmp_path, jobs[:6], handler)
    summary = _run(tmp_path, jobs, handler)
    assert sorted(sent) == sorted(f"p{i}" for i in range(10))
    assert (summary.skipped, summary.finished, summary.ok) == (6, 4, 10)
    assert len(read_results(tmp_path / "out")) == 10


def test_a_fatal_answer_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    import anyio

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["model"] == "gone":
            return httpx.Response(
                404, json={"error": {"message": "no such model", "code": "model_not_found"}}
            )
        await anyio.sleep(0.2)  # still in flight when the 404 arrives
        return _ok(request)

    jobs = [
        {"id": "slow", "prompt": "slow one", "model": "here"},
        {"id": "x", "prompt": "x", "model": "gone"},
    ]
    jobs += [{"id": f"later{i}", "prompt": "later", "model": "here"} for i in range(20)]
    opts = RunOptions(api_key=SECRET, base_url="http://provider.test/v1", max_concurrency=4)

    async def main() -> None:
        async with Runner(
            jobs, tmp_path / "out", opts, transport=httpx.MockTransport(handler)
        ) as runner:
            await runner.run()

    with pytest.raises(FatalProviderError, match="model 'gone' is not available"):
        run_virtual(main)
    assert set(read_results(tmp_path / "out")) == {"slow"}


def test_a_key_echoed_by_the_server_is_redacted(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": f"bad request with key {SECRET}"}})

    _run(tmp_path, [{"id": "a", "prompt": "x"}], handler)
    row = read_results(tmp_path / "out")["a"]
    assert row["error"] == "HTTP 400: bad request with key [API key]"
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
