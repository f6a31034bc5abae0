"""OpenAI's image generation wire format, ``POST {base}/images/generations``, which OpenAI and
OpenAI-compatible proxies (Gemini's image models behind one, among them) speak.

Request ``{model, prompt, n, size, quality}``; answer ``{"data": [{"b64_json"} | {"url"},
...], "usage"?}``. https://platform.openai.com/docs/api-reference/images/create
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from ..._core.errors import RetryableError
from ..._core.media import Inline, inline_now
from ..._core.sniff import sniff
from ..._jobs import Job, ProviderName
from ._base import (
    Answer,
    Completion,
    ImageOut,
    RequestSpec,
    count,
    error_object,
    json_body,
    status_said,
    without_data,
)
from ._openai import OpenAIProvider

__all__ = ["OpenAIImagesProvider"]


def build_body(job: Job, model: str) -> dict[str, Any]:
    """The images/generations body: the job's user text as the prompt, and its n, size, quality
    where set (unset ones are the server's default; ``response_format`` is left to the server,
    as GPT image models answer base64 always and refuse the field)."""
    prompt = "\n".join(m.text for m in job.messages if m.role == "user")
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    if job.n is not None:
        body["n"] = job.n
    if job.size is not None:
        body["size"] = job.size
    if job.quality is not None:
        body["quality"] = job.quality
    return body


class OpenAIImagesProvider(OpenAIProvider):
    """``POST {base}/images/generations`` with a Bearer key; errors as chat/completions's."""

    name: ProviderName = "openai"

    def build(self, job: Job, model: str, inline: Inline = inline_now) -> RequestSpec:
        return RequestSpec("images/generations", build_body(job, model))

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body, response.status_code)
        try:
            images = tuple(_image(d) for d in body["data"])
            usage: Mapping[str, Any] = body.get("usage") or {}
            revised = [d["revised_prompt"] for d in body["data"] if d.get("revised_prompt")]
        except (KeyError, TypeError, AttributeError, ValueError):
            if err := error_object(body):
                raise self._error(response, body, status_said(err)) from None
            raise RetryableError(
                "HTTP 200 without data[].b64_json or data[].url: not an images answer",
                status=200,
                body=response.text[:500],
            ) from None
        if not images:
            raise RetryableError("HTTP 200 with no images in data", status=200, body=response.text)
        return Completion(
            text="\n".join(str(r) for r in revised),
            finish_reason="stop",
            input_tokens=count(usage.get("input_tokens")),
            output_tokens=count(usage.get("output_tokens")),
            model=None,
            raw=json.dumps(without_data(body), ensure_ascii=False, separators=(",", ":")),
            images=images,
        )


def _image(d: Mapping[str, Any]) -> ImageOut:
    """One ``data`` item: base64 decoded (its type sniffed), or a URL to download."""
    b64 = d.get("b64_json")
    if isinstance(b64, str):
        try:
            data = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise ValueError("b64_json is not base64") from None
        return ImageOut(sniff(data[:64]) or "image/png", data)
    url = d.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return ImageOut(None, url=url)
    raise ValueError("neither b64_json nor an http(s) url")
