"""Faults end to end: a flaky, lossy provider, bad keys, unknown models, slow answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from batcher.mock import Faults, MockConfig, MockServer, mock_reply
from tests.helpers import mock_stats, read_results, run_cli, write_jsonl

StartMock = Callable[[MockConfig], MockServer]


_run = run_cli


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_faulty_provider_loses_nothing(
    tmp_path: Path, start_mock: StartMock, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ok")
    monkeypatch.setenv("GEMINI_API_KEY", "g-ok")
    faults = Faults(error_500=0.05, error_503=0.03, drop=0.02, truncate=0.01)
    server = start_mock(MockConfig(latency_ms=(1.0, 5.0), faults=faults, seed=3))
    prompts = {f"j{i}": f"ordinary job {i}" for i in range(300)}
    prompts |= {f"flaky{i}": f"[[flaky:2]] flaky job {i}" for i in range(10)}
    prompts |= {f"bad{i}": f"[[fail:400]] bad job {i}" for i in range(5)}
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl", [{"id": k, "prompt": p, "model": "m"} for k, p in prompts.items()]
    )
    code = _run(
        server, provider, jobs, tmp_path / "out", "--max-attempts", "8", "--max-concurrency", "16"
    )
    assert code == 1
    results = read_results(tmp_path / "out")  # exactly once
    assert set(results) == set(prompts)
    for job_id, row in results.items():
        if job_id.startswith("bad"):
            assert row["status"] == "error" and row["attempts"] == 1
            assert row["error_kind"] == "permanent" and "marked to fail" in row["error"]
        else:
            assert row["status"] == "ok", row
            assert row["text"] == mock_reply("m", prompts[job_id])
        if job_id.startswith("flaky"):
            assert row["attempts"] >= 3
    stats = mock_stats(server)
    assert stats["dropped"] > 0 and stats["truncated"] > 0
    assert stats["by_status"]["500"] > 0 and stats["by_status"]["503"] >= 20
    retried = sum(r["attempts"] - 1 for r in results.values())
    assert retried == stats["requests"] - len(prompts)  # every attempt counted in `attempts`


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY")]
)
def test_a_bad_key_stops_the_run_with_exit_4_after_one_request(
    tmp_path: Path,
    start_mock: StartMock,
    provider: str,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, "bad-key-123")
    server = start_mock(MockConfig())
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl", [{"id": str(i), "prompt": "x", "model": "m"} for i in range(50)]
    )
    assert _run(server, provider, jobs, tmp_path / "out") == 4
    err = capsys.readouterr().err
    assert f"the API key from ${variable} was refused" in err
    assert "bad-key-123" not in err
    assert mock_stats(server)["requests"] == 1  # a lane opens only after its first answer


def test_an_unknown_model_stops_the_run_and_names_what_worked(
    tmp_path: Path,
    start_mock: StartMock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ok")
    server = start_mock(MockConfig())
    rows = [{"id": f"g{i}", "prompt": "x", "model": "good-model"} for i in range(5)]
    rows += [{"id": f"n{i}", "prompt": "y", "model": "no-such-model"} for i in range(30)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    assert _run(server, "openai", jobs, tmp_path / "out", "--max-concurrency", "1") == 4
    err = capsys.readouterr().err
    assert "model 'no-such-model' is not available" in err
    assert "models that worked: good-model" in err
    assert mock_stats(server)["by_status"].get("404") == 1
    assert len(read_results(tmp_path / "out")) == 5  # what finished is kept


def test_slow_answers_time_out_and_are_retried(
    tmp_path: Path, start_mock: StartMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ok")
    server = start_mock(MockConfig(faults=Faults(slow=0.3, slow_ms=3000), seed=5))
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [{"id": str(i), "prompt": f"p{i}", "model": "m"} for i in range(24)],
    )
    code = _run(
        server,
        "openai",
        jobs,
        tmp_path / "out",
        "--timeout",
        "0.5",
        "--max-attempts",
        "10",
        "--max-concurrency",
        "12",
    )
    assert code == 0
    results = read_results(tmp_path / "out")
    assert len(results) == 24 and any(r["attempts"] > 1 for r in results.values())
