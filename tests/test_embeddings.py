"""Embeddings, end to end on the mock over loopback: jobs packed many to a request within each
wire's limits, one row per input, a bad input split out of its pack, the vectors' column type,
resume after kill -9, and both wires (OpenAI ``/embeddings``, Gemini ``batchEmbedContents``)."""

from __future__ import annotations

import math
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batcher
from batcher._admission.estimate import TokenEstimator, features
from batcher._cli.exits import EXIT_USAGE
from batcher._core.tokens import count_tokens
from batcher._engine.embed import TOKEN_SHARE, Packer, PackLimits, shares
from batcher._jobs import Job
from batcher._wire.providers import get_provider
from batcher.mock import MockConfig, MockServer
from batcher.mock._embeddings import mock_vector
from tests.helpers import (
    kill_once_kept,
    mock_stats,
    read_results,
    run_cli,
    run_command,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("api_keys")

EXIT_ERRORS = 1
"""Finished, but some jobs ended in error."""

MODEL = {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}
PER_REQUEST = {"openai": 2048, "gemini": 100}


def _rows(n: int, bad: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {"id": f"d{i:05d}", "text": f"document {i} [[fail:400]]" if i in bad else f"document {i}"}
        for i in range(n)
    ]


def _requests(server: MockServer) -> int:
    """Requests the mock answered or refused (each a packed request)."""
    stats = mock_stats(server)
    return sum(int(n) for n in stats["by_status"].values())


# --- packing --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 400)), min_size=1, max_size=80
    ),
    inputs=st.integers(1, 12),
    tokens=st.none() | st.integers(20, 600),
)
def test_no_pack_exceeds_its_limits_and_every_job_is_in_exactly_one(
    texts: list[tuple[str, int]], inputs: int, tokens: int | None
) -> None:
    estimator = TokenEstimator()

    def estimate(job: Job) -> int:
        return estimator.estimate(features(job.text), cautious=True)

    packer = Packer(lambda model: PackLimits(inputs, tokens), estimate)
    jobs = [Job.from_prompt(f"j{i}", "x" * size, model=m) for i, (m, size) in enumerate(texts)]
    packs = [pack for job in jobs for pack in packer.add(job)] + packer.flush()
    assert sorted(j.id for pack in packs for j in pack) == sorted(j.id for j in jobs)
    cap = None if tokens is None else int(tokens * TOKEN_SHARE)
    for pack in packs:
        assert pack and len({j.model for j in pack}) == 1
        assert len(pack) <= inputs
        if cap is not None and len(pack) > 1:  # one job over the cap alone is sent alone
            assert sum(estimate(j) for j in pack) <= cap
        order = [int(j.id[1:]) for j in pack]
        assert order == sorted(order)  # input order kept within a model


@given(st.integers(0, 10**6), st.lists(st.integers(0, 500), min_size=1, max_size=50))
def test_a_requests_tokens_are_shared_out_exactly(total: int, weights: list[int]) -> None:
    out = shares(total, [float(w) for w in weights])
    assert sum(x or 0 for x in out) == total
    assert all(x is not None and x >= 0 for x in out)
    assert shares(None, [1.0, 2.0]) == [None, None]


# --- end to end on both wires ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_every_input_is_one_row_packed_to_the_wires_count(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    n = PER_REQUEST[provider] * 2 + 7
    rows = _rows(n)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    model = MODEL[provider]
    argv = ("--model", model, "--endpoint", "embeddings", "--dimensions", "8")
    assert run_cli(mock_server, provider, jobs, out, *argv) == 0
    assert _requests(mock_server) == 3  # the mock refuses a request over the count
    results = read_results(out)
    assert set(results) == {r["id"] for r in rows}
    table = pq.read_table(out / "results")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    # the library's readers carry the column too: the table typed as the parts, rows as lists
    whole = batcher.results_table(out, columns=["id", "embedding"])
    assert whole.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert whole.num_rows == n
    first = dict(batcher.results(out))[rows[0]["id"]]
    assert first["embedding"] == pytest.approx(results[rows[0]["id"]]["embedding"])
    for row in rows[:50]:
        got = results[row["id"]]
        assert got["status"] == "ok" and got["text"] is None and got["response"] is None
        want = mock_vector(model, row["text"], 8)
        assert got["embedding"] == pytest.approx(want, abs=1e-6)
        assert got["cost_usd"] > 0
    tokens = [results[r["id"]]["input_tokens"] for r in rows]
    if provider == "openai":  # the request's tokens shared out: they add up to what was billed
        assert sum(tokens) == sum(count_tokens(r["text"]) for r in rows)
    else:  # Gemini reports none
        assert tokens == [None] * n
    # the attempt log: a row per request, naming every job it packed, the first as its job_id
    attempts = pq.read_table(out / "attempts").to_pylist()
    assert len(attempts) == 3
    packed = [a["packed"] for a in attempts]
    assert all(a["job_id"] == ids[0] for a, ids in zip(attempts, packed, strict=True))
    assert sorted(len(ids) for ids in packed) == [7, PER_REQUEST[provider], PER_REQUEST[provider]]
    assert sorted(i for ids in packed for i in ids) == sorted(r["id"] for r in rows)


def test_packs_stay_under_the_token_limit_of_a_request(
    tmp_path: Path, mock_server: MockServer
) -> None:
    words = " ".join(["lorem"] * 3000)  # 6,000 tokens an input by the mock's count
    rows = [{"id": f"long{i}", "text": f"{i} {words}"} for i in range(120)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = ("--model", MODEL["openai"], "--endpoint", "embeddings", "--dimensions", "4")
    assert run_cli(mock_server, "openai", jobs, out, *argv) == 0
    results = read_results(out)
    assert all(r["status"] == "ok" for r in results.values())  # no request refused as too big
    total = sum(count_tokens(r["text"]) for r in rows)
    assert _requests(mock_server) >= math.ceil(total / 300_000)
    assert mock_stats(mock_server)["by_status"] == {"200": _requests(mock_server)}


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_bad_input_costs_one_error_row_not_its_pack(
    tmp_path: Path, mock_server: MockServer, provider: str
) -> None:
    n = 90
    rows = _rows(n, bad={37})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = ("--model", MODEL[provider], "--endpoint", "embeddings", "--dimensions", "8")
    assert run_cli(mock_server, provider, jobs, out, *argv) == EXIT_ERRORS
    results = read_results(out)
    errors = {k for k, r in results.items() if r["status"] != "ok"}
    assert errors == {"d00037"}
    bad = results["d00037"]
    assert bad["error_kind"] == "permanent" and "400" in bad["error"] and bad["embedding"] is None
    # the pack, then halves down to the one input: two requests a level
    assert _requests(mock_server) <= 1 + 2 * math.ceil(math.log2(n))


def test_bad_inputs_in_both_halves_are_still_split_out(
    tmp_path: Path, mock_server: MockServer
) -> None:
    rows = _rows(64, bad={10, 50})  # the mock refuses each with the same message
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    argv = ("--model", MODEL["gemini"], "--endpoint", "embeddings", "--dimensions", "4")
    assert run_cli(mock_server, "gemini", jobs, tmp_path / "out", *argv) == EXIT_ERRORS
    results = read_results(tmp_path / "out")
    assert {k for k, r in results.items() if r["status"] != "ok"} == {"d00010", "d00050"}


def test_an_error_of_the_request_itself_is_not_split_input_by_input(
    tmp_path: Path, mock_server: MockServer
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(500))
    # ada-002 takes no dimensions: every request is refused, whatever it holds
    argv = ("--model", "text-embedding-ada-002", "--endpoint", "embeddings", "--dimensions", "8")
    assert run_cli(mock_server, "openai", jobs, tmp_path / "out", *argv) == EXIT_ERRORS
    results = read_results(tmp_path / "out")
    assert len(results) == 500
    assert all("does not support specifying dimensions" in r["error"] for r in results.values())
    assert _requests(mock_server) == 4  # the pack, its halves, one input alone


def test_a_packed_request_is_one_request_for_the_rate_limits(
    tmp_path: Path, start_mock: Any
) -> None:
    server = start_mock(MockConfig(latency_ms=(1.0, 3.0)))
    rows = _rows(250)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = ("--model", MODEL["gemini"], "--endpoint", "embeddings", "--rpm", "120")
    assert run_cli(server, "gemini", jobs, out, *argv, "--dimensions", "4") == 0
    assert mock_stats(server)["by_status"] == {"200": 3}  # 100 + 100 + 50, none refused
    assert len(read_results(out)) == 250


def test_task_type_and_dimensions_reach_each_wire() -> None:
    jobs = [Job.from_prompt("a", "one"), Job.from_prompt("b", "two", task_type="RETRIEVAL_QUERY")]
    gemini = get_provider("gemini", "embeddings", dimensions=768).build_pack(  # type: ignore[attr-defined]
        jobs, "gemini-embedding-001"
    )
    assert gemini.path == "models/gemini-embedding-001:batchEmbedContents"
    assert gemini.body["requests"][1] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "two"}]},
        "taskType": "RETRIEVAL_QUERY",
        "outputDimensionality": 768,
    }
    assert "taskType" not in gemini.body["requests"][0]
    openai = get_provider(
        "openai", "embeddings", dimensions=256
    ).build_pack(  # type: ignore[attr-defined]
        jobs[:1], "text-embedding-3-small"
    )
    assert openai.body == {
        "model": "text-embedding-3-small",
        "input": ["one"],
        "dimensions": 256,
        "encoding_format": "base64",
    }


def test_openai_answers_are_put_in_input_order_by_index() -> None:
    import base64
    import struct

    first = base64.b64encode(struct.pack("<2f", 1.0, 0.0)).decode()
    body = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": first}],
        "model": "m",
        "usage": {"prompt_tokens": 5},
    }
    answer = httpx.Response(200, json=body)
    completion = get_provider("openai", "embeddings").parse(answer)
    assert [list(v) for v in completion.vectors] == [[1.0, 0.0], [0.0, 1.0]]
    assert completion.input_tokens == 5


def test_the_task_type_flag_and_field(tmp_path: Path, mock_server: MockServer) -> None:
    rows = [{"id": "q", "text": "how?", "task_type": "RETRIEVAL_QUERY"}, {"id": "d", "text": "so"}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    argv = ("--model", MODEL["gemini"], "--endpoint", "embeddings", "--dimensions", "4")
    flag = ("--task-type", "RETRIEVAL_DOCUMENT")
    assert run_cli(mock_server, "gemini", jobs, tmp_path / "g", *argv, *flag) == 0
    # OpenAI has no taskType: refused before anything is sent
    argv = ("--model", MODEL["openai"], "--endpoint", "embeddings")
    assert run_cli(mock_server, "openai", jobs, tmp_path / "o", *argv) == EXIT_USAGE
    assert run_cli(mock_server, "openai", jobs, tmp_path / "o2", *argv, *flag) == EXIT_USAGE
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


# --- one vector length per directory --------------------------------------------------------------


def test_a_vector_of_another_length_is_an_error_and_so_is_another_dimensions(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"id": "small", "text": "a", "model": "text-embedding-3-small"},
        {"id": "other", "text": "b", "model": "m-embed"},  # 64 dimensions on the mock
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = ("--endpoint", "embeddings", "--max-concurrency", "1")
    assert run_cli(mock_server, "openai", jobs, out, *argv) == EXIT_ERRORS
    results = read_results(out)
    assert results["small"]["status"] == "ok" and len(results["small"]["embedding"]) == 1536
    other = results["other"]
    assert other["status"] == "error" and other["error_kind"] == "invalid_output"
    assert "64 dimensions" in other["error"] and "1536" in other["error"]
    assert pq.read_table(out / "results").schema.field("embedding").type.list_size == 1536
    capsys.readouterr()
    code = run_cli(mock_server, "openai", jobs, out, *argv, "--dimensions", "64")
    assert code == EXIT_USAGE
    assert "holds vectors of 1536 dimensions" in capsys.readouterr().err


def test_rows_wait_in_the_journal_until_a_vector_fixes_the_length(
    tmp_path: Path, mock_server: MockServer
) -> None:
    out = tmp_path / "out"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "text": "no [[fail:400]]"}])
    argv = ("--model", MODEL["openai"], "--endpoint", "embeddings")
    assert run_cli(mock_server, "openai", bad, out, *argv) == EXIT_ERRORS
    assert not list((out / "results").glob("*.parquet"))  # no part: its type is not known yet
    assert list((out / "journal").glob("seg-*.jsonl"))
    # a rerun sees the error row (kept in the journal), and --retry-errors replaces it
    assert run_cli(mock_server, "openai", bad, out, *argv) == EXIT_ERRORS
    assert _requests(mock_server) == 1
    good = write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "text": "yes"}])
    assert run_cli(mock_server, "openai", good, out, *argv, "--retry-errors") == 0
    results = read_results(out)
    assert results["x"]["status"] == "ok"
    assert not list((out / "journal").glob("seg-*.jsonl"))


# --- crash safety and pools -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_kill_9_mid_run_then_resume_leaves_every_input_once(
    tmp_path: Path, start_mock: Any, provider: str
) -> None:
    server = start_mock(MockConfig(latency_ms=(5.0, 20.0)))
    per = 50 if provider == "openai" else 25
    n = 60 * per
    rows = _rows(n)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    # small packs (a tight token limit per request, by a --tpm lane) would be the real world's
    # long texts; here an RPM keeps the run long enough to be killed in the middle of it
    command = [
        *run_command(jobs, out, server.base_url(provider), "--model", MODEL[provider]),
        "--provider",
        provider,
        "--endpoint",
        "embeddings",
        "--dimensions",
        "4",
        "--rpm",
        "1200",
    ]
    env = {**os.environ, "OPENAI_API_KEY": "sk-crash", "GEMINI_API_KEY": "g-crash"}
    rng = random.Random(7)
    kills = 0
    for low, high in ((n // 10, n // 4), (n // 2, 2 * n // 3)):
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        kills += kill_once_kept(proc, out, rng.randint(low, high))
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    results = read_results(out)  # fails if an id appears twice
    assert set(results) == {r["id"] for r in rows}
    assert all(r["status"] == "ok" for r in results.values())
    assert kills >= 1


def test_a_pool_serves_embeddings(tmp_path: Path) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text(
        "\n".join(
            [
                "[[endpoint]]",
                'name = "a"',
                'provider = "openai"',
                'mock = "default"',
                'models = ["text-embedding-3-small"]',
                "[[endpoint]]",
                'name = "b"',
                'provider = "gemini"',
                'mock = "default"',
                'models = { "text-embedding-3-small" = "gemini-embedding-001" }',
            ]
        )
    )
    rows = _rows(450)
    for i, row in enumerate(rows):
        row["model"] = "text-embedding-3-small"
        if i % 2:
            row["text"] += " again"
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    from batcher._cli.main import main

    argv = ["run", str(jobs), "--out", str(tmp_path / "out"), "--pool", str(pool)]
    assert main([*argv, "--endpoint", "embeddings", "--dimensions", "4", "--no-progress"]) == 0
    results = read_results(tmp_path / "out")
    assert len(results) == 450 and all(r["status"] == "ok" for r in results.values())
    # packed to the smaller wire's count (Gemini's 100), whichever endpoint took each pack
    attempts = pq.read_table(tmp_path / "out" / "attempts").to_pylist()
    assert len(attempts) == 5


# --- plan and bench -------------------------------------------------------------------------------


def test_plan_counts_packed_requests_and_inputs_per_minute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batcher._cli.main import main

    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(1000))
    argv = ["plan", str(jobs), "--tier", "gemini-tier1", "--model", "gemini-embedding-001"]
    assert main(argv) == 0
    alone = capsys.readouterr().out
    assert "RPM alone: 20 s" in alone  # a request a job: 1,000 requests at 3,000 RPM
    assert main([*argv, "--endpoint", "embeddings"]) == 0
    packed = capsys.readouterr().out
    assert "packed: 10 requests" in packed and "RPM alone: 0 s" in packed
    assert "inputs per minute at that pace" in packed


def test_bench_counts_inputs_per_minute(capsys: pytest.CaptureFixture[str]) -> None:
    from batcher._cli.main import main

    argv = ["bench", "--tier", "gemini-tier1", "--model", "gemini-embedding-001", "--seconds", "2"]
    assert main([*argv, "--endpoint", "embeddings"]) == 0
    out = capsys.readouterr().out
    assert "answered 429: 0.00%" in out
    assert "inputs: " in out and "100.0 to a request on average" in out


def test_a_parquet_column_or_template_is_embedded(tmp_path: Path, mock_server: MockServer) -> None:
    from tests.helpers import write_parquet

    rows = [{"key": f"k{i}", "title": f"T{i}", "body": f"body {i}"} for i in range(30)]
    jobs = write_parquet(tmp_path / "docs.parquet", rows)
    common = ("--model", MODEL["openai"], "--endpoint", "embeddings", "--dimensions", "4")
    column = ("--prompt-column", "body", "--id-column", "key")
    assert run_cli(mock_server, "openai", jobs, tmp_path / "a", *common, *column) == 0
    template = ("--prompt-template", "{title}: {body}", "--id-column", "key")
    assert run_cli(mock_server, "openai", jobs, tmp_path / "b", *common, *template) == 0
    a, b = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    model = MODEL["openai"]
    assert a["k3"]["embedding"] == pytest.approx(mock_vector(model, "body 3", 4), abs=1e-6)
    assert b["k3"]["embedding"] == pytest.approx(mock_vector(model, "T3: body 3", 4), abs=1e-6)


def test_a_pack_over_the_days_quota_waits_whole_and_a_fatal_answer_stops_the_run(
    tmp_path: Path, mock_server: MockServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pack ends as a job does, for every job in it: deferred to the reset (exit 3, its jobs
    left for a rerun), or stopped by a fatal answer (exit 4, nothing written)."""
    jobs = write_jsonl(tmp_path / "jobs.jsonl", _rows(150))  # Gemini's packs: 100 and 50
    argv = ("--model", MODEL["gemini"], "--endpoint", "embeddings", "--dimensions", "4")
    spent = ("--rpd", "1", "--on-daily-limit", "exit")
    assert run_cli(mock_server, "gemini", jobs, tmp_path / "out", *argv, *spent) == 3
    results = read_results(tmp_path / "out")
    assert len(results) == 100 and all(r["status"] == "ok" for r in results.values())
    assert "50 jobs wait for it" in capsys.readouterr().err
    gone = ("--model", "no-such-embedder", "--endpoint", "embeddings", "--dimensions", "4")
    assert run_cli(mock_server, "gemini", jobs, tmp_path / "gone", *gone) == 4
    assert read_results(tmp_path / "gone") == {}
