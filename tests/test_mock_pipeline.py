"""The mock's request pipeline on plain values, with no HTTP server in between."""

from __future__ import annotations

import json
import math

import pytest

from batcher._config.limits import LimitTable
from batcher.mock import Faults, MockConfig, mock_reply
from batcher.mock._pipeline import Pipeline
from batcher.mock._wire import Request, Response

pytestmark = pytest.mark.anyio

OPENAI = {"authorization": "Bearer k"}


def _chat(text: str, path: str = "/v1/chat/completions", model: str = "m") -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return Request("POST", path, OPENAI, {}, json.dumps(body).encode())


def _headers(response: Response) -> dict[str, str]:
    return dict(response.headers)


async def test_a_call_is_answered_and_counted() -> None:
    pipeline = Pipeline(MockConfig())
    response = await pipeline.handle(_chat("hello there"))
    assert response.status == 200 and not response.drop
    assert _headers(response)["content-type"] == "application/json"
    body = json.loads(response.body)
    assert body["choices"][0]["message"]["content"] == mock_reply("m", "hello there")
    assert pipeline.state.accepted == 1 and pipeline.state.by_model == {"m": 1}


async def test_markers_answer_in_the_callers_wire_format() -> None:
    pipeline = Pipeline(MockConfig())
    failed = await pipeline.handle(_chat("[[fail:400]] x"))
    assert failed.status == 400 and "marked to fail" in json.loads(failed.body)["error"]["message"]
    gemini = Request(
        "POST",
        "/v1beta/models/g:generateContent",
        {"x-goog-api-key": "k"},
        {},
        json.dumps({"contents": [{"parts": [{"text": "[[flaky:1]] y"}]}]}).encode(),
    )
    first, second = await pipeline.handle(gemini), await pipeline.handle(gemini)
    assert first.status == 503 and json.loads(first.body)["error"]["status"] == "UNAVAILABLE"
    assert second.status == 200
    assert dict(pipeline.state.by_status) == {400: 1, 503: 1, 200: 1}


async def test_a_dropped_answer_promises_more_than_it_sends() -> None:
    pipeline = Pipeline(MockConfig(faults=Faults(drop=1.0)))
    response = await pipeline.handle(_chat("x"))
    assert response.drop and int(_headers(response)["content-length"]) > len(response.body)
    assert pipeline.state.dropped == 1 and pipeline.state.by_status == {0: 1}


async def test_a_truncated_answer_is_a_200_cut_in_half() -> None:
    whole = await Pipeline(MockConfig()).handle(_chat("x"))
    pipeline = Pipeline(MockConfig(faults=Faults(truncate=1.0)))
    cut = await pipeline.handle(_chat("x"))
    assert cut.status == 200 and not cut.drop
    assert cut.body == whole.body[: len(whole.body) // 2]  # ids and `created` are the same
    assert pipeline.state.truncated == 1 and pipeline.state.accepted == 1


async def test_geminis_openai_route_sends_no_openai_rate_headers() -> None:
    pipeline = Pipeline(MockConfig(limits=LimitTable.build(rpm=60)))
    openai = await pipeline.handle(_chat("x"))
    gemini = await pipeline.handle(_chat("x", "/v1beta/openai/chat/completions"))
    assert _headers(openai)["x-ratelimit-limit-requests"] == "60"
    assert gemini.status == 200 and "x-ratelimit-limit-requests" not in _headers(gemini)


async def test_unknown_paths_and_methods_are_not_counted() -> None:
    pipeline = Pipeline(MockConfig())
    assert (await pipeline.handle(Request("POST", "/v1/nothing"))).status == 404
    assert (await pipeline.handle(Request("POST", "/v1beta/models/a/b"))).status == 404
    wrong = await pipeline.handle(Request("GET", "/v1/chat/completions"))
    assert wrong.status == 405 and _headers(wrong)["allow"] == "POST"
    assert pipeline.state.requests == 0


async def test_reset_starts_new_counters() -> None:
    pipeline = Pipeline(MockConfig())
    await pipeline.handle(_chat("x"))
    assert (await pipeline.handle(Request("POST", "/admin/reset"))).status == 200
    stats = await pipeline.handle(Request("GET", "/admin/stats", query={"timeline": "1"}))
    data = json.loads(stats.body)
    assert data["requests"] == 0 and data["timeline"] == {}


async def test_token_scale_counts_and_reports_that_many_times_the_tokenizers_tokens() -> None:
    text = "Rate limits are enforced per model, so a runner paces its requests evenly."
    plain = json.loads((await Pipeline(MockConfig()).handle(_chat(text))).body)["usage"]
    scaled = Pipeline(MockConfig(token_scale=1.6))
    usage = json.loads((await scaled.handle(_chat(text))).body)["usage"]
    assert usage["prompt_tokens"] == math.ceil(plain["prompt_tokens"] * 1.6)
    assert usage["completion_tokens"] == plain["completion_tokens"]  # the answer is unscaled
    assert scaled.state.input_tokens == usage["prompt_tokens"]
