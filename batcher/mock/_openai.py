"""OpenAI's chat completions wire format: Bearer keys, ``messages`` in, ``choices`` out.

Its errors and its 429 (``rate_limit_exceeded`` with ``retry-after`` and ``retry-after-ms``)
are shaped as OpenAI's are, and every answer carries the ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ._limits import Rejection
from ._media import BadMedia, Described, describe_b64, describe_data_uri, describe_url
from ._named_files import describe_named
from ._structured import schema_of_request, with_schema
from ._wire import Call, LimitStyle, Refusal, Reply, Request, Response, json_object, json_response

__all__ = ["OpenAIChat", "openai_error"]


def openai_error(status: int, message: str, type_: str, code: str | None) -> Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return json_response(status, body)


def _part(p: Mapping[str, Any], rule: str) -> Described:
    """An ``image_url``, ``input_audio`` or ``file`` content part, checked; ``BadMedia`` if it is
    not valid. https://platform.openai.com/docs/api-reference/chat/create"""
    kind = p.get("type")
    if kind == "image_url":
        image = p.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else None
        if not isinstance(url, str):
            raise BadMedia("image_url.url is required")
        detail = image.get("detail") if isinstance(image, Mapping) else None
        if url.startswith("data:"):
            return describe_data_uri(url, rule, detail if isinstance(detail, str) else None)
        if url.startswith(("http://", "https://")):
            return describe_url(url, rule)
        raise BadMedia("image_url.url must be an http(s) URL or a data: URI")
    if kind == "input_audio":
        audio = p.get("input_audio")
        if not isinstance(audio, Mapping) or audio.get("format") not in ("wav", "mp3"):
            raise BadMedia("input_audio needs base64 'data' and a 'format' of wav or mp3")
        declared = "audio/wav" if audio["format"] == "wav" else "audio/mpeg"
        return describe_b64(str(audio.get("data", "")), rule, declared, None)
    if kind == "file":
        file = p.get("file")
        data = file.get("file_data") if isinstance(file, Mapping) else None
        if isinstance(file, Mapping) and "file_id" in file:
            return describe_named(file["file_id"], rule)
        if not isinstance(data, str):
            raise BadMedia("file.file_data is required")
        return describe_data_uri(data, rule, None)
    raise BadMedia(f"unknown content part type {kind!r}")


def _text(content: Any, rule: str = "openai") -> tuple[str, int]:
    """A message's text and its media tokens: a string, or a list of content parts whose images
    and files are checked and described (``Refusal``-free: raises ``BadMedia``)."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts, tokens, media = [], 0, False
    for p in content:
        if not isinstance(p, Mapping):
            continue
        if p.get("type", "text") == "text":
            texts.append(str(p.get("text", "")))
            continue
        described = _part(p, rule)
        texts.append(described.text)
        tokens += described.tokens
        media = True
    return (" ".join(t for t in texts if t) if media else "".join(texts)), tokens


_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)

_RATE_SCOPES = {
    "requests": "requests per min (RPM)",
    "tokens": "tokens per min (TPM)",
    "day": "requests per day (RPD)",
}


class OpenAIChat:
    """``POST /v1/chat/completions`` as OpenAI and OpenAI-compatible servers answer it."""

    limit_style: LimitStyle = "openai"
    reports_limits = True
    token_rule = "openai"
    """Whose rule counts image tokens: OpenAI's tiles, or Gemini's on its compatible route."""

    def check_key(self, request: Request) -> str:
        """The Bearer key of ``request``; ``Refusal`` as OpenAI refuses a missing or bad one."""
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key:
            raise Refusal(openai_error(401, _NO_KEY, "invalid_request_error", None))
        if key.startswith("bad"):
            raise Refusal(
                openai_error(
                    401,
                    f"Incorrect API key provided: {key[:3]}****. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                )
            )
        return key

    def check_model(self, model: str) -> None:
        """``Refusal`` with OpenAI's 404 for a model the mock does not have (``no-such-*``)."""
        if model.startswith("no-such-"):
            raise Refusal(
                openai_error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                )
            )

    def parse(self, request: Request) -> Call:
        key = self.check_key(request)
        body = json_object(request.body, self.invalid)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise Refusal(self.invalid("you must provide a model parameter"))
        self.check_model(model)
        if not isinstance(messages, list) or not messages:
            raise Refusal(self.invalid("'messages' must be a non-empty array"))
        turns = [m for m in messages if isinstance(m, Mapping)]
        try:
            read = [(m.get("role"), *_text(m.get("content"), self.token_rule)) for m in turns]
        except BadMedia as e:
            raise Refusal(self.invalid(str(e))) from None
        users = [text for role, text, _ in read if role == "user"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        schema = schema_of_request(body)
        return Call(
            model=model,
            key=key,
            prompt=with_schema("\n".join(text for _, text, _ in read), schema),
            last_user=users[-1] if users else "",
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            media_tokens=sum(tokens for _, _, tokens in read),
            schema=schema,
        )

    def invalid(self, message: str) -> Response:
        return openai_error(400, message, "invalid_request_error", None)

    def unavailable(self) -> Response:
        return openai_error(503, "The server is overloaded or not ready yet.", "server_error", None)

    def internal(self) -> Response:
        return openai_error(
            500, "The server had an error while processing your request.", "server_error", None
        )

    def rate_limited(self, call: Call, why: Rejection, headers: Mapping[str, str]) -> Response:
        ms = max(1, math.ceil(why.retry_after * 1000))
        body = {
            "error": {
                "message": f"Rate limit reached for {call.model} in organization org-mock on "
                f"{_RATE_SCOPES[why.scope]}: Limit {why.limit}, Used {why.used}, Requested 1. "
                f"Please try again in {ms}ms. Visit https://platform.openai.com/account/rate-limits"
                " to learn more.",
                "type": "tokens" if why.scope == "tokens" else "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        retry = {"retry-after": str(math.ceil(why.retry_after)), "retry-after-ms": str(ms)}
        return json_response(429, body, {**headers, **retry})

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        body = {
            "id": f"chatcmpl-mock{serial:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if reply.cut else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
            },
            "system_fingerprint": "fp_mock",
        }
        return json_response(200, body, {"x-request-id": f"req_mock{serial:08d}", **headers})
