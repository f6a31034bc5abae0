"""Resuming a run: redoing errors and changed jobs, refusing to mix runs, the daily reset."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from batcher import Runner, RunOptions, RunSummary, UsageError
from tests.helpers import read_results
from tests.virtual import EPOCH, VirtualClock, run_virtual

pytestmark = pytest.mark.anyio


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("bad"):
        return httpx.Response(400, json={"error": {"message": "bad request"}})
    return httpx.Response(
        200,
        json={
            "choices": [{"message": {"content": f"re: {prompt}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        },
    )


class Server:
    """A MockTransport that records what it was sent."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] = _answer) -> None:
        self.sent: list[tuple[str, float]] = []
        self.answer = answer
        self.clock: Any = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        self.sent.append((prompt, self.clock.time() if self.clock else time.time()))
        return self.answer(request)


async def _run(out: Path, jobs: list[dict[str, Any]], server: Server, **options: Any) -> RunSummary:
    opts = RunOptions(api_key="k", model="m", base_url="http://p.test/v1", **options)
    async with Runner(jobs, out, opts, transport=httpx.MockTransport(server)) as runner:
        return await runner.run()


async def test_retry_errors_replaces_the_old_rows(tmp_path: Path) -> None:
    server = Server()
    jobs = [{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "bad one"}]
    assert (await _run(tmp_path, jobs, server)).exit_code == 1
    assert (await _run(tmp_path, jobs, server)).finished == 0  # errors stay finished
    server.answer = lambda r: (
        _answer(r)
        if b"bad" not in r.content
        else httpx.Response(200, json={"choices": [{"message": {"content": "fixed"}}], "usage": {}})
    )
    summary = await _run(tmp_path, jobs, server, retry_errors=True)
    assert (summary.finished, summary.exit_code) == (1, 0)
    rows = read_results(tmp_path)
    assert rows["b"]["status"] == "ok" and rows["b"]["text"] == "fixed"
    assert [p for p, _ in server.sent] == ["fine", "bad one", "bad one"]


async def test_changed_jobs_are_reported_and_kept_unless_redo_changed(tmp_path: Path) -> None:
    server = Server()
    await _run(tmp_path, [{"id": "a", "prompt": "v1"}, {"id": "b", "prompt": "same"}], server)
    changed = [
        {"id": "a", "prompt": "v2"},
        {"id": "b", "prompt": "same"},
        {"id": "c", "prompt": "new"},
    ]
    opts = RunOptions(api_key="k", model="m", base_url="http://p.test/v1")
    async with Runner(changed, tmp_path, opts, transport=httpx.MockTransport(server)) as runner:
        assert runner.changed == ["a"]
        summary = await runner.run()
    assert summary.finished == 1  # only the new id
    assert read_results(tmp_path)["a"]["text"] == "re: v1"
    await _run(tmp_path, changed, server, redo_changed=True)
    assert read_results(tmp_path)["a"]["text"] == "re: v2"
    assert [p for p, _ in server.sent] == ["v1", "same", "new", "v2"]


async def test_a_directory_refuses_another_provider_or_model(tmp_path: Path) -> None:
    server = Server()
    await _run(tmp_path, [{"id": "a", "prompt": "x"}], server)
    with pytest.raises(UsageError, match="--model m, and this one asks for other"):
        opts = RunOptions(api_key="k", model="other", base_url="http://p.test/v1")
        async with Runner([{"id": "a", "prompt": "x"}], tmp_path, opts):
            pass
    with pytest.raises(UsageError, match="--provider openai"):
        opts = RunOptions(api_key="k", model="m", provider="gemini", base_url="http://p.test")
        async with Runner([{"id": "a", "prompt": "x"}], tmp_path, opts):
            pass


def test_a_run_that_spends_its_rpd_at_2359_waits_for_midnight_and_finishes(tmp_path: Path) -> None:
    """In virtual time: a day of waiting passes in well under a second of real time."""
    clock = VirtualClock(start=EPOCH - 60)  # 23:59 Pacific
    server = Server()
    server.clock = clock
    jobs = [{"id": str(i), "prompt": f"p{i}"} for i in range(8)]

    async def main() -> RunSummary:
        opts = RunOptions(api_key="k", model="m", base_url="http://p.test/v1", rpd=5)
        async with Runner(
            jobs, tmp_path, opts, clock=clock, transport=httpx.MockTransport(server)
        ) as runner:
            return await runner.run()

    summary = run_virtual(main)  # virtual: the wait for midnight is the clock's, not ours
    assert (summary.ok, summary.exit_code) == (8, 0)
    times = sorted(t for _, t in server.sent)
    assert all(t < EPOCH for t in times[:5])
    assert all(EPOCH <= t < EPOCH + 60 for t in times[5:])  # right after midnight Pacific
    ledger = json.loads((tmp_path / "ledger.json").read_text())["models"]["m"]
    assert ledger == {"day": "2027-01-15", "count": 3}


def test_the_ledger_carries_todays_spend_across_restarts(tmp_path: Path) -> None:
    clock = VirtualClock(start=EPOCH + 3600)
    server = Server()
    server.clock = clock

    async def once(ids: range) -> RunSummary:
        jobs = [{"id": str(i), "prompt": f"p{i}"} for i in ids]
        opts = RunOptions(
            api_key="k", model="m", base_url="http://p.test/v1", rpd=5, on_daily_limit="exit"
        )
        async with Runner(
            jobs, tmp_path, opts, clock=clock, transport=httpx.MockTransport(server)
        ) as runner:
            return await runner.run()

    first = run_virtual(lambda: once(range(3)))
    second = run_virtual(lambda: once(range(10)))
    assert (first.ok, second.ok, second.deferred, second.exit_code) == (3, 5, 5, 3)
    assert "the day's 5 requests are spent" in second.quota_stops[0]
    assert len(server.sent) == 5


def test_other_models_keep_going_while_one_waits_for_its_reset(tmp_path: Path) -> None:
    clock = VirtualClock(start=EPOCH - 3600)  # 23:00 Pacific
    server = Server()
    server.clock = clock
    limits = tmp_path / "limits.toml"
    limits.write_text('["slow"]\nrpd = 2\n')
    jobs = [{"id": f"s{i}", "prompt": f"slow {i}", "model": "slow"} for i in range(4)]
    jobs += [{"id": f"f{i}", "prompt": f"fast {i}", "model": "fast"} for i in range(20)]

    async def main() -> RunSummary:
        opts = RunOptions(api_key="k", base_url="http://p.test/v1", limits_file=str(limits))
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.MockTransport(server)
        ) as runner:
            return await runner.run()

    summary = run_virtual(main)
    assert summary.ok == 24
    before = [p for p, t in server.sent if t < EPOCH]
    after = [p for p, t in server.sent if t >= EPOCH]
    assert sorted(p for p in before if p.startswith("fast")) == sorted(
        f"fast {i}" for i in range(20)
    )
    assert len([p for p in before if p.startswith("slow")]) == 2
    assert sorted(after) == ["slow 2", "slow 3"]


def test_the_wait_for_the_reset_is_said_once_with_its_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the CLI prints by default (its ``batcher`` logger is at INFO): a run that waits for
    the daily reset says so, once, naming when the quota resets."""
    clock = VirtualClock(start=EPOCH - 3600)  # 23:00 Pacific
    server = Server()
    server.clock = clock
    jobs = [{"id": f"s{i}", "prompt": f"slow {i}"} for i in range(4)]

    async def main() -> RunSummary:
        opts = RunOptions(api_key="k", model="m", base_url="http://p.test/v1", rpd=2)
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.MockTransport(server)
        ) as runner:
            return await runner.run()

    with caplog.at_level("INFO", logger="batcher"):
        summary = run_virtual(main)
    assert summary.ok == 4
    said = [r for r in caplog.records if "waiting for the daily quota" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "INFO"
    assert "the day's 2 requests are spent; the quota resets at" in said[0].getMessage()
