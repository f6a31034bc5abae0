"""Rate limits end to end: the CLI against a mock provider that enforces them, over loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from batcher._config.limits import LimitTable
from batcher.mock import MockConfig, MockServer
from tests.helpers import mock_stats, read_results, run_cli, write_jsonl

StartMock = Callable[[MockConfig], MockServer]


pytestmark = pytest.mark.usefixtures("api_keys")


def _jobs(tmp_path: Path, n: int, model: str) -> Path:
    rows = [{"id": f"j{i}", "prompt": f"prompt number {i}", "model": model} for i in range(n)]
    return write_jsonl(tmp_path / "jobs.jsonl", rows)


_run = run_cli


def test_daily_budget_stops_with_exit_3_and_sends_nothing_over(
    tmp_path: Path, start_mock: StartMock, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_mock(MockConfig(limits=LimitTable.build(rpd=5)))
    code = _run(
        server,
        "gemini",
        _jobs(tmp_path, 8, "gemini-2.5-flash"),
        tmp_path / "out",
        "--rpd",
        "5",
        "--on-daily-limit",
        "exit",
    )
    assert code == 3
    assert len(read_results(tmp_path / "out")) == 5
    stats = mock_stats(server)
    assert (stats["accepted"], stats["rejected"]) == (5, 0)
    err = capsys.readouterr().err
    assert "3 jobs wait for it" in err and "the day's 5 requests are spent" in err
    assert ("resets at" in err and "PST" in err) or "PDT" in err


def test_a_per_day_429_stops_the_lane_without_retrying(
    tmp_path: Path, start_mock: StartMock, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_mock(MockConfig(limits=LimitTable.build(rpd=4)))
    code = _run(
        server,
        "gemini",
        _jobs(tmp_path, 20, "gemini-2.5-flash"),
        tmp_path / "out",
        "--max-concurrency",
        "3",
        "--on-daily-limit",
        "exit",
    )
    assert code == 3
    stats = mock_stats(server)
    assert stats["accepted"] == 4
    assert stats["rejected"] <= 3  # the requests in flight when the first per-day 429 came back
    assert "GenerateRequestsPerDayPerProjectPerModel" in capsys.readouterr().err


def test_openai_limits_are_adopted_from_headers(tmp_path: Path, start_mock: StartMock) -> None:
    server = start_mock(MockConfig(limits=LimitTable.build(rpm=3000)))
    code = _run(
        server,
        "openai",
        _jobs(tmp_path, 120, "gpt-4o-mini"),
        tmp_path / "out",
        "--max-concurrency",
        "16",
    )
    assert code == 0
    assert len(read_results(tmp_path / "out")) == 120
    stats = mock_stats(server)
    assert stats["accepted"] == 120
    # without the headers' limit, 16 at a time with instant answers would be refused by dozens
    assert stats["rejected"] <= 6


def test_gemini_paced_at_the_given_rpm_gets_no_429(tmp_path: Path, start_mock: StartMock) -> None:
    server = start_mock(MockConfig(limits=LimitTable.build(rpm=1800)))
    code = _run(
        server, "gemini", _jobs(tmp_path, 60, "gemini-2.5-flash"), tmp_path / "out", "--rpm", "1800"
    )
    assert code == 0
    stats = mock_stats(server)
    assert (stats["accepted"], stats["rejected"]) == (60, 0)


def test_a_job_larger_than_a_minute_of_tokens_is_a_job_error(
    tmp_path: Path, start_mock: StartMock
) -> None:
    server = start_mock(MockConfig())
    rows = [
        {"id": "big", "prompt": "word " * 5000, "model": "m"},
        {"id": "small", "prompt": "hi", "model": "m"},
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    assert _run(server, "gemini", jobs, tmp_path / "out", "--tpm", "1000") == 1
    results = read_results(tmp_path / "out")
    assert results["small"]["status"] == "ok"
    assert results["big"]["status"] == "error" and "can never be sent" in results["big"]["error"]
    assert results["big"]["attempts"] == 0
    assert mock_stats(server)["requests"] == 1
