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
from ._wire import Call, LimitStyle, Refusal, Reply, Request, Response, json_object, json_response

__all__ = ["OpenAIChat", "openai_error"]


def openai_error(status: int, message: str, type_: str, code: str | None) -> Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return json_response(status, body)


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


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

    def parse(self, request: Request) -> Call:
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
        body = json_object(request.body, self.invalid)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise Refusal(self.invalid("you must provide a model parameter"))
        if model.startswith("no-such-"):
            raise Refusal(
                openai_error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                )
            )
        if not isinstance(messages, list) or not messages:
            raise Refusal(self.invalid("'messages' must be a non-empty array"))
        turns = [m for m in messages if isinstance(m, Mapping)]
        users = [_text(m.get("content")) for m in turns if m.get("role") == "user"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return Call(
            model=model,
            key=key,
            prompt="\n".join(_text(m.get("content")) for m in turns),
            last_user=users[-1] if users else "",
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
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
