"""The OpenAI chat/completions wire format, spoken by OpenAI and most compatible servers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._core.errors import FatalProviderError, PermanentJobError, RateLimitError, RetryableError
from ..._core.media import Inline, inline_now
from ..._jobs import Job, Message, ProviderName
from ._base import (
    Answer,
    Completion,
    RequestSpec,
    classify_status,
    count,
    error_object,
    json_body,
    retry_after,
    status_said,
    str_or_none,
)

__all__ = ["OpenAIProvider"]

_FATAL_CODES = frozenset({"insufficient_quota", "invalid_api_key", "model_not_found"})


def _content(m: Message, inline: Inline) -> str | list[dict[str, Any]]:
    """A message's content: its text, or content parts when it carries images or files.

    Images go as ``image_url`` (a URL as given, else a data: URI), audio as ``input_audio``,
    other files (PDFs) as ``file`` with ``file_data``, or with ``file_id`` once uploaded to
    ``/files``.
    https://platform.openai.com/docs/guides/images-vision, .../guides/audio, .../guides/pdf-files
    """
    if all(p.media is None for p in m.parts):
        return m.text
    parts: list[dict[str, Any]] = []
    for p in m.parts:
        media = p.media
        if media is None:
            if p.text:
                parts.append({"type": "text", "text": p.text})
            continue
        if media.uploaded is not None:
            parts.append({"type": "file", "file": {"file_id": media.uploaded[0]}})
            continue
        if media.kind == "image" and media.is_url:
            image: dict[str, Any] = {"url": media.ref}
        else:
            mime, data = inline(media)
            if mime.startswith("audio/"):
                fmt = "mp3" if mime == "audio/mpeg" else mime.removeprefix("audio/")
                parts.append({"type": "input_audio", "input_audio": {"data": data, "format": fmt}})
                continue
            if not mime.startswith("image/"):
                file = {"filename": "file.pdf", "file_data": f"data:{mime};base64,{data}"}
                parts.append({"type": "file", "file": file})
                continue
            image = {"url": f"data:{mime};base64,{data}"}
        if media.detail is not None:
            image["detail"] = media.detail
        parts.append({"type": "image_url", "image_url": image})
    return parts


def build_body(job: Job, model: str, inline: Inline = inline_now) -> dict[str, Any]:
    """The chat/completions body for a job: its native body if it has one, else built from it.
    ``inline`` gives each local image's or file's data (read now, unless fingerprinting)."""
    if job.native is not None and job.native.provider == "openai":
        return {**job.native.body, "model": model}
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": _content(m, inline)} for m in job.messages],
    }
    if job.temperature is not None:
        body["temperature"] = job.temperature
    if job.max_tokens is not None:
        body["max_tokens"] = job.max_tokens
    if job.top_p is not None:
        body["top_p"] = job.top_p
    if job.stop:
        body["stop"] = list(job.stop)
    if job.reasoning_effort is not None:
        body["reasoning_effort"] = job.reasoning_effort
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

    def build(self, job: Job, model: str, inline: Inline = inline_now) -> RequestSpec:
        return RequestSpec("chat/completions", build_body(job, model, inline))

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body, response.status_code)
        try:
            choice = body["choices"][0]
            # a refusal (structured outputs) comes as a string beside a null content
            # (platform.openai.com/docs/guides/structured-outputs#refusals)
            refused = str_or_none(choice["message"].get("refusal"))
            usage: Mapping[str, Any] = body.get("usage") or {}
            completion = Completion(
                text=str_or_none(choice["message"].get("content")),
                finish_reason=str_or_none(choice.get("finish_reason")),
                input_tokens=count(usage.get("prompt_tokens")),
                output_tokens=count(usage.get("completion_tokens")),
                model=str_or_none(body.get("model")),
                raw=response.text,
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            if err := error_object(body):
                raise self._error(response, body, status_said(err)) from None
            raise RetryableError(
                "HTTP 200 without choices[0].message: not a chat completion",
                status=200,
                body=response.text[:500],
            ) from None
        if refused:  # as the Responses API's refusal part: the job's error, not an answer
            raise PermanentJobError(
                f"the model refused: {refused[:300]}", status=200, body=response.text
            )
        return completion

    def _error(self, response: Answer, body: Any, status: int) -> Exception:
        """The error an answer's body says, as an answer of ``status`` would be (an error under
        HTTP 200 stands for the status it names): it keeps the status it came with, and its
        message is the provider's own."""
        err = error_object(body)
        came = response.status_code
        message = str(err.get("message") or f"HTTP {status}")
        if came != status:
            message = f"an error under HTTP {came} ({err.get('type') or status}): {message}"
        code = err.get("code")
        text = response.text[:2000]
        if (isinstance(code, str) and code in _FATAL_CODES) or status == 401:
            return FatalProviderError(f"{code or status}: {message}", status=came, body=text)
        delay = retry_after(response.headers, message)
        if status == 429:
            kind = err.get("type")
            return RateLimitError(
                message,
                status=came,
                body=text,
                retry_after=delay,
                scope=kind if kind in ("requests", "tokens") else None,
                quota=str(code) if code else None,
            )
        return classify_status(status, message, text, delay, came_as=came)
