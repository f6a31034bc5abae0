"""The mock provider's ASGI app: both wire formats, the providers' real JSON shapes, and counters.

Answers are deterministic: the text is derived from the model and the prompt (``mock_reply``) and
token counts come from ``count_tokens``, so a test can check what it got against what was sent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._limits import LimitTable
from .._tokens import count_tokens
from ._limits import Enforcer, Rejection

__all__ = ["MockConfig", "MockState", "create_app", "mock_reply"]


def mock_reply(model: str, prompt: str) -> str:
    """The text the mock answers for ``prompt`` (the last user turn) on ``model``."""
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:10]
    return f"mock-{digest}: {prompt[:120]}"


def _truncate(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``text`` to ``max_tokens`` words, to act out a length-limited answer."""
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, False
    words = text.split(" ")
    out: list[str] = []
    for w in words:
        if count_tokens(" ".join([*out, w])) > max_tokens:
            break
        out.append(w)
    return " ".join(out), True


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How the mock behaves: answer latency (a uniform range, ms), the seed of its randomness,
    and the rate limits it enforces per model (a tier preset and/or limits for every model)."""

    latency_ms: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    limits: LimitTable = field(default_factory=LimitTable)


@dataclass
class MockState:
    """What the mock has seen, read through ``GET /admin/stats``."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    timeline: dict[int, list[int]] = field(default_factory=dict)
    """Per wall-clock second: [accepted, rejected with 429]."""
    first_accepted: float | None = None
    last_accepted: float | None = None

    def snapshot(self, timeline: bool = False) -> dict[str, Any]:
        extra = {"timeline": {str(k): v for k, v in self.timeline.items()}} if timeline else {}
        return {
            **extra,
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_model": dict(self.by_model),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
        }


class _Reject(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _openai_error(status: int, message: str, type_: str, code: str | None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _gemini_error(
    status: int, grpc_status: str, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    err: dict[str, Any] = {"code": status, "message": message, "status": grpc_status}
    if details:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=status)


def _openai_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def _gemini_429(model: str, r: Rejection, free: bool, wrap: bool) -> JSONResponse:
    suffix = "-FreeTier" if free else ""
    quota_id, metric = {
        "requests": (f"GenerateRequestsPerMinutePerProjectPerModel{suffix}", "requests"),
        "tokens": (f"GenerateContentInputTokensPerModelPerMinute{suffix}", "input_token_count"),
        "day": (f"GenerateRequestsPerDayPerProjectPerModel{suffix}", "requests"),
    }[r.scope]
    metric = (
        f"generativelanguage.googleapis.com/generate_content_{'free_tier_' if free else ''}{metric}"
    )
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        f"* Quota exceeded for metric: {metric}, limit: {r.limit}, model: {model}\n"
        f"Please retry in {r.retry_after:.6f}s."
    )
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(r.limit),
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": f"{int(r.retry_after)}s",
        },
    ]
    response = _gemini_error(429, "RESOURCE_EXHAUSTED", message, details)
    if wrap:  # Gemini's OpenAI-compatible endpoint wraps its errors in a list
        return JSONResponse([json.loads(bytes(response.body))], status_code=429)
    return response


def _openai_429(model: str, r: Rejection, headers: dict[str, str]) -> JSONResponse:
    what = {
        "requests": "requests per min (RPM)",
        "tokens": "tokens per min (TPM)",
        "day": "requests per day (RPD)",
    }[r.scope]
    ms = max(1, math.ceil(r.retry_after * 1000))
    body = {
        "error": {
            "message": f"Rate limit reached for {model} in organization org-mock on {what}: "
            f"Limit {r.limit}, Used {r.used}, Requested 1. Please try again in {ms}ms. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            "type": "tokens" if r.scope == "tokens" else "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    headers = {**headers, "retry-after": str(math.ceil(r.retry_after)), "retry-after-ms": str(ms)}
    return JSONResponse(body, status_code=429, headers=headers)


class _App:
    def __init__(self, config: MockConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.state = MockState()
        self.random = random.Random(config.seed)
        self.counter = 0
        self.enforcer = Enforcer(config.limits.for_model, clock)
        tier = config.limits.tier
        self.free_tier = tier is not None and tier.name.endswith("-free")

    async def _latency(self) -> None:
        lo, hi = self.config.latency_ms
        if hi > 0:
            await anyio.sleep(self.random.uniform(lo, hi) / 1000)

    def _count(self, status: int, model: str | None = None) -> None:
        self.state.requests += 1
        self.state.by_status[status] += 1
        if status == 200:
            self.state.accepted += 1
            if model:
                self.state.by_model[model] += 1
        else:
            self.state.rejected += 1
        if status in (200, 429):
            now = self.clock()
            slot = self.state.timeline.setdefault(int(now), [0, 0])
            slot[status != 200] += 1
            if status == 200:
                if self.state.first_accepted is None:
                    self.state.first_accepted = now
                self.state.last_accepted = now

    def _limit(self, style: str, model: str, tokens: int, wrap: bool = False) -> None:
        """Refuse with the provider's own 429 if ``model`` is over its limits."""
        rejection = self.enforcer.check(style, model, tokens)
        if rejection is None:
            return
        if style == "gemini":
            raise _Reject(_gemini_429(model, rejection, self.free_tier, wrap))
        raise _Reject(_openai_429(model, rejection, self.enforcer.headers(model)))

    async def _json(self, request: Request, error: Any) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Reject(error("the request body is not valid JSON")) from None
        if not isinstance(body, dict):
            raise _Reject(error("the request body must be a JSON object"))
        return body

    def _answer(
        self, model: str, prompt_text: str, last_user: str, max_tokens: int | None
    ) -> tuple[str, bool, int, int]:
        text, cut = _truncate(mock_reply(model, last_user), max_tokens)
        tin, tout = count_tokens(prompt_text), count_tokens(text)
        self.state.input_tokens += tin
        self.state.output_tokens += tout
        return text, cut, tin, tout

    async def openai_chat(self, request: Request) -> Response:
        try:
            return await self._openai_chat(request)
        except _Reject as r:
            self._count(r.response.status_code)
            return r.response

    async def _openai_chat(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise _Reject(
                _openai_error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    None,
                )
            )

        def bad(message: str) -> JSONResponse:
            return _openai_error(400, message, "invalid_request_error", None)

        body = await self._json(request, bad)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise _Reject(bad("you must provide a model parameter"))
        if not isinstance(messages, list) or not messages:
            raise _Reject(bad("'messages' must be a non-empty array"))
        texts = [_openai_text(m.get("content")) for m in messages if isinstance(m, Mapping)]
        users = [
            _openai_text(m.get("content"))
            for m in messages
            if isinstance(m, Mapping) and m.get("role") == "user"
        ]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        prompt = "\n".join(texts)
        if request.url.path.startswith("/v1beta/"):
            self._limit("gemini", model, count_tokens(prompt), wrap=True)
        else:
            charge = count_tokens(prompt) + (max_tokens if isinstance(max_tokens, int) else 0)
            self._limit("openai", model, charge)
        await self._latency()
        text, cut, tin, tout = self._answer(model, prompt, users[-1] if users else "", max_tokens)
        self.counter += 1
        self._count(200, model)
        return JSONResponse(
            {
                "id": f"chatcmpl-mock{self.counter:08d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "length" if cut else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": tin,
                    "completion_tokens": tout,
                    "total_tokens": tin + tout,
                },
                "system_fingerprint": "fp_mock",
            },
            headers={
                "x-request-id": f"req_mock{self.counter:08d}",
                **self.enforcer.headers(model),
            },
        )

    async def gemini_generate(self, request: Request) -> Response:
        try:
            return await self._gemini_generate(request)
        except _Reject as r:
            self._count(r.response.status_code)
            return r.response

    async def _gemini_generate(self, request: Request) -> Response:
        model, _, method = request.path_params["model_method"].partition(":")
        if method != "generateContent":
            raise _Reject(_gemini_error(404, "NOT_FOUND", f"Method {method!r} not found."))
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise _Reject(
                _gemini_error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to call "
                    "this API.",
                )
            )

        def bad(message: str) -> JSONResponse:
            return _gemini_error(400, "INVALID_ARGUMENT", message)

        body = await self._json(request, bad)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Reject(bad("* GenerateContentRequest.contents: contents is not specified"))
        texts, users = [], []
        system = body.get("systemInstruction", body.get("system_instruction"))
        for c in ([system] if isinstance(system, Mapping) else []) + contents:
            if not isinstance(c, Mapping) or not isinstance(c.get("parts"), list):
                raise _Reject(bad("* GenerateContentRequest.contents: parts is not specified"))
            t = "".join(p.get("text", "") for p in c["parts"] if isinstance(p, Mapping))
            texts.append(t)
            if c is not system and c.get("role", "user") == "user":
                users.append(t)
        config = body.get("generationConfig", body.get("generation_config")) or {}
        max_tokens = config.get("maxOutputTokens", config.get("max_output_tokens"))
        prompt = "\n".join(texts)
        self._limit("gemini", model, count_tokens(prompt))
        await self._latency()
        text, cut, tin, tout = self._answer(model, prompt, users[-1] if users else "", max_tokens)
        self.counter += 1
        self._count(200, model)
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "MAX_TOKENS" if cut else "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": tin,
                    "candidatesTokenCount": tout,
                    "totalTokenCount": tin + tout,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tin}],
                },
                "modelVersion": model,
                "responseId": f"mock{self.counter:012d}",
            }
        )

    async def stats(self, request: Request) -> Response:
        timeline = request.query_params.get("timeline") in ("1", "true")
        return JSONResponse(self.state.snapshot(timeline))

    async def reset(self, request: Request) -> Response:
        self.state = MockState()
        return JSONResponse({"ok": True})


def create_app(
    config: MockConfig | None = None, *, clock: Callable[[], float] = time.time
) -> Starlette:
    """The mock provider as an ASGI app; ``app.state.mock`` holds its counters.

    ``clock`` is the wall clock its limits are counted by (minutes, seconds, quota days).
    """
    impl = _App(config or MockConfig(), clock)
    routes = [
        Route("/v1/chat/completions", impl.openai_chat, methods=["POST"]),
        Route("/chat/completions", impl.openai_chat, methods=["POST"]),
        Route("/v1beta/openai/chat/completions", impl.openai_chat, methods=["POST"]),
        Route("/v1beta/models/{model_method}", impl.gemini_generate, methods=["POST"]),
        Route("/admin/stats", impl.stats, methods=["GET"]),
        Route("/admin/reset", impl.reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.mock = impl
    return app
