"""OpenAI's Responses API (``--endpoint responses``): the request built from each job shape, the
answer read (reasoning tokens, incomplete, refusal, malformed), and runs on the mock over
loopback: typed outputs, images in, a pool, kill -9 and resume."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

import batcher
from batcher._cli.exits import EXIT_USAGE
from batcher._config.schema import load_schema
from batcher._core.errors import FatalProviderError, PermanentJobError, RetryableError
from batcher._core.media import Media
from batcher._core.tokens import count_tokens
from batcher._jobs import Job, Message, Part
from batcher._wire.providers import get_provider
from batcher._wire.providers._responses import OpenAIResponses
from batcher._wire.providers._structured import SchemaProvider
from batcher.mock import MockConfig, MockServer
from batcher.mock._reply import mock_reply
from batcher.mock._responses import REASONING_TOKENS
from tests.helpers import kill_once_kept, read_results, run_cli, run_command, write_jsonl
from tests.test_images import PNG, _desc, _tokens
from tests.test_media import PDF, WAV, data_uri

pytestmark = pytest.mark.usefixtures("api_keys")

ROOT = Path(__file__).resolve().parent.parent
TICKETS = ROOT / "jobs" / "tickets.schema.json"
ARGV = ("--endpoint", "responses")
EXIT_ERRORS = 1


def _inline(media: Media) -> tuple[str, str]:
    """Stands in for reading a file: its kind's MIME type and a marker for its data."""
    return ("image/png" if media.kind == "image" else "application/pdf"), "DATA"


class _Answer:
    """An HTTP answer as the parsers read it."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.content = self.text.encode()


def _answer(output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "gpt-5-mini-2025-08-07",
        "output": output,
        "usage": {
            "input_tokens": 11,
            "output_tokens": 90,
            "output_tokens_details": {"reasoning_tokens": 64},
        },
    }
    return body | extra


def _message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "status": "completed", "content": list(parts)}


# --- the request ----------------------------------------------------------------------------------


def test_a_prompt_with_a_system_turn_is_instructions_and_input() -> None:
    job = Job.from_prompt(
        "a",
        "Why tides?",
        system="Be brief.",
        max_tokens=300,
        temperature=0.2,
        top_p=0.9,
        reasoning_effort="high",
    )
    spec = get_provider("openai", "responses").build(job, "gpt-5")
    assert spec.path == "responses"
    assert spec.body == {
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": "Why tides?",
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning": {"effort": "high"},
        "store": False,
    }


def test_a_conversation_with_images_and_files_is_input_messages_of_parts() -> None:
    image = Media("/pics/a.png", "image", "low")
    url = Media("https://example.test/b.png", "image")
    pdf = Media("/docs/c.pdf", "file")
    job = Job(
        id="b",
        messages=(
            Message("system", (Part("One."),)),
            Message("system", (Part("Two."),)),
            Message("user", (Part("Name a colour."),)),
            Message("assistant", (Part("Blue."),)),
            Message("user", (Part("Compare"), Part(media=image), Part(media=url), Part(media=pdf))),
        ),
    )
    body = OpenAIResponses().build(job, "m", _inline).body
    assert body["instructions"] == "One.\n\nTwo."
    assert body["input"] == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Compare"},
                {"type": "input_image", "image_url": "data:image/png;base64,DATA", "detail": "low"},
                {
                    "type": "input_image",
                    "image_url": "https://example.test/b.png",
                    "detail": "auto",
                },
                {
                    "type": "input_file",
                    "filename": "file.pdf",
                    "file_data": "data:application/pdf;base64,DATA",
                },
            ],
        },
    ]
    assert "max_output_tokens" not in body and "reasoning" not in body


def test_the_schema_goes_as_text_format_in_the_same_strict_form_as_chat() -> None:
    schema = load_schema(str(TICKETS))
    job = Job.from_prompt("a", "hi", reasoning_effort="low")
    responses = SchemaProvider(get_provider("openai", "responses"), schema).build(job, "m").body
    chat = SchemaProvider(get_provider("openai"), schema).build(job, "m").body
    strict = chat["response_format"]["json_schema"]
    assert responses["text"] == {
        "format": {
            "type": "json_schema",
            "name": strict["name"],
            "schema": strict["schema"],
            "strict": True,
        }
    }
    assert "response_format" not in responses
    assert chat["reasoning_effort"] == "low"  # chat's own field for the same job


# --- the answer -----------------------------------------------------------------------------------


def test_the_text_is_the_output_text_of_message_items_and_reasoning_counts_as_output() -> None:
    answer = _answer(
        [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            _message(
                {"type": "output_text", "text": "Hello ", "annotations": []},
                {"type": "output_text", "text": "there.", "annotations": []},
            ),
        ]
    )
    got = OpenAIResponses().parse(_Answer(answer))
    assert got.text == "Hello there."
    assert (got.finish_reason, got.input_tokens, got.output_tokens) == ("stop", 11, 90)
    assert got.model == "gpt-5-mini-2025-08-07"
    assert json.loads(got.raw)["usage"]["output_tokens_details"]["reasoning_tokens"] == 64


def test_an_incomplete_answer_is_recorded_as_chats_length() -> None:
    cut = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    part = {"type": "output_text", "text": "Hel", "annotations": []}
    got = OpenAIResponses().parse(_Answer(_answer([_message(part)], **cut)))
    assert (got.text, got.finish_reason) == ("Hel", "length")
    # all of max_output_tokens spent reasoning: no message at all
    only = OpenAIResponses().parse(_Answer(_answer([{"type": "reasoning", "summary": []}], **cut)))
    assert (only.text, only.finish_reason, only.output_tokens) == (None, "length", 90)


def test_a_refusal_is_a_permanent_error_and_a_malformed_answer_a_retryable_one() -> None:
    refusal = _answer([_message({"type": "refusal", "refusal": "I can't help with that."})])
    with pytest.raises(PermanentJobError, match="the model refused: I can't help with that"):
        OpenAIResponses().parse(_Answer(refusal))
    for bad in ({"id": "resp_1", "object": "response"}, _answer([{"type": "message"}])):
        with pytest.raises(RetryableError, match="not a Responses answer"):
            OpenAIResponses().parse(_Answer(bad))
    with pytest.raises(RetryableError, match="status 'in_progress'"):
        OpenAIResponses().parse(_Answer(_answer([], status="in_progress")))


def test_errors_are_classified_as_chats() -> None:
    failed = _answer([], status="failed", error={"code": "server_error", "message": "oops"})
    with pytest.raises(RetryableError, match="oops"):
        OpenAIResponses().parse(_Answer(failed))
    bad_key = {
        "error": {"message": "no", "type": "invalid_request_error", "code": "invalid_api_key"}
    }
    with pytest.raises(FatalProviderError):
        OpenAIResponses().parse(_Answer(bad_key, 401))
    invalid = {"error": {"message": "bad param", "type": "invalid_request_error", "code": None}}
    with pytest.raises(PermanentJobError, match="bad param"):
        OpenAIResponses().parse(_Answer(invalid, 400))


# --- on the mock ----------------------------------------------------------------------------------


def test_jobs_run_with_reasoning_tokens_counted_and_priced(
    tmp_path: Path, mock_server: MockServer
) -> None:
    rows = [
        {"id": "plain", "prompt": "Why tides?", "system": "Be brief."},
        {"id": "high", "prompt": "Is 391 prime?", "reasoning_effort": "high"},
        {"id": "flag", "prompt": "Name a colour."},
        {"id": "cut", "prompt": " ".join(["word"] * 80), "max_tokens": 24 + 16},
        {"id": "spent", "prompt": "Think hard.", "reasoning_effort": "high", "max_tokens": 100},
        {
            "id": "turns",
            "messages": [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another?"},
            ],
        },
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = (*ARGV, "--model", "gpt-4.1-mini", "--reasoning-effort", "low")
    assert run_cli(mock_server, "openai", jobs, out, *argv) == 0
    got = read_results(out)
    assert {r["status"] for r in got.values()} == {"ok"}
    for job_id, prompt, effort in (
        ("plain", "Why tides?", "low"),
        ("high", "Is 391 prime?", "high"),
        ("turns", "Another?", "low"),
    ):
        row = got[job_id]
        text = mock_reply("gpt-4.1-mini", prompt)
        assert (row["text"], row["finish_reason"]) == (text, "stop")
        thought = json.loads(row["response"])["usage"]["output_tokens_details"]["reasoning_tokens"]
        assert thought == REASONING_TOKENS[effort]
        assert row["output_tokens"] == count_tokens(text) + thought
        # gpt-4.1-mini: $0.40 in, $1.60 out a million tokens, reasoning billed as output
        want = (row["input_tokens"] * 0.40 + row["output_tokens"] * 1.60) / 1e6
        assert row["cost_usd"] == pytest.approx(want)
    assert got["plain"]["input_tokens"] == count_tokens("Be brief.\nWhy tides?")
    cut = got["cut"]
    assert cut["finish_reason"] == "length" and cut["output_tokens"] == 40
    assert 0 < count_tokens(cut["text"]) <= 24
    spent = got["spent"]  # high effort's 256 reasoning tokens spend all of 100
    assert (spent["text"], spent["finish_reason"], spent["output_tokens"]) == (None, "length", 100)
    assert json.loads(spent["response"])["status"] == "incomplete"


def test_a_schema_gives_typed_parsed_answers(tmp_path: Path, mock_server: MockServer) -> None:
    rows = [{"id": f"t{i}", "prompt": f"Ana Ruiz: lamp {i} broke, order {i}"} for i in range(4)]
    rows.append({"id": "again", "prompt": "Bo: kettle late [[invalid:1]]"})
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = (*ARGV, "--model", "gpt-5-mini", "--schema", str(TICKETS))
    assert run_cli(mock_server, "openai", jobs, out, *argv) == 0
    got = read_results(out)
    schema = load_schema(str(TICKETS))
    for row in got.values():
        assert row["status"] == "ok"
        assert row["parsed"] == schema.check(_completion(row["text"]))
        assert row["parsed"]["sentiment"] in ("positive", "neutral", "negative")
    assert got["again"]["attempts"] == 2  # the invalid answer was retried


def _completion(text: str) -> Any:
    from batcher._core.completion import Completion

    return Completion(text, "stop", 1, 1, None, "")


def test_images_and_files_reach_the_model(tmp_path: Path, mock_server: MockServer) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    rows = [
        {"id": "path", "prompt": "look", "images": ["a.png"]},
        {"id": "pdf", "prompt": "read", "files": [data_uri(PDF, "application/pdf")]},
        {
            "id": "parts",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": data_uri(PNG)}},
                    ],
                }
            ],
        },
    ]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    assert run_cli(mock_server, "openai", jobs, out, *ARGV, "--model", "gpt-4o") == 0
    got = read_results(out)
    for job_id in ("path", "parts"):
        assert got[job_id]["text"].endswith(f"look {_desc(PNG)}")
        want = count_tokens(f"look {_desc(PNG)}") + _tokens("openai", PNG)
        assert got[job_id]["input_tokens"] == want
    assert "[application/pdf sha256:" in got["pdf"]["text"]


def test_what_the_responses_api_cannot_take_is_refused_before_sending(
    tmp_path: Path, mock_server: MockServer
) -> None:
    out = tmp_path / "out"
    for row in (
        {"id": "a", "prompt": "x", "stop": ["\n"]},
        {"id": "b", "prompt": "x", "files": [data_uri(WAV, "audio/wav")]},
        {"id": "c", "prompt": "x", "reasoning_effort": "extreme"},
    ):
        jobs = write_jsonl(tmp_path / "jobs.jsonl", [row])
        assert run_cli(mock_server, "openai", jobs, out, *ARGV, "--model", "m") == EXIT_USAGE
        assert not out.exists()
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "x"}])
    for provider, flags in (
        ("gemini", ARGV),
        ("openai", (*ARGV, "--size", "1024x1024")),
        ("gemini", ("--reasoning-effort", "low")),
        ("openai", ("--endpoint", "embeddings", "--reasoning-effort", "low")),
    ):
        assert run_cli(mock_server, provider, jobs, out, *flags, "--model", "m") == EXIT_USAGE
        assert not out.exists()
    effort = write_jsonl(
        tmp_path / "e.jsonl", [{"id": "a", "prompt": "x", "reasoning_effort": "low"}]
    )
    assert run_cli(mock_server, "gemini", effort, out, "--model", "m") == EXIT_USAGE
    assert not out.exists()


def test_a_malformed_answer_is_a_clear_error_row(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/responses"
        return httpx.Response(200, json={"id": "resp_1", "object": "response"})

    summary = batcher.run_sync(
        [{"id": "a", "prompt": "x"}],
        tmp_path,
        transport=httpx.MockTransport(answer),
        options=batcher.RunOptions(
            api_key="k", base_url="http://p.test/v1", model="m", api="responses", max_attempts=1
        ),
    )
    assert (summary.ok, summary.exit_code) == (0, EXIT_ERRORS)
    row = read_results(tmp_path)["a"]
    assert row["status"] == "error"
    assert "HTTP 200 without output[]: not a Responses answer" in row["error"]


def test_a_pool_serves_the_responses_api(tmp_path: Path) -> None:
    pool = tmp_path / "pool.toml"
    lines = []
    for name in ("a", "b"):
        lines += ["[[endpoint]]", f'name = "{name}"', 'provider = "openai"', 'mock = "default"']
        lines.append('models = ["gpt-5-mini"]')
    pool.write_text("\n".join(lines))
    rows = [{"id": f"p{i}", "prompt": f"question {i}", "model": "gpt-5-mini"} for i in range(40)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    from batcher._cli.main import main

    argv = ["run", str(jobs), "--out", str(tmp_path / "out"), "--pool", str(pool), *ARGV]
    assert main([*argv, "--no-progress"]) == 0
    got = read_results(tmp_path / "out")
    assert len(got) == 40 and {r["status"] for r in got.values()} == {"ok"}
    assert {r["endpoint"] for r in got.values()} <= {"a", "b"}
    thought = REASONING_TOKENS["medium"]  # gpt-5-mini reasons by default
    for row in got.values():
        assert row["output_tokens"] == count_tokens(row["text"]) + thought


def test_kill_9_mid_run_then_resume_leaves_every_job_once(tmp_path: Path, start_mock: Any) -> None:
    server = start_mock(MockConfig(latency_ms=(5.0, 20.0)))
    n = 600
    rows = [{"id": f"r{i:04d}", "prompt": f"question {i}"} for i in range(n)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    base = server.base_url("openai")
    command = [*run_command(jobs, out, base, "--model", "gpt-5-mini", *ARGV, "--rpm", "1500")]
    env = {**os.environ, "OPENAI_API_KEY": "sk-crash"}
    rng = random.Random(11)
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
    got = read_results(out)  # fails if an id appears twice
    assert set(got) == {r["id"] for r in rows}
    assert {r["status"] for r in got.values()} == {"ok"}
    assert kills >= 1


# --- the mock's wire ------------------------------------------------------------------------------


def _call(body: dict[str, Any]) -> Any:
    from batcher.mock._wire import Request

    headers = {"authorization": "Bearer k"}
    return Request("POST", "/v1/responses", headers, {}, json.dumps(body).encode())


@pytest.mark.anyio
async def test_the_mock_enforces_chats_limits_and_refuses_as_openai() -> None:
    from batcher._config.limits import LimitTable
    from batcher.mock._pipeline import Pipeline

    config = MockConfig(limits=LimitTable.build(rpm=2), openai_per_second=False)
    pipeline = Pipeline(config, clock=lambda: 1000.0)
    body = {"model": "m", "input": "hello", "reasoning": {"effort": "low"}}
    first = await pipeline.handle(_call(body))
    assert first.status == 200
    assert dict(first.headers)["x-ratelimit-limit-requests"] == "2"
    answer = json.loads(first.body)
    assert answer["output"][0]["type"] == "reasoning"
    assert answer["output"][1]["content"][0]["text"] == mock_reply("m", "hello")
    assert answer["usage"]["output_tokens_details"]["reasoning_tokens"] == REASONING_TOKENS["low"]
    assert (await pipeline.handle(_call(body))).status == 200
    limited = await pipeline.handle(_call(body))  # the third request of the minute
    assert limited.status == 429
    assert json.loads(limited.body)["error"]["code"] == "rate_limit_exceeded"
    for bad, said in (
        ({**body, "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"model": "m", "input": []}, "'input'"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "file_data",
        ),
    ):
        refused = await Pipeline(MockConfig()).handle(_call(bad))
        assert refused.status == 400 and said in json.loads(refused.body)["error"]["message"]


@pytest.mark.parametrize("mode", ["batch", "auto"])
def test_batch_mode_sends_responses_lines_at_half_price(
    tmp_path: Path, mock_server: MockServer, mode: str
) -> None:
    rows = [{"id": f"b{i}", "prompt": f"Ana: lamp {i} broke"} for i in range(6)]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    argv = (*ARGV, "--model", "gpt-5-mini", "--schema", str(TICKETS), "--mode", mode)
    assert run_cli(mock_server, "openai", jobs, out, *argv, "--batch-min", "1") == 0
    got = read_results(out)
    assert {(r["status"], r["via"]) for r in got.values()} == {("ok", "batch")}
    thought = REASONING_TOKENS["medium"]  # gpt-5-mini reasons by default
    for row in got.values():
        assert row["parsed"]["sentiment"] in ("positive", "neutral", "negative")
        assert row["output_tokens"] == count_tokens(row["text"]) + thought
        # gpt-5-mini: $0.25 in, $2.00 out a million tokens, half price by batch
        want = (row["input_tokens"] * 0.25 + row["output_tokens"] * 2.00) / 2e6
        assert row["cost_usd"] == pytest.approx(want)
