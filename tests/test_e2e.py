"""End to end, as a user would: the CLI against the mock provider over real loopback sockets."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batcher._cli.main import main
from batcher._core.tokens import count_tokens
from batcher.mock import MockServer, mock_reply
from tests.helpers import mock_stats, read_results, write_jsonl, write_parquet
from tests.strategies import render

PROMPTS = ["What is a tide?", "Explain 量子力学 in one line.", "Say hi", "¿Qué hora es?", "x " * 40]


pytestmark = pytest.mark.usefixtures("api_keys")


def _specs(n: int, model: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"job-{i:04d}",
            "prompt": f"{PROMPTS[i % len(PROMPTS)]} #{i}",
            "system": "Be brief." if i % 3 == 0 else None,
            "model": model,
            "temperature": 0.5 if i % 2 else None,
            "max_tokens": None,
        }
        for i in range(n)
    ]


def _check(out: Path, specs: list[dict[str, Any]], server: MockServer) -> None:
    """One ok row per job, with the text and token counts the server computed and sent."""
    results = read_results(out)
    assert set(results) == {s["id"] for s in specs}
    for s in specs:
        row = results[s["id"]]
        sent = "\n".join(t for t in (s["system"], s["prompt"]) if t is not None)
        assert row["status"] == "ok" and row["error"] is None
        assert row["text"] == mock_reply(s["model"], s["prompt"])
        assert row["input_tokens"] == count_tokens(sent)
        assert row["output_tokens"] == count_tokens(row["text"])
        assert row["attempts"] == 1 and row["latency_ms"] > 0
    stats = mock_stats(server)
    assert stats["accepted"] == len(specs) and stats["rejected"] == 0
    assert stats["input_tokens"] == sum(r["input_tokens"] for r in results.values())


def _run(server: MockServer, provider: str, *args: str) -> int:
    return main(
        [
            "run",
            *args,
            "--provider",
            provider,
            "--base-url",
            server.base_url(provider),
            "--no-progress",
        ]
    )


def test_300_simple_jobs(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = _specs(300, "gpt-4o-mini")
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [render(s, 1) for s in specs])
    assert _run(mock_server, "openai", str(jobs), "--out", str(tmp_path / "out")) == 0
    _check(tmp_path / "out", specs, mock_server)
    assert "300 jobs: 300 ok, 0 error" in capsys.readouterr().out


@pytest.mark.parametrize("provider", ["openai", "gemini"])
@pytest.mark.parametrize("shape", [1, 2, 3, 4])
def test_each_shape_on_each_provider(
    tmp_path: Path, mock_server: MockServer, shape: int, provider: str
) -> None:
    specs = _specs(24, "gemini-2.5-flash")
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [render(s, shape) for s in specs])
    assert _run(mock_server, provider, str(jobs), "--out", str(tmp_path / "out")) == 0
    _check(tmp_path / "out", specs, mock_server)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_gzip_jobs(tmp_path: Path, mock_server: MockServer, provider: str) -> None:
    specs = _specs(40, "m1")
    jobs = write_jsonl(tmp_path / "jobs.jsonl.gz", [render(s, 2) for s in specs])
    assert _run(mock_server, provider, str(jobs), "--out", str(tmp_path / "out")) == 0
    _check(tmp_path / "out", specs, mock_server)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_parquet_with_template_and_id_column(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    rows = [{"doc_id": 1000 + i, "title": f"T{i}", "body": PROMPTS[i % 5]} for i in range(150)]
    path = write_parquet(tmp_path / "docs.parquet", rows)
    code = _run(
        mock_server,
        provider,
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--model",
        "m2",
        "--prompt-template",
        "Summarize {title}: {body}",
        "--id-column",
        "doc_id",
    )
    assert code == 0
    specs = [
        {
            "id": str(r["doc_id"]),
            "prompt": f"Summarize {r['title']}: {r['body']}",
            "system": None,
            "model": "m2",
        }
        for r in rows
    ]
    _check(tmp_path / "out", specs, mock_server)


def test_prompt_column_and_positional_ids(tmp_path: Path, mock_server: MockServer) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [{"question": p} for p in PROMPTS])
    code = _run(
        mock_server,
        "openai",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--model",
        "m",
        "--prompt-column",
        "question",
    )
    assert code == 0
    results = read_results(tmp_path / "out")
    assert set(results) == {f"data.jsonl:{i}" for i in range(1, 6)}
    assert results["data.jsonl:2"]["text"] == mock_reply("m", PROMPTS[1])


def test_bad_input_sends_nothing_and_names_each_line(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "a", "prompt": "ok", "model": "m"}\n{"id": "b"}\n{oops\n')
    assert _run(mock_server, "openai", str(path), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{path}:2 (job 'b'): unknown shape" in err
    assert f"{path}:3: not valid JSON" in err
    assert mock_stats(mock_server)["requests"] == 0


def test_missing_key_is_a_usage_error(
    tmp_path: Path,
    mock_server: MockServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    path = write_jsonl(tmp_path / "j.jsonl", [{"prompt": "x", "model": "m"}])
    assert _run(mock_server, "openai", str(path), "--out", str(tmp_path / "o")) == 2
    assert "set OPENAI_API_KEY" in capsys.readouterr().err
    assert mock_stats(mock_server)["requests"] == 0


def test_status_and_rerun(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = _specs(30, "m")
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [render(s, 1) for s in specs])
    out = str(tmp_path / "out")
    assert _run(mock_server, "openai", str(jobs), "--out", out) == 0
    capsys.readouterr()
    assert main(["status", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "done 30 / 30",
        "ok 30",
        "error 0",
        "remaining 0",
        "quota today m: 30 requests",
    ]
    # what every run on this key counted today, from the shared quota store
    # named by the key's fingerprint (never the key) and the host
    label = f"key $OPENAI_API_KEY #{hashlib.sha256(b'sk-test').hexdigest()[:6]}"
    host = mock_server.url.removeprefix("http://")
    assert lines[5] == f"all runs today, {label} at {host}, m: 30 requests"
    assert lines[6].startswith("next quota reset ") and lines[6].endswith(("PST", "PDT"))
    assert _run(mock_server, "openai", str(jobs), "--out", out) == 0
    assert "Nothing left to do" in capsys.readouterr().out
    assert mock_stats(mock_server)["requests"] == 30


def test_embedded_mock_through_python_m(tmp_path: Path) -> None:
    """The README's first command, as a subprocess: no key, the embedded mock, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batcher",
            "run",
            str(repo / "jobs" / "example.jsonl"),
            "--out",
            str(tmp_path / "out"),
            "--mock",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = read_results(tmp_path / "out")
    assert len(results) == 30 and all(r["status"] == "ok" for r in results.values())
    assert "30 jobs: 30 ok, 0 error" in done.stdout
    assert "30/30 done" in done.stderr  # the plain progress line, since stderr is not a terminal
