"""Batch mode end to end against the mock's batch APIs: the same rows as online, exactly once
across crashes at every step, retries into later batches, ``--no-wait``, ``auto``, cancelling."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher import Runner, RunOptions, RunSummary
from batcher._engine.batchapi import STEPS
from batcher._progress import format_line
from batcher._rundir.batchlog import BatchLog
from batcher._wire.providers._gemini_batch import GeminiBatch
from batcher._wire.providers._openai_batch import OpenAIBatch
from batcher.mock import MockConfig, MockServer, create_app
from tests.helpers import (
    killed_at_step,
    mock_stats,
    read_results,
    run_cli,
    run_command,
    write_jsonl,
)
from tests.virtual import VirtualClock, run_virtual


def _jobs(tmp_path: Path, n: int, extra: dict[int, str] | None = None) -> Path:
    rows = [{"id": f"j{i}", "prompt": f"hello {i} {(extra or {}).get(i, '')}"} for i in range(n)]
    return write_jsonl(tmp_path / "jobs.jsonl", rows)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_batch_rows_equal_online_rows(
    tmp_path: Path,
    start_mock: Callable[[MockConfig], MockServer],
    api_keys: None,
    provider: str,
) -> None:
    jobs = _jobs(tmp_path, 6, {2: "[[fail:400]]"})
    server = start_mock(MockConfig())
    flags = ("--model", "gpt-4o-mini" if provider == "openai" else "gemini-2.5-flash")
    assert run_cli(server, provider, jobs, tmp_path / "on", *flags) == 1
    assert run_cli(server, provider, jobs, tmp_path / "b", *flags, "--mode", "batch") == 1
    online, batch = read_results(tmp_path / "on"), read_results(tmp_path / "b")
    assert set(online) == set(batch) == {f"j{i}" for i in range(6)}
    for job_id, row in online.items():
        other = batch[job_id]
        for column in ("status", "text", "error", "error_kind", "input_tokens", "fingerprint"):
            assert row[column] == other[column], (job_id, column)
        assert (row["via"], other["via"]) == ("online", "batch")
        assert other["attempts"] == 1
        assert other["cost_usd"] == pytest.approx(row["cost_usd"] / 2)  # half the price
    assert batch["j2"]["error_kind"] == "permanent" and batch["j0"]["cost_usd"] > 0
    line = json.loads(batch["j0"]["response"])  # the raw batch line
    assert line.get("custom_id") == "j0" or line.get("metadata") == {"key": "j0"}
    assert len(mock_stats(server)["batch_creates"]) == 1


@pytest.mark.parametrize("limit", ["inline_bytes", "inline_requests"])
def test_gemini_batches_over_the_inline_limit_go_as_files(
    tmp_path: Path,
    start_mock: Callable[[MockConfig], MockServer],
    api_keys: None,
    monkeypatch: pytest.MonkeyPatch,
    limit: str,
) -> None:
    monkeypatch.setattr(GeminiBatch, limit, 3)  # bytes: none fits; requests: 4 jobs are over
    jobs = _jobs(tmp_path, 4, {1: "[[fail:400]]"})
    server = start_mock(MockConfig())
    flags = ("--model", "m")
    assert run_cli(server, "gemini", jobs, tmp_path / "on", *flags) == 1
    assert run_cli(server, "gemini", jobs, tmp_path / "b", *flags, "--mode", "batch") == 1
    online, batch = read_results(tmp_path / "on"), read_results(tmp_path / "b")
    for job_id, row in online.items():
        for column in ("status", "text", "error", "error_kind", "input_tokens"):
            assert row[column] == batch[job_id][column], (job_id, column)
    assert json.loads(batch["j0"]["response"])["key"] == "j0"  # a line of the responses file
    batches = server._pipeline.batches
    assert [b.input_file_id for b in batches.batches.values()] == ["files/mock000001"]


def test_gemini_answers_without_keys_are_matched_by_order(
    tmp_path: Path, start_mock: Callable[[MockConfig], MockServer], api_keys: None
) -> None:
    jobs = _jobs(tmp_path, 5)
    server = start_mock(MockConfig(batch_omit_keys=True))
    assert run_cli(server, "gemini", jobs, tmp_path / "o", "--model", "m", "--mode", "batch") == 0
    rows = read_results(tmp_path / "o")
    for i in range(5):
        assert rows[f"j{i}"]["text"].endswith(f"hello {i} ")


class Crash(Exception):
    """Raised at a named step, standing for the process dying there."""


def _virtual_run(
    tmp_path: Path,
    jobs: Path,
    app: Any,
    clock: VirtualClock,
    crash_at: str | None = None,
    mode: str = "batch",
    hook: Callable[[str], None] | None = None,
    **options: Any,
) -> RunSummary:
    options.setdefault("base_url", "http://mock.test/v1")
    opts = RunOptions(api_key="k", model="m", mode=mode, **options)

    def step(name: str) -> None:
        if name == crash_at:
            raise Crash(name)
        if hook is not None:
            hook(name)

    async def main() -> RunSummary:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=app)
        ) as runner:
            if runner._batch is not None:
                runner._batch.step = step
            return await runner.run()

    return run_virtual(main)


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_every_step_loses_nothing_and_pays_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setattr(OpenAIBatch, "max_requests", 4)  # 10 jobs: three chunks
    jobs = _jobs(tmp_path, 10, {5: "[[fail:400]]"})
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, app, clock, crash_at=step, poll_interval=60.0)
    summary = _virtual_run(tmp_path, jobs, app, clock, poll_interval=60.0)
    rows = read_results(tmp_path / "out")
    assert set(rows) == {f"j{i}" for i in range(10)}
    assert summary.exit_code == 1 and rows["j5"]["status"] == "error"
    assert all(r["via"] == "batch" for r in rows.values())
    creates = app.state.batch_creates
    assert len(creates) == len(set(creates)) == 3  # no chunk submitted twice
    assert app.state.batch_lines == 10  # no job paid for twice
    assert not BatchLog(tmp_path / "out").open_chunks()


def _uploads(app: Any, seen: list[int], cut_at: int | None = None) -> Any:
    """``app`` counting the batch input files uploaded to it (OpenAI's ``POST /files``) in
    ``seen``; the upload numbered ``cut_at`` (from 1) stops after its first piece arrives, the
    process standing for one that died mid-upload (the file never reaches the provider)."""

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        upload = scope["type"] == "http" and scope["method"] == "POST"
        if upload and scope["path"].endswith("/files"):
            seen.append(len(seen) + 1)
            if seen[-1] == cut_at:
                await receive()  # part of the body is in: the rest never comes
                raise Crash("upload")
        await app(scope, receive, send)

    return counted


def test_a_file_uploaded_before_a_crash_is_not_uploaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its id is recorded before the create call: the rerun creates the batch of that file."""
    monkeypatch.setattr(OpenAIBatch, "max_requests", 4)  # 10 jobs: three chunks
    jobs = _jobs(tmp_path, 10)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    uploads: list[int] = []
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, _uploads(app, uploads), clock, crash_at="uploaded")
    assert len(uploads) == 1 and not app.state.batch_creates
    assert _virtual_run(tmp_path, jobs, _uploads(app, uploads), clock).ok == 10
    assert len(uploads) == 3  # the first chunk's file was not sent again
    creates = app.state.batch_creates
    assert len(creates) == len(set(creates)) == 3 and app.state.batch_lines == 10
    batches = app.pipeline.batches.batches.values()
    assert len({b.input_file_id for b in batches}) == 3
    assert not (tmp_path / "out" / "batch-files").exists() or not any(
        p for p in (tmp_path / "out" / "batch-files").iterdir() if not p.name.startswith(".")
    )  # a closed chunk's files are removed


def test_a_kill_mid_upload_uploads_that_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose upload did not finish has no id recorded: the rerun uploads it again, and
    every chunk still becomes one batch."""
    monkeypatch.setattr(OpenAIBatch, "max_requests", 4)
    jobs = _jobs(tmp_path, 10)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    uploads: list[int] = []
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, _uploads(app, uploads, cut_at=2), clock)
    assert len(app.state.batch_creates) == 1  # the first chunk's batch; the second's file cut
    log = BatchLog(tmp_path / "out")
    assert [c.file is not None for c in log.chunks.values()] == [True, False]
    assert _virtual_run(tmp_path, jobs, _uploads(app, uploads), clock).ok == 10
    assert len(uploads) == 4  # the cut one again, then the third chunk's
    creates = app.state.batch_creates
    assert len(creates) == len(set(creates)) == 3 and app.state.batch_lines == 10


@pytest.mark.parametrize("step", ["recorded", "polled"])
def test_a_chunk_recorded_without_its_files_is_sent_and_collected_from_the_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A directory an earlier version left has open chunks but no DIR/batch-files: their jobs
    are read from the inputs again, and every job still ends exactly once."""
    monkeypatch.setattr(OpenAIBatch, "max_requests", 4)
    jobs = _jobs(tmp_path, 10)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, app, clock, crash_at=step, poll_interval=60.0)
    shutil.rmtree(tmp_path / "out" / "batch-files")
    assert _virtual_run(tmp_path, jobs, app, clock, poll_interval=60.0).ok == 10
    creates = app.state.batch_creates
    assert len(creates) == len(set(creates)) == 3 and app.state.batch_lines == 10
    rows = read_results(tmp_path / "out")
    assert all(rows[f"j{i}"]["text"].endswith(f"hello {i} ") for i in range(10))


@pytest.mark.parametrize("inline", [True, False])
def test_gemini_batch_lost_in_the_create_call_is_found_by_its_display_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    if not inline:
        monkeypatch.setattr(GeminiBatch, "inline_bytes", 0)
    jobs = _jobs(tmp_path, 5)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    options = {"provider": "gemini", "base_url": "http://mock.test/v1beta"}
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, app, clock, crash_at="created", **options)
    assert _virtual_run(tmp_path, jobs, app, clock, **options).ok == 5
    assert len(app.state.batch_creates) == 1 and app.state.batch_lines == 5


def test_polling_waits_on_the_clock_and_records_states(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3 * 3600.0), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, poll_interval=600.0)
    assert summary.exit_code == 0
    # a look right after the submission, 2 s later, then at twice the batch's age each time until
    # the gap is the poll interval: three hours of ten-minute looks after that, no real waiting
    assert clock.sleeps[:10] == [2.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    assert clock.sleeps[10:] == [600.0] * 17 and sum(clock.sleeps) >= 3 * 3600
    events = (tmp_path / "out" / "batches.jsonl").read_text().splitlines()
    states = [json.loads(e)["state"] for e in events if '"state"' in e]
    assert states == ["in_progress", "completed"]


def test_retryable_lines_go_into_later_batches_until_max_attempts(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 4, {1: "[[flaky:1]]", 2: "[[batch:expire]]"})
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, max_attempts=3, poll_interval=60.0)
    rows = read_results(tmp_path / "out")
    assert (rows["j0"]["status"], rows["j0"]["attempts"]) == ("ok", 1)
    assert (rows["j1"]["status"], rows["j1"]["attempts"]) == ("ok", 2)  # a 503, then ok
    assert (rows["j2"]["status"], rows["j2"]["attempts"]) == ("error", 3)
    assert rows["j2"]["error_kind"] == "retryable" and "batch_expired" in rows["j2"]["error"]
    assert summary.exit_code == 1
    assert len(app.state.batch_creates) == 3


def test_retry_errors_sends_failed_batch_jobs_again(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3, {0: "[[flaky:1]]"})
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    first = _virtual_run(tmp_path, jobs, app, clock, max_attempts=1)
    assert first.exit_code == 1 and read_results(tmp_path / "out")["j0"]["status"] == "error"
    again = _virtual_run(tmp_path, jobs, app, clock, max_attempts=1, retry_errors=True)
    rows = read_results(tmp_path / "out")
    assert again.exit_code == 0 and rows["j0"]["status"] == "ok" and len(rows) == 3
    assert len(app.state.batch_creates) == 2


def test_no_wait_exits_6_and_a_rerun_collects(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3600.0), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, no_wait=True)
    assert (summary.exit_code, summary.batches_pending, summary.ok) == (6, 1, 0)
    from batcher._cli.status import read_status

    lines = read_status(tmp_path / "out", clock.start + 60).lines()
    assert any(line.startswith("batch batch_mock") and "in_progress" in line for line in lines)
    clock.start += 7200  # the next morning's rerun
    summary = _virtual_run(tmp_path, jobs, app, clock, no_wait=True)
    assert (summary.exit_code, summary.ok) == (0, 3)
    assert len(app.state.batch_creates) == 1


def test_cancel_batches_keeps_the_jobs_for_a_later_run(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3600.0), clock=clock.time)
    assert _virtual_run(tmp_path, jobs, app, clock, no_wait=True).exit_code == 6
    summary = _virtual_run(tmp_path, jobs, app, clock, cancel_batches=True)
    assert (summary.exit_code, summary.finished) == (0, 0)
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["cancelled"]
    assert not BatchLog(tmp_path / "out").open_chunks()
    summary = _virtual_run(tmp_path, jobs, app, clock, batch_min=0)
    assert summary.ok == 3 and len(app.state.batch_creates) == 2


def test_auto_finishes_late_batches_online(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 4)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=10 * 3600.0), clock=clock.time)
    summary = _virtual_run(
        tmp_path,
        jobs,
        app,
        clock,
        mode="auto",
        batch_deadline=3600.0,
        batch_min=1,
        poll_interval=600.0,
    )
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 0 and len(rows) == 4
    assert {r["via"] for r in rows.values()} == {"online"}
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["cancelled"]
    assert app.state.accepted == 4  # online requests
    assert 3600 <= sum(clock.sleeps) < 2 * 3600  # cancelled just past the deadline


def test_auto_batches_and_finishes_failed_lines_online(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 4, {1: "[[batch:expire]]"})
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, mode="auto", batch_min=1)
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 0
    assert {i: r["via"] for i, r in rows.items()} == {
        "j0": "batch",
        "j1": "online",
        "j2": "batch",
        "j3": "batch",
    }


def test_auto_sends_few_jobs_online_directly(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, mode="auto")
    assert summary.ok == 3 and not app.state.batch_creates
    assert {r["via"] for r in read_results(tmp_path / "out").values()} == {"online"}


@pytest.mark.parametrize("step", STEPS)
def test_kill_9_at_every_step_then_a_rerun_finishes_exactly_once(
    tmp_path: Path, start_mock: Callable[[MockConfig], MockServer], api_keys: None, step: str
) -> None:
    jobs = _jobs(tmp_path, 5, {3: "[[fail:400]]"})
    server = start_mock(MockConfig(batch_delay=0.3))
    out = tmp_path / "out"
    flags = ("--model", "m", "--mode", "batch", "--poll-interval", "0.1")
    command = run_command(jobs, out, server.base_url("openai"), *flags)
    killed = killed_at_step(command, step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert done.returncode == 1, done.stderr
    rows = read_results(out)
    assert len(rows) == 5 and rows["j3"]["error_kind"] == "permanent"
    stats = mock_stats(server)
    assert len(stats["batch_creates"]) == 1 and stats["batch_lines"] == 5


PRICES = """
[test]
date = "2026-12-06"
source = "tests"
batch = 0.5
models."m" = { input = 1000.0, output = 2000.0 }
"""


def test_a_budget_bounds_batches_before_they_are_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is priced at its worst case (the batch price; input tokens with the margin,
    plus each job's max_tokens) before it is recorded; one that would cross --budget is not
    submitted, the run stops with exit 5 once the others are collected, and a rerun with more
    budget submits the rest, paying for nothing twice."""
    monkeypatch.setattr(OpenAIBatch, "max_requests", 4)  # 12 jobs: three chunks of 4
    rows = [{"id": f"j{i:02d}", "prompt": f"hello {i}", "max_tokens": 8} for i in range(12)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=60.0), clock=clock.time)
    # a chunk's worst case: 4 x 8 output tokens at $2000/M is $0.064, its input about $0.02,
    # half of it at the batch price: about $0.042 a chunk, so two fit in $0.1 and three do not
    first = _virtual_run(tmp_path, jobs, app, clock, budget=0.1, prices_file=str(prices))
    assert first.exit_code == 5 and first.budget_stop is not None
    assert "batch" in first.budget_stop
    done = read_results(tmp_path / "out")
    assert len(done) == 8 and all(r["via"] == "batch" for r in done.values())
    assert sum(r["cost_usd"] for r in done.values()) <= 0.1
    assert len(app.state.batch_creates) == 2
    chunks = [
        json.loads(line)
        for line in (tmp_path / "out" / "batches.jsonl").read_text().splitlines()
        if '"chunk"' in line
    ]
    assert len(chunks) == 2  # the third was never recorded, let alone created

    clock.start += 60
    again = _virtual_run(tmp_path, jobs, app, clock, budget=100.0, prices_file=str(prices))
    assert again.exit_code == 0
    final = read_results(tmp_path / "out")
    assert len(final) == 12 and all(final[k] == v for k, v in done.items())
    assert len(app.state.batch_creates) == 3 and app.state.batch_lines == 12


def test_a_budget_with_a_batch_of_an_earlier_run_still_open_holds_its_worst_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch left running by a run stopped early is held at its worst case by the next run,
    which then submits only what fits beside it."""
    monkeypatch.setattr(OpenAIBatch, "max_requests", 4)
    rows = [{"id": f"j{i:02d}", "prompt": f"hello {i}", "max_tokens": 8} for i in range(8)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    opts = {"prices_file": str(prices), "poll_interval": 60.0}
    left = _virtual_run(tmp_path, jobs, app, clock, no_wait=True, budget=0.05, **opts)
    assert left.exit_code == 5 and len(app.state.batch_creates) == 1  # one chunk fits in $0.05
    # the rerun holds the open batch's worst case: the second chunk does not fit beside it
    again = _virtual_run(tmp_path, jobs, app, clock, budget=0.05, **opts)
    assert again.exit_code == 5 and len(app.state.batch_creates) == 1
    assert len(read_results(tmp_path / "out")) == 4


def test_a_stop_while_waiting_leaves_the_batches_running(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3600.0), clock=clock.time)
    opts = RunOptions(api_key="k", model="m", base_url="http://mock.test/v1", mode="batch")

    async def main() -> RunSummary:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=app)
        ) as runner:
            assert runner._batch is not None

            def step(name: str) -> None:
                if name == "polled":
                    seen.append(format_line(runner.statistics()))
                    runner.stop(signal.SIGINT)  # Ctrl-C while waiting

            runner._batch.step = step
            return await runner.run()

    seen: list[str] = []
    summary = run_virtual(main)
    assert summary.exit_code == 130 and summary.finished == 0
    assert seen[0].endswith("| batches: 1 in_progress")  # what the progress display shows
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["in_progress"]
    assert len(BatchLog(tmp_path / "out").open_chunks()) == 1
    clock.start += 7200
    assert _virtual_run(tmp_path, jobs, app, clock).ok == 3
    assert len(app.state.batch_creates) == 1


def test_an_online_rerun_cancels_the_pending_batch_first(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3600.0), clock=clock.time)
    assert _virtual_run(tmp_path, jobs, app, clock, no_wait=True).exit_code == 6
    assert _virtual_run(tmp_path, jobs, app, clock, mode="online").ok == 3
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["cancelled"]
    clock.start += 7200
    summary = _virtual_run(tmp_path, jobs, app, clock)  # nothing left to collect nor send
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 0 and summary.finished == 0 and len(rows) == 3
    assert {r["via"] for r in rows.values()} == {"online"}
    assert not BatchLog(tmp_path / "out").open_chunks()


def test_cancel_batches_works_whatever_the_mode(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 2)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3600.0), clock=clock.time)
    assert _virtual_run(tmp_path, jobs, app, clock, no_wait=True).exit_code == 6
    summary = _virtual_run(tmp_path, jobs, app, clock, mode="online", cancel_batches=True)
    assert summary.finished == 0 and app.state.accepted == 0  # nothing sent online either
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["cancelled"]


def test_plan_shows_the_batch_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from batcher._cli.main import main

    jobs = _jobs(tmp_path, 3)
    assert main(["plan", str(jobs), "--tier", "openai-tier1", "--model", "gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert "by batch API (--mode batch): within 24 h" in out and "by batch API" in out


def test_a_refused_control_call_stops_the_run_with_exit_4(
    tmp_path: Path,
    start_mock: Callable[[MockConfig], MockServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "bad-key")
    server = start_mock(MockConfig())
    jobs = _jobs(tmp_path, 2)
    assert run_cli(server, "openai", jobs, tmp_path / "o", "--model", "m", "--mode", "batch") == 4
    assert "invalid_api_key" in capsys.readouterr().err
    assert not mock_stats(server)["batch_creates"]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 9),
    per_batch=st.integers(1, 4),
    failing=st.sets(st.integers(0, 8)),
    crashes=st.lists(st.tuples(st.sampled_from(STEPS), st.integers(1, 3)), max_size=3),
    delay=st.sampled_from([0.0, 600.0]),
    provider=st.sampled_from(["openai", "gemini"]),
)
def test_exactly_once_whatever_the_crashes(
    n: int,
    per_batch: int,
    failing: set[int],
    crashes: list[tuple[str, int]],
    delay: float,
    provider: str,
) -> None:
    """Crash at any step, at its first, second or third passage, several runs in a row: every job
    ends with one row, no chunk is created twice, and no job is in two batches."""
    api = OpenAIBatch if provider == "openai" else GeminiBatch
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "max_requests", per_batch)
        tmp = Path(folder)
        jobs = _jobs(tmp, n, {i: "[[fail:400]]" for i in failing})
        clock = VirtualClock()
        app = create_app(MockConfig(batch_delay=delay), clock=clock.time)
        base = "http://mock.test/v1beta" if provider == "gemini" else "http://mock.test/v1"
        options = {"provider": provider, "base_url": base, "poll_interval": 300.0}
        for step, nth in crashes:
            with contextlib.suppress(Crash):
                _virtual_run(tmp, jobs, app, clock, hook=_crash_at(step, nth), **options)
            clock.start += 3600
        summary = _virtual_run(tmp, jobs, app, clock, **options)
        rows = read_results(tmp / "out")
        assert set(rows) == {f"j{i}" for i in range(n)}
        assert {i for i in range(n) if rows[f"j{i}"]["status"] == "error"} == failing & set(
            range(n)
        )
        assert summary.exit_code == (1 if failing & set(range(n)) else 0)
        creates = app.state.batch_creates
        assert len(creates) == len(set(creates))
        assert app.state.batch_lines == n  # each job answered by one batch line, once


def _crash_at(step: str, nth: int) -> Callable[[str], None]:
    """A hook that crashes the ``nth`` time the run passes ``step``."""
    passed = 0

    def hook(name: str) -> None:
        nonlocal passed
        if name == step:
            passed += 1
            if passed == nth:
                raise Crash(name)

    return hook


def test_batch_queue_tokens_holds_batches_back_until_earlier_ones_finish(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, 6)  # about 3 input tokens a job, as estimated
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, batch_queue_tokens=6, poll_interval=60.0)
    assert summary.ok == 6 and len(app.state.batch_creates) == 3
    events = [json.loads(e) for e in (tmp_path / "out" / "batches.jsonl").read_text().splitlines()]
    chunks = [e for e in events if e["event"] == "chunk"]
    assert [len(c["ids"]) for c in chunks] == [2, 2, 2] and all(c["tokens"] <= 6 for c in chunks)
    order = [(e["event"], e.get("tag")) for e in events if e["event"] in ("submitted", "closed")]
    tags = [c["tag"] for c in chunks]
    for first, second in itertools.pairwise(tags):
        # each batch is submitted only once the one before it is collected: the queue holds one
        assert order.index(("closed", first)) < order.index(("submitted", second))


def test_a_batch_image_that_cannot_be_downloaded_is_an_error_row_not_a_crash(
    tmp_path: Path,
) -> None:
    """The line was answered (and billed): a URL it names that cannot be fetched makes its row an
    error a rerun with --retry-errors sends again, and the run goes on."""
    import anyio

    from batcher._config.prices import load_prices
    from batcher._core.clock import SystemClock
    from batcher._core.completion import Completion, ImageOut
    from batcher._engine.batch_lines import LineRecords
    from batcher._rundir.rows import Record

    row = Record(
        id="j", status="ok", text="", input_tokens=1, output_tokens=1, attempts=1, error=None,
        error_kind=None, model="m", finish_reason="stop", latency_ms=1.0, response=None,
        source=None,
    )  # fmt: skip
    answer = Completion(
        text="", finish_reason="stop", input_tokens=1, output_tokens=1, model="m", raw="{}",
        images=(ImageOut("image/png", url="http://127.0.0.1:9/gone.png"),),
    )  # fmt: skip
    lines = LineRecords(load_prices(), SystemClock(), tmp_path)
    kept = anyio.run(lines.with_images, row, answer)
    assert kept.status == "error" and kept.error_kind == "retryable"
    assert "cannot download an image answered" in (kept.error or "")
    assert not (tmp_path / "images").exists()
