"""The mock provider's limits on an injected wall clock, through its ASGI app."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from batcher import RateLimitError
from batcher._config.limits import LimitTable
from batcher._wire.providers import get_provider, rate_hints
from batcher.mock import MockConfig, create_app

pytestmark = pytest.mark.anyio

NOON = 1_800_000_000.0 + 12 * 3600  # 12:00 Pacific, at the start of a minute


class Wall:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


def _client(wall: Wall, window: float = 1.0, **limits: Any) -> httpx.AsyncClient:
    config = MockConfig(limits=LimitTable.build(**limits), openai_window=window)
    app = create_app(config, clock=wall)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mock")


async def _gemini(client: httpx.AsyncClient, text: str = "hello there") -> httpx.Response:
    return await client.post(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        json={"contents": [{"parts": [{"text": text}]}]},
        headers={"x-goog-api-key": "k"},
    )


async def _openai(client: httpx.AsyncClient, max_tokens: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens:
        body["max_tokens"] = max_tokens
    return await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": "Bearer k"}
    )


async def test_gemini_counts_clock_minutes_and_answers_the_real_429() -> None:
    wall = Wall()
    async with _client(wall, rpm=3) as client:
        wall.now += 50
        assert [(await _gemini(client)).status_code for _ in range(4)] == [200, 200, 200, 429]
        rejected = await _gemini(client)
        error = rejected.json()["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        (violation,) = error["details"][0]["violations"]
        assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
        assert violation["quotaValue"] == "3"
        assert error["details"][2] == {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "10s",
        }
        with pytest.raises(RateLimitError) as info:
            get_provider("gemini").parse(rejected)
        assert info.value.retry_after == 10 and info.value.scope == "requests"
        assert not info.value.per_day
        wall.now += 10  # the next clock minute
        assert (await _gemini(client)).status_code == 200
        stats = (await client.get("/admin/stats")).json()
        assert (stats["accepted"], stats["rejected"]) == (4, 2)


async def test_gemini_input_tokens_per_minute_and_the_daily_quota() -> None:
    wall = Wall()
    async with _client(wall, tier="gemini-free") as client:  # flash: 10 RPM, 250K TPM, 20 RPD
        big = "word " * 200_000
        assert (await _gemini(client, big)).status_code == 200
        too_much = await _gemini(client, big)
        assert too_much.status_code == 429
        assert "InputTokensPerModelPerMinute-FreeTier" in too_much.text
        codes = []
        for _ in range(25):
            wall.now += 6.5  # under 10 a minute
            codes.append((await _gemini(client)).status_code)
        assert codes.count(200) == 19  # 20 a day, one spent on the big prompt
        per_day = await _gemini(client)
        with pytest.raises(RateLimitError) as info:
            get_provider("gemini").parse(per_day)
        assert info.value.per_day and "PerDay" in (info.value.quota or "")
        wall.now = 1_800_000_000.0 + 86_400 + 1  # past midnight Pacific
        assert (await _gemini(client)).status_code == 200


async def test_openai_quantizes_per_second_counts_rejections_and_sends_headers() -> None:
    wall = Wall()
    async with _client(wall, rpm=120, tpm=6_000) as client:  # 2 a second, 100 tokens a second
        ok = await _openai(client)
        hints = rate_hints(ok.headers)
        assert (hints.limit_requests, hints.remaining_requests) == (120, 119)
        assert hints.limit_tokens == 6_000 and hints.reset_requests == pytest.approx(1.0)
        assert (await _openai(client)).status_code == 200
        rejected = await _openai(client)
        assert rejected.status_code == 429
        assert rejected.headers["retry-after-ms"] == "1000"
        err = rejected.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        wall.now += 1.0
        assert (await _openai(client)).status_code == 200
        # the rejected request counted: 4 in the last minute
        assert rate_hints((await _openai(client)).headers).remaining_requests == 115
        wall.now += 1.0
        assert (await _openai(client, max_tokens=90)).status_code == 200  # prompt + max_tokens
        tokens = await _openai(client, max_tokens=90)
        assert tokens.status_code == 429 and tokens.json()["error"]["type"] == "tokens"


async def test_openai_limits_quantized_per_10_s_windows_as_azure_may() -> None:
    wall = Wall()
    async with _client(wall, window=10.0, rpm=12) as client:  # 2 requests per 10 s
        wall.now += 9.5  # late in the first window: its whole quantum is still there
        assert [(await _openai(client)).status_code for _ in range(3)] == [200, 200, 429]
        assert (await _openai(client)).headers["retry-after-ms"] == "500"
        wall.now += 0.5  # the next 10 s
        assert (await _openai(client)).status_code == 200
    async with _client(wall, window=10.0, tpm=600) as client:  # 100 tokens per 10 s
        assert (await _openai(client, max_tokens=80)).status_code == 200  # prompt + max_tokens
        tokens = await _openai(client, max_tokens=80)
        assert tokens.status_code == 429 and tokens.json()["error"]["type"] == "tokens"
        wall.now += 9.9
        assert (await _openai(client, max_tokens=80)).status_code == 429  # the same window
        wall.now += 0.1
        assert (await _openai(client, max_tokens=80)).status_code == 200


async def test_geminis_openai_endpoint_wraps_its_429_in_a_list() -> None:
    wall = Wall()
    async with _client(wall, rpm=1) as client:
        body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}
        headers = {"authorization": "Bearer k"}
        url = "/v1beta/openai/chat/completions"
        assert (await client.post(url, json=body, headers=headers)).status_code == 200
        rejected = await client.post(url, json=body, headers=headers)
        assert rejected.status_code == 429 and isinstance(json.loads(rejected.content), list)
        with pytest.raises(RateLimitError):
            get_provider("openai").parse(rejected)
