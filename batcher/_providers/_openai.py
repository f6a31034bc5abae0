"""The OpenAI chat/completions wire format, spoken by OpenAI and most compatible servers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import FatalProviderError, RateLimitError, RetryableError
from .._jobs import Job, ProviderName
from ._base import (
    Answer,
    Completion,
    RequestSpec,
    classify_status,
    count,
    error_object,
    json_body,
    retry_after,
    str_or_none,
)

__all__ = ["OpenAIProvider"]

_FATAL_CODES = frozenset({"insufficient_quota", "invalid_api_key", "model_not_found"})


def build_body(job: Job, model: str) -> dict[str, Any]:
    """The chat/completions body for a job: its native body if it has one, else built from it."""
    if job.native is not None and job.native.provider == "openai":
        return {**job.native.body, "model": model}
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.text} for m in job.messages],
    }
    if job.temperature is not None:
        body["temperature"] = job.temperature
    if job.max_tokens is not None:
        body["max_tokens"] = job.max_tokens
    if job.top_p is not None:
        body["top_p"] = job.top_p
    if job.stop:
        body["stop"] = list(job.stop)
    return body


class OpenAIProvider:
    """``POST {base}/chat/completions`` with a Bearer key."""

    name: ProviderName = "openai"
    default_base_url: str = "https://api.openai.com/v1"
    key_envs: tuple[str, ...] = ("OPENAI_API_KEY",)
    per_second_limits = True
    charges_output = True

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def build(self, job: Job, model: str) -> RequestSpec:
        return RequestSpec("chat/completions", build_body(job, model))

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body)
        try:
            choice = body["choices"][0]
            usage: Mapping[str, Any] = body.get("usage") or {}
            return Completion(
                text=str_or_none(choice["message"].get("content")),
                finish_reason=str_or_none(choice.get("finish_reason")),
                input_tokens=count(usage.get("prompt_tokens")),
                output_tokens=count(usage.get("completion_tokens")),
                model=str_or_none(body.get("model")),
                raw=response.text,
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RetryableError(
                "HTTP 200 without choices[0].message: not a chat completion",
                status=200,
                body=response.text[:500],
            ) from None

    def _error(self, response: Answer, body: Any) -> Exception:
        err = error_object(body)
        message = str(err.get("message") or f"HTTP {response.status_code}")
        code = err.get("code")
        text = response.text[:2000]
        if code in _FATAL_CODES or response.status_code == 401:
            return FatalProviderError(
                f"{code or response.status_code}: {message}", status=response.status_code, body=text
            )
        delay = retry_after(response.headers, message)
        if response.status_code == 429:
            kind = err.get("type")
            return RateLimitError(
                message,
                body=text,
                retry_after=delay,
                scope=kind if kind in ("requests", "tokens") else None,
                quota=str(code) if code else None,
            )
        return classify_status(response.status_code, message, text, delay)
