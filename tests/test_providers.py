"""Reading providers' answers: completions, and every error classified once."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batcher import (
    FatalProviderError,
    PermanentJobError,
    ProviderError,
    RateLimitError,
    RetryableError,
)
from batcher._wire.providers import get_provider
from batcher._wire.providers._base import parse_duration, retry_after


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


GEMINI_429 = {
    "error": {
        "code": 429,
        "status": "RESOURCE_EXHAUSTED",
        "message": "You exceeded your current quota ... Please retry in 58.8s.",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"},
        ],
    }
}


def test_openai_completion() -> None:
    body = {
        "model": "gpt-x",
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    c = get_provider("openai").parse(_response(200, body))
    assert (c.text, c.finish_reason, c.input_tokens, c.output_tokens, c.model) == (
        "hi",
        "stop",
        3,
        1,
        "gpt-x",
    )
    assert json.loads(c.raw) == body


def test_an_openai_refusal_is_a_permanent_error_with_its_text() -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    body = {
        "model": "gpt-x",
        "choices": [{"message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 6},
    }
    with pytest.raises(PermanentJobError, match="the model refused: I can't help with that") as e:
        get_provider("openai").parse(_response(200, body))
    assert e.value.status == 200
    # a null refusal (what every answer carries) is no refusal
    message.update(content="hi", refusal=None)
    assert get_provider("openai").parse(_response(200, body)).text == "hi"


def test_gemini_completion_skips_thoughts_and_counts_them_as_output() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "parts": [{"text": "think", "thought": True}, {"text": "a"}, {"text": "b"}]
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 7,
        },
        "modelVersion": "gemini-2.5-flash",
    }
    c = get_provider("gemini").parse(_response(200, body))
    assert (c.text, c.finish_reason, c.input_tokens, c.output_tokens) == ("ab", "STOP", 5, 9)


def test_gemini_429_uses_retry_info_over_the_message() -> None:
    with pytest.raises(RetryableError) as info:
        get_provider("gemini").parse(_response(429, GEMINI_429))
    assert info.value.retry_after == 26.0
    assert info.value.status == 429


def test_gemini_429_without_retry_info_reads_the_message() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "Quota exceeded. Please retry in 1.5s.",
        }
    }
    with pytest.raises(RetryableError) as info:
        get_provider("gemini").parse(_response(429, body))
    assert info.value.retry_after == 1.5


def test_gemini_openai_endpoint_array_body() -> None:
    body = [
        {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
    ]
    with pytest.raises(RetryableError, match="Resource exhausted"):
        get_provider("openai").parse(_response(429, body, {"retry-after": "3"}))


def test_openai_retry_after_ms_wins() -> None:
    body = {
        "error": {
            "message": "Rate limit reached. Please try again in 644ms.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }
    with pytest.raises(RetryableError) as info:
        get_provider("openai").parse(
            _response(429, body, {"retry-after-ms": "250", "retry-after": "1"})
        )
    assert info.value.retry_after == 0.25
    with pytest.raises(RetryableError) as info:
        get_provider("openai").parse(_response(429, body))
    assert info.value.retry_after == pytest.approx(0.644)


@pytest.mark.parametrize(
    ("provider", "status", "body", "cls"),
    [
        (
            "openai",
            401,
            {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}},
            FatalProviderError,
        ),
        (
            "openai",
            429,
            {"error": {"message": "quota", "code": "insufficient_quota"}},
            FatalProviderError,
        ),
        (
            "openai",
            404,
            {"error": {"message": "no model", "code": "model_not_found"}},
            FatalProviderError,
        ),
        ("openai", 400, {"error": {"message": "bad", "code": None}}, PermanentJobError),
        ("openai", 503, {"error": {"message": "overloaded"}}, RetryableError),
        (
            "gemini",
            400,
            {
                "error": {
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                    "message": "key",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                        }
                    ],
                }
            },
            FatalProviderError,
        ),
        (
            "gemini",
            404,
            {"error": {"code": 404, "status": "NOT_FOUND", "message": "models/x"}},
            FatalProviderError,
        ),
        (
            "gemini",
            400,
            {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad"}},
            PermanentJobError,
        ),
        (
            "gemini",
            500,
            {"error": {"code": 500, "status": "INTERNAL", "message": "x"}},
            RetryableError,
        ),
        ("gemini", 200, {"promptFeedback": {"blockReason": "SAFETY"}}, PermanentJobError),
        ("gemini", 200, {"candidates": [{"finishReason": "SAFETY"}]}, PermanentJobError),
        ("gemini", 200, {"unexpected": 1}, RetryableError),
        ("openai", 200, {"unexpected": 1}, RetryableError),
        ("openai", 400, {"error": {"message": "bad", "code": [1]}}, PermanentJobError),
        ("openai", 200, b'{"choices": [{"mess', RetryableError),
    ],
)
def test_errors_are_classified(provider: str, status: int, body: Any, cls: type) -> None:
    with pytest.raises(cls):
        get_provider(provider).parse(_response(status, body))


@pytest.mark.parametrize(
    ("provider", "error", "cls", "unanswered"),
    [
        (
            "openai",
            {"message": "upstream model busy, please retry", "type": "server_error"},
            RetryableError,
            True,
        ),
        ("openai", {"message": "Provider returned error", "code": 502}, RetryableError, True),
        ("openai", {"message": "something went wrong"}, RetryableError, True),
        (
            "openai",
            {"message": "Rate limit reached", "type": "rate_limit_error"},
            RateLimitError,
            False,
        ),
        (
            "openai",
            {"message": "temperature must be at most 2", "type": "invalid_request_error"},
            PermanentJobError,
            None,
        ),
        (
            "openai",
            {"message": "Incorrect API key", "code": "invalid_api_key"},
            FatalProviderError,
            None,
        ),
        (
            "gemini",
            {"code": 503, "status": "UNAVAILABLE", "message": "The model is overloaded."},
            RetryableError,
            True,
        ),
        (
            "gemini",
            {"status": "INVALID_ARGUMENT", "message": "temperature must be at most 2"},
            PermanentJobError,
            None,
        ),
    ],
)
def test_an_error_under_http_200_is_read_for_what_it_says(
    provider: str, error: dict[str, Any], cls: type, unanswered: bool | None
) -> None:
    """Some OpenAI-compatible proxies send errors with HTTP 200: each is classified as the status
    it stands for, keeps the 200 it came with, and carries the provider's own message."""
    with pytest.raises(ProviderError) as info:
        get_provider(provider).parse(_response(200, {"error": error}))
    assert type(info.value) is cls
    assert info.value.status == 200
    assert error["message"] in info.value.message
    if unanswered is not None:
        assert isinstance(info.value, RetryableError) and info.value.unanswered is unanswered


def test_an_error_under_http_200_from_an_images_proxy() -> None:
    provider = get_provider("openai", "images")
    with pytest.raises(RetryableError, match="upstream model busy") as info:
        provider.parse(_response(200, {"error": {"message": "upstream model busy"}}))
    assert info.value.unanswered


def test_only_no_answer_counts_toward_an_outage() -> None:
    """A 5xx, a gateway's page, a reply that is not a completion: what says the endpoint is up
    (any JSON answer, a 408 or 409 included) does not count toward an outage."""
    parse = get_provider("openai").parse
    cases = [
        (_response(503, {"error": {"message": "overloaded"}}), True),
        (_response(502, b"<html>Bad Gateway</html>"), True),
        (_response(200, b'{"choices": [{"mess'), True),
        (_response(200, {"unexpected": 1}), False),
        (_response(408, {"error": {"message": "request timeout"}}), False),
        (_response(409, {"error": {"message": "conflict"}}), False),
    ]
    for response, unanswered in cases:
        with pytest.raises(RetryableError) as info:
            parse(response)
        assert info.value.unanswered is unanswered, response.content


_KEYS = st.sampled_from(
    [
        "error",
        "choices",
        "candidates",
        "message",
        "usage",
        "content",
        "parts",
        "text",
        "details",
        "code",
        "usageMetadata",
        "promptTokenCount",
        "model",
        "finishReason",
        "promptFeedback",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)


@given(
    body=_JSON,
    status=st.sampled_from([200, 400, 401, 404, 429, 500]),
    provider=st.sampled_from(["openai", "gemini"]),
)
def test_any_json_body_gives_a_typed_completion_or_a_classified_error(
    body: Any, status: int, provider: str
) -> None:
    try:
        c = get_provider(provider).parse(_response(status, body))
    except ProviderError:
        return
    assert status == 200
    assert c.text is None or isinstance(c.text, str)
    for n in (c.input_tokens, c.output_tokens):
        assert n is None or (isinstance(n, int) and n >= 0)


def test_durations_and_retry_after() -> None:
    assert parse_duration("1m30.5s") == 90.5
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("6m0s") == 360
    assert parse_duration("soon") is None
    assert retry_after(httpx.Headers({"retry-after": "7"})) == 7
    assert retry_after(httpx.Headers({}), "Please try again in 2s.") == 2
    assert retry_after(httpx.Headers({})) is None
