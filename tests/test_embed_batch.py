"""Embeddings through the batch APIs on the mock: OpenAI's ``/v1/embeddings`` lines packed as
online requests are, Gemini's ``asyncBatchEmbedContent`` a line an input; rows as online ones at
half the price, a bad input one error row, ``auto``, and exactly once across crashes."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batcher import Runner, RunOptions, RunSummary
from batcher._core.tokens import count_tokens
from batcher._engine.batchapi import STEPS
from batcher._rundir.batchlog import BatchLog
from batcher._wire.providers._embeddings import GeminiEmbeddings, OpenAIEmbeddings
from batcher._wire.providers._gemini_batch import GeminiBatch
from batcher._wire.providers._openai_batch import OpenAIBatch
from batcher.mock import MockConfig, MockServer, create_app
from batcher.mock._batch_store import Batch
from batcher.mock._embeddings import mock_vector
from tests.helpers import (
    killed_at_step,
    mock_stats,
    read_results,
    run_cli,
    run_command,
    write_jsonl,
)
from tests.virtual import VirtualClock, run_virtual

MODEL = {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}
BASE = {"openai": "http://mock.test/v1", "gemini": "http://mock.test/v1beta"}
EMBEDDER = {"openai": OpenAIEmbeddings, "gemini": GeminiEmbeddings}


def _jobs(tmp_path: Path, n: int, bad: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    rows = [
        {"id": f"d{i:03d}", "text": f"document {i} [[fail:400]]" if i in bad else f"document {i}"}
        for i in range(n)
    ]
    return write_jsonl(tmp_path / "jobs.jsonl", rows)


def _batches(app_or_server: Any) -> list[Batch]:
    pipeline = getattr(app_or_server, "pipeline", None) or app_or_server._pipeline
    return list(pipeline.batches.batches.values())


def _inputs(batch: Batch) -> list[int]:
    """The inputs each line of ``batch`` holds."""
    out = []
    for _, body in batch.lines:
        texts = body.get("input", [body.get("content")])
        out.append(len(texts) if isinstance(texts, list) else 1)
    return out


class Crash(Exception):
    """Raised at a named step, standing for the process dying there."""


def _virtual_run(
    tmp_path: Path,
    jobs: Path,
    app: Any,
    clock: VirtualClock,
    provider: str = "openai",
    crash_at: str | None = None,
    mode: str = "batch",
    **options: Any,
) -> RunSummary:
    opts = RunOptions(
        api_key="k",
        provider=provider,  # type: ignore[arg-type]
        base_url=BASE[provider],
        model=MODEL[provider],
        mode=mode,  # type: ignore[arg-type]
        api="embeddings",
        dimensions=4,
        **options,
    )

    def step(name: str) -> None:
        if name == crash_at:
            raise Crash(name)

    async def main() -> RunSummary:
        async with Runner(
            jobs, tmp_path / "out", opts, clock=clock, transport=httpx.ASGITransport(app=app)
        ) as runner:
            if runner._batch is not None:
                runner._batch.step = step
            return await runner.run()

    return run_virtual(main)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_batch_rows_equal_online_rows_at_half_the_price(
    tmp_path: Path,
    start_mock: Callable[[MockConfig], MockServer],
    api_keys: None,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
) -> None:
    monkeypatch.setattr(EMBEDDER[provider], "max_inputs", 4)  # 10 jobs: three packs
    jobs = _jobs(tmp_path, 10)
    server = start_mock(MockConfig())
    flags = ("--model", MODEL[provider], "--endpoint", "embeddings", "--dimensions", "8")
    assert run_cli(server, provider, jobs, tmp_path / "on", *flags) == 0
    assert run_cli(server, provider, jobs, tmp_path / "b", *flags, "--mode", "batch") == 0
    online, batch = read_results(tmp_path / "on"), read_results(tmp_path / "b")
    assert set(online) == set(batch) == {f"d{i:03d}" for i in range(10)}
    for job_id, row in online.items():
        other = batch[job_id]
        for column in ("status", "text", "response", "input_tokens", "fingerprint", "embedding"):
            assert row[column] == other[column], (job_id, column)
        assert (row["via"], other["via"]) == ("online", "batch")
        assert other["cost_usd"] == pytest.approx(row["cost_usd"] / 2)  # half the price
        want = mock_vector(MODEL[provider], f"document {int(job_id[1:])}", 8)
        assert other["embedding"] == pytest.approx(want, abs=1e-6)
    for out in ("on", "b"):
        field = pq.read_table(tmp_path / out / "results").schema.field("embedding")
        assert field.type == pa.list_(pa.float32(), 8)
    (made,) = _batches(server)
    if provider == "openai":  # packed as online: 4 + 4 + 2 inputs in three lines
        assert made.endpoint == "/v1/embeddings" and _inputs(made) == [4, 4, 2]
        tokens = [batch[j]["input_tokens"] for j in batch]
        assert sum(tokens) == sum(count_tokens(f"document {i}") for i in range(10))
    else:  # a line an input, no tokens reported: the estimate priced
        assert made.endpoint == "asyncBatchEmbedContent" and _inputs(made) == [1] * 10
        assert all(batch[j]["input_tokens"] is None for j in batch)


def test_gemini_embeddings_over_the_inline_limit_go_as_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GeminiBatch, "inline_requests", 3)
    jobs = _jobs(tmp_path, 5, bad={2})
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, provider="gemini")
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 1
    assert {k for k, r in rows.items() if r["status"] != "ok"} == {"d002"}
    assert rows["d002"]["error_kind"] == "permanent" and rows["d002"]["via"] == "batch"
    assert rows["d001"]["embedding"] == pytest.approx(
        mock_vector(MODEL["gemini"], "document 1", 4), abs=1e-6
    )
    (made,) = _batches(app)
    assert made.input_file_id is not None and made.output_file_id is not None
    key, request = made.lines[0]  # an EmbedContentRequest, its model the batch's
    assert key == "d000" and "model" not in request
    assert request == {"content": {"parts": [{"text": "document 0"}]}, "outputDimensionality": 4}


def test_openai_lines_pack_by_count_and_tokens_and_a_batch_by_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OpenAIEmbeddings, "max_inputs", 3)
    monkeypatch.setattr(OpenAIEmbeddings, "max_tokens", 200)
    monkeypatch.setattr(OpenAIBatch, "max_requests", 6)  # inputs a batch, counted in jobs
    words = " ".join(["lorem"] * 50)  # about 100 tokens: two of them fill no line of 200
    rows = [{"id": f"d{i:03d}", "text": f"{i} {words if i % 2 else 'short'}"} for i in range(24)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock)
    assert summary.exit_code == 0
    got = read_results(tmp_path / "out")
    assert set(got) == {r["id"] for r in rows} and all(r["status"] == "ok" for r in got.values())
    made = _batches(app)
    assert len(made) == 24 // 6
    for batch in made:
        assert sum(_inputs(batch)) <= 6
        for _, body in batch.lines:
            assert len(body["input"]) <= 3
            assert sum(count_tokens(t) for t in body["input"]) <= 200
    # by count alone, two lines of three a batch; the tokens cut them to a long input a line
    assert [len(b.lines) for b in made] == [3] * 4
    assert app.state.batch_lines == 12


def test_the_mock_refuses_an_embeddings_batch_over_50000_inputs() -> None:
    app = create_app(MockConfig())
    line = {"method": "POST", "url": "/v1/embeddings"}
    texts = ["x"] * 2048
    lines = [
        {**line, "custom_id": f"p{i}", "body": {"model": MODEL["openai"], "input": texts}}
        for i in range(25)  # 51,200 inputs in 25 lines
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()

    async def main() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        auth = {"authorization": "Bearer sk-test"}
        async with httpx.AsyncClient(transport=transport, base_url="http://mock.test") as client:
            files = {"file": ("b.jsonl", data), "purpose": (None, "batch")}
            upload = await client.post("/v1/files", files=files, headers=auth)
            create = {
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/embeddings",
                "completion_window": "24h",
            }
            over = await client.post("/v1/batches", json=create, headers=auth)
            lines[-1]["body"]["input"] = texts[: 2048 - 1200]  # 50,000 exactly
            data2 = "".join(json.dumps(x) + "\n" for x in lines).encode()
            files = {"file": ("b.jsonl", data2), "purpose": (None, "batch")}
            upload = await client.post("/v1/files", files=files, headers=auth)
            create["input_file_id"] = upload.json()["id"]
            fits = await client.post("/v1/batches", json=create, headers=auth)
            return over.status_code, fits.status_code

    assert run_virtual(main) == (400, 200)


def test_a_bad_input_in_a_packed_line_costs_one_error_row_by_a_later_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OpenAIEmbeddings, "max_inputs", 4)
    jobs = _jobs(tmp_path, 10, bad={5})
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock)
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 1
    assert {k for k, r in rows.items() if r["status"] != "ok"} == {"d005"}
    bad = rows["d005"]
    assert bad["error_kind"] == "permanent" and "400" in bad["error"] and bad["embedding"] is None
    assert {r["via"] for r in rows.values()} == {"batch"}
    first, second = _batches(app)
    assert _inputs(first) == [4, 4, 2]  # d004..d007 refused whole
    assert _inputs(second) == [1, 1, 1, 1]  # then each alone: one more round, same tokens
    assert sorted(key for key, _ in second.lines) == ["d004", "d005", "d006", "d007"]
    assert rows["d004"]["attempts"] == 2 and rows["d000"]["attempts"] == 1


def test_auto_sends_a_refused_pack_online_where_it_is_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OpenAIEmbeddings, "max_inputs", 4)
    jobs = _jobs(tmp_path, 10, bad={5})
    clock = VirtualClock()
    app = create_app(MockConfig(), clock=clock.time)
    summary = _virtual_run(tmp_path, jobs, app, clock, mode="auto", batch_min=1)
    rows = read_results(tmp_path / "out")
    assert summary.exit_code == 1
    assert {k for k, r in rows.items() if r["status"] != "ok"} == {"d005"}
    via = {k: r["via"] for k, r in rows.items()}
    assert {k for k, v in via.items() if v == "online"} == {"d004", "d005", "d006", "d007"}
    assert len(_batches(app)) == 1
    price = 0.02 / 1e6  # text-embedding-3-small a token; half of it by batch
    for row in rows.values():
        if row["status"] == "ok":
            half = 0.5 if row["via"] == "batch" else 1.0
            assert row["cost_usd"] == pytest.approx(row["input_tokens"] * price * half)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_every_step_loses_nothing_and_pays_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str, step: str
) -> None:
    monkeypatch.setattr(OpenAIEmbeddings, "max_inputs", 3)
    for api in (OpenAIBatch, GeminiBatch):
        monkeypatch.setattr(api, "max_requests", 4)  # 10 jobs: three chunks
    monkeypatch.setattr(GeminiBatch, "inline_requests", 3)  # two chunks go as files, one inline
    jobs = _jobs(tmp_path, 10, bad={5})
    clock = VirtualClock()
    app = create_app(MockConfig(batch_delay=600.0), clock=clock.time)
    with pytest.raises(Crash):
        _virtual_run(tmp_path, jobs, app, clock, provider, crash_at=step, poll_interval=60.0)
    summary = _virtual_run(tmp_path, jobs, app, clock, provider, poll_interval=60.0)
    rows = read_results(tmp_path / "out")  # fails if a job has two rows
    assert set(rows) == {f"d{i:03d}" for i in range(10)}
    assert summary.exit_code == 1 and rows["d005"]["status"] == "error"
    assert all(r["status"] == "ok" for k, r in rows.items() if k != "d005")
    assert all(r["via"] == "batch" for r in rows.values())
    creates = app.state.batch_creates
    assert len(creates) == len(set(creates))  # no chunk submitted twice
    if provider == "openai":  # 4 + 4 + 2 jobs in 2 + 2 + 1 lines, then d004..d006 alone
        assert len(creates) == 4 and app.state.batch_lines == 5 + 3
    else:  # a line a job
        assert len(creates) == 3 and app.state.batch_lines == 10
    assert not BatchLog(tmp_path / "out").open_chunks()


@pytest.mark.parametrize("step", ["created", "collecting"])
def test_kill_9_then_a_rerun_finishes_exactly_once(
    tmp_path: Path, start_mock: Callable[[MockConfig], MockServer], api_keys: None, step: str
) -> None:
    jobs = _jobs(tmp_path, 5, bad={3})  # one line of five, refused; then five alone
    server = start_mock(MockConfig(batch_delay=0.3))
    out = tmp_path / "out"
    flags = ("--model", MODEL["openai"], "--endpoint", "embeddings", "--dimensions", "4")
    command = run_command(jobs, out, server.base_url("openai"), *flags, "--mode", "batch")
    command += ["--poll-interval", "0.1"]
    killed = killed_at_step(command, step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert done.returncode == 1, done.stderr
    rows = read_results(out)
    assert len(rows) == 5 and rows["d003"]["error_kind"] == "permanent"
    assert all(r["status"] == "ok" for k, r in rows.items() if k != "d003")
    stats = mock_stats(server)
    creates = stats["batch_creates"]
    assert len(creates) == len(set(creates)) == 2 and stats["batch_lines"] == 1 + 5
