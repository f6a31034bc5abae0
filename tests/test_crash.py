"""Killing ``batcher run`` for real: SIGKILL at seeded random moments, SIGINT, and a rerun on
the next quota day under faketime. Subprocesses against the mock provider over loopback."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batcher.mock import MockConfig, MockServer, mock_reply
from tests.helpers import kill_once_kept, mock_stats, read_results, run_command, write_jsonl

StartMock = Callable[[MockConfig], MockServer]
CONCURRENCY = 8


def _jobs(tmp_path: Path, n: int) -> tuple[Path, dict[str, str]]:
    prompts = {f"k{i:04d}": f"crash test prompt {i}" for i in range(n)}
    rows = [{"id": k, "prompt": p, "model": "m"} for k, p in prompts.items()]
    return write_jsonl(tmp_path / "jobs.jsonl", rows), prompts


def _command(jobs: Path, out: Path, server: MockServer, *flags: str) -> list[str]:
    concurrency = ("--max-concurrency", str(CONCURRENCY))
    return run_command(jobs, out, server.base_url("openai"), *concurrency, *flags)


def _wait_until_some_finished(out: Path, at_least: int = 20, timeout: float = 30.0) -> None:
    """Poll the journal (as ``batcher status`` would) until some jobs have finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = sum(p.read_bytes().count(b"\n") for p in (out / "journal").glob("seg-*.jsonl"))
        if lines >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError("the run finished no job in time")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-crash", **extra}


def test_sigkill_at_random_moments_then_resume_gives_every_job_once(
    tmp_path: Path, start_mock: StartMock
) -> None:
    server = start_mock(MockConfig(latency_ms=(10.0, 40.0)))
    jobs, prompts = _jobs(tmp_path, 2000)
    out = tmp_path / "out"
    rng = random.Random(20261127)
    kills = 0
    # four kills at seeded moments through the run, each once it has kept a given number of
    # jobs (a wall-clock moment is one a fast machine outruns)
    for low, high in ((50, 400), (500, 900), (1000, 1400), (1500, 1900)):
        proc = subprocess.Popen(
            _command(jobs, out, server),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kills += kill_once_kept(proc, out, rng.randint(low, high))
    done = subprocess.run(
        _command(jobs, out, server),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = read_results(out)  # fails if any id appears twice
    assert set(results) == set(prompts)
    for job_id, row in results.items():
        assert row["text"] == mock_reply("m", prompts[job_id])
    sent = mock_stats(server)["requests"]
    # the only requests sent twice are those in flight at each kill
    assert len(prompts) <= sent <= len(prompts) + kills * CONCURRENCY
    assert kills == 4


def test_sigint_stops_gracefully_with_exit_130_and_keeps_what_finished(
    tmp_path: Path, start_mock: StartMock
) -> None:
    server = start_mock(MockConfig(latency_ms=(20.0, 60.0)))
    jobs, prompts = _jobs(tmp_path, 2000)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _command(jobs, out, server),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_until_some_finished(out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Rerun the same command to go on" in stderr
    finished = read_results(out)
    assert 0 < len(finished) < len(prompts)
    # what finished is exactly what the server answered: nothing in flight was dropped silently
    assert mock_stats(server)["accepted"] >= len(finished)
    done = subprocess.run(
        _command(jobs, out, server, "--max-concurrency", "32"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert set(read_results(out)) == set(prompts)


@pytest.mark.skipif(
    shutil.which("faketime") is None and not os.environ.get("CI"),
    reason="needs faketime (apt-get install faketime); CI installs it, and fails without it",
)
def test_exit_on_daily_limit_then_rerun_on_the_next_quota_day(
    tmp_path: Path, start_mock: StartMock
) -> None:
    server = start_mock(MockConfig())
    jobs, prompts = _jobs(tmp_path, 12)
    out = tmp_path / "out"

    def run_at(when: str) -> subprocess.CompletedProcess[str]:
        env = _env(TZ="America/Los_Angeles", FAKETIME_DONT_FAKE_MONOTONIC="1")
        cmd = [
            "faketime",
            when,
            *_command(jobs, out, server, "--rpd", "5", "--on-daily-limit", "exit"),
        ]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)

    first = run_at("2027-01-15 23:50:00")
    assert first.returncode == 3, first.stderr
    assert (
        "the day's 5 requests are spent; the quota resets at 2027-01-16 00:00 PST" in first.stderr
    )
    assert "Rerun the same command after the reset" in first.stderr
    assert len(read_results(out)) == 5
    same_day = run_at("2027-01-15 23:58:00")
    assert same_day.returncode == 3 and len(read_results(out)) == 5  # the ledger remembers
    next_day = run_at("2027-01-16 00:01:00")
    assert next_day.returncode == 3 and len(read_results(out)) == 10
    last = run_at("2027-01-17 09:00:00")
    assert last.returncode == 0, last.stderr
    assert set(read_results(out)) == set(prompts)
    assert mock_stats(server)["requests"] == 12
