"""The mock provider over real sockets: the providers' JSON shapes, errors and counters."""

from __future__ import annotations

import httpx

from batcher._core.tokens import count_tokens
from batcher.mock import MockServer, mock_reply
from tests.helpers import mock_stats


def test_openai_shape_and_length_cut(mock_server: MockServer) -> None:
    url = mock_server.base_url("openai") + "/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three four five"}]}
    r = httpx.post(url, json=body, headers={"authorization": "Bearer k"})
    data = r.json()
    assert r.status_code == 200 and data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == mock_reply("m", "one two three four five")
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["prompt_tokens"] == count_tokens("one two three four five")
    cut = httpx.post(url, json={**body, "max_tokens": 8}, headers={"authorization": "Bearer k"})
    choice = cut.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert count_tokens(choice["message"]["content"]) <= 8


def test_gemini_shape(mock_server: MockServer) -> None:
    url = mock_server.base_url("gemini") + "/models/gemini-2.5-flash:generateContent"
    body = {
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [{"role": "user", "parts": [{"text": "你好世界"}]}],
    }
    data = httpx.post(url, json=body, headers={"x-goog-api-key": "k"}).json()
    cand = data["candidates"][0]
    assert cand["content"]["parts"][0]["text"] == mock_reply("gemini-2.5-flash", "你好世界")
    assert cand["finishReason"] == "STOP" and cand["content"]["role"] == "model"
    assert data["usageMetadata"]["promptTokenCount"] == count_tokens("sys\n你好世界") == 5


def test_missing_keys_and_bad_bodies_get_the_providers_errors(mock_server: MockServer) -> None:
    oa = mock_server.base_url("openai") + "/chat/completions"
    r = httpx.post(oa, json={"model": "m", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(oa, content=b"{nope", headers={"authorization": "Bearer k"})
    assert r.status_code == 400 and "error" in r.json()
    gm = mock_server.base_url("gemini") + "/models/g:generateContent"
    r = httpx.post(gm, json={"contents": [{"parts": [{"text": "x"}]}]})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    r = httpx.post(gm, json={"contents": []}, headers={"x-goog-api-key": "k"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    stats = mock_stats(mock_server)
    assert stats["requests"] == 4 and stats["rejected"] == 4 and stats["accepted"] == 0
    assert stats["by_status"] == {"400": 2, "401": 1, "403": 1}
