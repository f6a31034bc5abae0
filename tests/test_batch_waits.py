"""When a batch run looks at its batches (soon after submission, then less often; a wait ends at
the earliest ``--batch-deadline``) and what a rerun in another mode does with the batches an
earlier run left pending: no job is paid for twice, whatever the sequence of modes."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher._rundir.batchlog import BatchLog
from batcher._wire.providers._gemini_batch import GeminiBatch
from batcher._wire.providers._openai_batch import OpenAIBatch
from batcher.mock import MockConfig, create_app
from tests.helpers import read_results
from tests.test_batchapi import _jobs, _virtual_run
from tests.virtual import VirtualClock

_GEMINI = {"provider": "gemini", "base_url": "http://mock.test/v1beta"}


def test_auto_cancels_a_late_batch_at_its_deadline_not_at_the_next_poll(tmp_path: Path) -> None:
    """A 5 s deadline, 60 s between looks, a batch that would finish at 30 s: it is cancelled at
    5 s and its jobs are answered online then (before, the look at 60 s found it completed)."""
    jobs = _jobs(tmp_path, 4)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=30.0), clock=clock.time)
    summary = _virtual_run(
        tmp_path,
        jobs,
        app,
        clock,
        mode="auto",
        batch_deadline=5.0,
        batch_min=1,
        poll_interval=60.0,
    )
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 0 and len(rows) == 4
    assert {r["via"] for r in rows.values()} == {"online"}
    assert [b.state for b in app.pipeline.batches.batches.values()] == ["cancelled"]
    (batch,) = app.pipeline.batches.batches.values()
    assert batch.ended is not None and batch.ended - clock.start == pytest.approx(5.0)
    assert clock.sleeps[:3] == [2.0, 2.0, 1.0]  # looks at 0, 2, 4 s; the wait ends at 5 s
    assert all(5.0 <= r["finished_at"] - clock.start < 30.0 for r in rows.values())
    assert app.state.batch_lines == 0 and app.state.accepted == 4


@pytest.mark.parametrize("options", [{}, _GEMINI], ids=["openai", "gemini"])
def test_a_small_batch_is_collected_within_seconds_of_finishing(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """A batch done 3 s after its submission, the default 60 s --poll-interval: collected at the
    look 4 s after the submission (looks at 0, 2, 4 s), not a minute later."""
    jobs = _jobs(tmp_path, 3)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=3.0), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, **options)
    rows = read_results(tmp_path / "out")
    assert summary.ok == 3 and {r["via"] for r in rows.values()} == {"batch"}
    assert clock.sleeps == [2.0, 2.0]
    assert all(r["finished_at"] - clock.start == pytest.approx(4.0) for r in rows.values())


def test_polls_back_off_to_the_poll_interval_and_a_resumed_batch_is_looked_at_once_first(
    tmp_path: Path,
) -> None:
    jobs = _jobs(tmp_path, 2)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=400.0), clock=clock.time)
    assert _virtual_run(tmp_path, jobs, app, clock, poll_interval=30.0).ok == 2
    assert clock.sleeps[:7] == [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert set(clock.sleeps[5:-1]) == {30.0}
    # a batch an earlier run left: one look at once, then every --poll-interval (it is old)
    (tmp_path / "more").mkdir()
    jobs2 = _jobs(tmp_path / "more", 3)
    assert _virtual_run(tmp_path / "more", jobs2, app, clock, no_wait=True).exit_code == 6
    clock.start += 100.0
    clock.sleeps.clear()
    assert _virtual_run(tmp_path / "more", jobs2, app, clock, poll_interval=60.0).ok == 3
    assert clock.sleeps == [60.0] * 5  # looks at ages 100 (at once), 160, ..., 400: done


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("options", [{}, _GEMINI], ids=["openai", "gemini"])
def test_an_online_rerun_cancels_pending_batches_keeps_their_lines_and_pays_nothing_twice(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """The measured sequence: 200 jobs with --mode batch --no-wait, an online rerun 4 s later.
    The batch has answered 40 lines by then (one every 0.1 s): they are kept, the batch is
    cancelled, and only the 160 others are sent online."""
    jobs = _jobs(tmp_path, 200)
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=20.0, batch_gradual=True), clock=clock.time)
    first = _virtual_run(tmp_path, jobs, app, clock, no_wait=True, **options)
    assert (first.exit_code, first.batches_pending) == (6, 1)
    clock.start += 4.0
    said, logger = _Lines(), logging.getLogger("batcher")
    level = logger.level
    logger.addHandler(said)
    logger.setLevel(logging.INFO)
    try:
        rerun = _virtual_run(tmp_path, jobs, app, clock, mode="online", **options)
    finally:
        logger.removeHandler(said)
        logger.setLevel(level)
    rows = read_results(tmp_path / "out")
    assert rerun.exit_code == 0 and set(rows) == {f"j{i}" for i in range(200)}
    vias = [r["via"] for r in rows.values()]
    assert (vias.count("batch"), vias.count("online")) == (40, 160)
    assert app.state.batch_lines == 40 and app.state.accepted == 160  # each job paid once
    states = [b.state for b in app.pipeline.batches.batches.values()]
    assert states in (["cancelled"], ["BATCH_STATE_CANCELLED"])
    assert not BatchLog(tmp_path / "out").open_chunks()
    notes = [line for line in said.lines if "--cancel-batches" in line]
    assert len(notes) == 1 and "1 batches" in notes[0] and "\n" not in notes[0]
    # the next morning, the batch has nothing more to answer, and nothing is sent again
    clock.start += 3600.0
    again = _virtual_run(tmp_path, jobs, app, clock, **options)
    assert (again.exit_code, again.finished) == (0, 0)
    assert app.state.batch_lines + app.state.accepted == 200
    assert len(app.state.batch_creates) == 1


_RUNS = [
    ("online", {}),
    ("online", {"cancel_batches": True}),
    ("batch", {}),
    ("batch", {"no_wait": True}),
    ("auto", {}),
    ("auto", {"no_wait": True}),
]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 8),
    per_batch=st.integers(1, 4),
    runs=st.lists(
        st.tuples(st.sampled_from(range(len(_RUNS))), st.sampled_from([0.0, 3.0, 9.0, 60.0])),
        min_size=1,
        max_size=4,
    ),
    provider=st.sampled_from(["openai", "gemini"]),
)
def test_no_sequence_of_modes_answers_a_job_twice(
    n: int, per_batch: int, runs: list[tuple[int, float]], provider: str
) -> None:
    """Runs in any modes over one directory, some seconds apart, batches answering line by line
    and cancelled midway by a deadline or a rerun, then a batch run to finish: every job has one
    row, and the mock answered each job once (a batch line or an online request)."""
    api = OpenAIBatch if provider == "openai" else GeminiBatch
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "max_requests", per_batch)
        tmp = Path(folder)
        jobs = _jobs(tmp, n)
        clock = VirtualClock()
        app = create_app(MockConfig(batch_delay=10.0, batch_gradual=True), clock=clock.time)
        base = _GEMINI if provider == "gemini" else {}
        common = {"batch_min": 1, "batch_deadline": 6.0, "poll_interval": 60.0, **base}
        for index, gap in [*runs, (2, 0.0)]:
            mode, extra = _RUNS[index]
            _virtual_run(tmp, jobs, app, clock, mode=mode, **common, **extra)
            clock.start += gap
        rows = read_results(tmp / "out")
        assert set(rows) == {f"j{i}" for i in range(n)}
        assert app.state.batch_lines + app.state.accepted == n
        creates = app.state.batch_creates
        assert len(creates) == len(set(creates))
        assert not BatchLog(tmp / "out").open_chunks()


def test_mock_server_batch_delay_lets_a_user_try_no_wait(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    start_mock: Any,
    api_keys: None,
) -> None:
    """``batcher mock-server --batch-delay S`` serves batches that run S seconds: a --no-wait run
    exits 6, ``status`` lists the batch, and a rerun while it runs submits nothing again."""
    import batcher._cli.mock_server
    from batcher._cli.main import main
    from tests.helpers import run_cli, write_jsonl

    configs: list[MockConfig] = []

    class Serve:  # what mock-server would serve, without serving it
        url = "http://127.0.0.1:8000"

        def __init__(self, config: MockConfig, *, port: int) -> None:
            configs.append(config)

        def base_url(self, provider: str) -> str:
            return f"{self.url}/v1"

        def serve_forever(self) -> None:
            pass

    monkeypatch.setattr(batcher._cli.mock_server, "MockServer", Serve)
    assert main(["mock-server", "--batch-delay", "3600", "--batch-gradual"]) == 0
    assert main(["mock-server", "--batch-delay", "-1"]) == 2
    (config,) = configs
    assert (config.batch_delay, config.batch_gradual) == (3600.0, True)
    monkeypatch.undo()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    server = start_mock(config)
    rows = [{"id": f"j{i}", "prompt": f"say {i}"} for i in range(4)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    flags = ("--model", "gpt-4o-mini", "--mode", "batch", "--no-wait", "--no-progress")
    assert run_cli(server, "openai", jobs, out, *flags) == 6
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    said = capsys.readouterr().out
    assert "remaining 4" in said and "4 jobs of gpt-4o-mini" in said, said
    # an hour from done: a rerun looks at the batch, submits nothing again, and exits 6 again
    assert run_cli(server, "openai", jobs, out, *flags) == 6
    assert len(server.app.state.batch_creates) == 1 and not read_results(out)


def test_a_429_to_a_batch_control_call_waits_the_servers_delay(tmp_path: Path) -> None:
    """No lane paces the batch API's own calls (upload, create, get): a 429 to one waits the
    server's Retry-After before the next try, where a paced policy would try again at once and
    spend its attempts in a burst."""

    import httpx

    from batcher import Runner, RunOptions, RunSummary
    from batcher.mock import MockConfig, create_app
    from tests.helpers import write_jsonl
    from tests.virtual import VirtualClock, run_virtual

    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    refused: list[str] = []

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        creating = scope["type"] == "http" and scope["method"] == "POST"
        if creating and scope["path"].endswith("/batches") and len(refused) < 2:
            refused.append(scope["path"])
            body = b'{"error": {"message": "Rate limit reached.", "type": "requests"}}'
            head = [(b"content-type", b"application/json"), (b"retry-after", b"7")]
            await send({"type": "http.response.start", "status": 429, "headers": head})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": f"j{q}", "prompt": "q"} for q in range(3)])
    opts = RunOptions(
        api_key="sk-test-batch-429", base_url="http://mock.test/v1", model="gpt-4o", mode="batch"
    )

    async def main() -> RunSummary:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=wrapped)
        ) as runner:
            return await runner.run()

    summary = run_virtual(main)
    assert (summary.ok, summary.exit_code) == (3, 0)
    assert len(refused) == 2
    assert clock.sleeps.count(7.0) == 2
