"""The mock provider's ASGI app: both wire formats, the providers' real JSON shapes, and counters.

Answers are deterministic: the text is derived from the model and the prompt (``mock_reply``) and
token counts come from ``count_tokens``, so a test can check what it got against what was sent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
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
class Faults:
    """Seeded fault rates (each a share of requests) to rehearse failure.

    Besides these, a prompt (last user turn) containing ``[[fail:400]]`` always gets a 400, one
    containing ``[[flaky:N]]`` gets a 503 for its first N requests, a key starting with ``bad``
    is refused as invalid, and a model named ``no-such-...`` does not exist.
    """

    error_500: float = 0.0
    error_503: float = 0.0
    drop: float = 0.0
    """The connection closes half-way through the answer."""
    truncate: float = 0.0
    """A 200 whose JSON body is cut short."""
    slow: float = 0.0
    slow_ms: float = 5000.0

    def __post_init__(self) -> None:
        rates = (self.error_500, self.error_503, self.drop, self.truncate, self.slow)
        if any(r < 0 or r > 1 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates are shares between 0 and 1, adding up to at most 1")


_FLAKY = re.compile(r"\[\[flaky:(\d+)\]\]")


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How the mock behaves: answer latency (a uniform range, ms), the seed of its randomness,
    and the rate limits it enforces per model (a tier preset and/or limits for every model)."""

    latency_ms: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    limits: LimitTable = field(default_factory=LimitTable)
    faults: Faults = field(default_factory=Faults)


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
    dropped: int = 0
    truncated: int = 0
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
            "dropped": self.dropped,
            "truncated": self.truncated,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
        }


class _Reject(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _Dropped(Response):
    """Starts an answer, then the connection goes away (the server raises mid-body)."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=200, media_type="application/json")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "cut', "more_body": True})
        raise ConnectionAbortedError("mock provider: dropped the connection on purpose")


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
        self.fault_random = random.Random(config.seed + 1)
        self.flaky_seen: dict[str, int] = {}
        tier = config.limits.tier
        self.free_tier = tier is not None and tier.name.endswith("-free")

    async def _faults(
        self,
        prompt: str,
        bad: Callable[[str], Response],
        unavailable: Callable[[], Response],
        internal: Callable[[], Response],
    ) -> bool:
        """Act out a marker in the prompt, or a seeded random fault; True: truncate the answer."""
        if "[[fail:400]]" in prompt:
            raise _Reject(bad("Invalid request: this prompt is marked to fail ([[fail:400]])."))
        if m := _FLAKY.search(prompt):
            seen = self.flaky_seen.get(prompt, 0)
            self.flaky_seen[prompt] = seen + 1
            if seen < int(m.group(1)):
                raise _Reject(unavailable())
        f = self.config.faults
        r = self.fault_random.random()
        act = None
        for rate, name in (
            (f.error_500, "500"),
            (f.error_503, "503"),
            (f.drop, "drop"),
            (f.truncate, "truncate"),
            (f.slow, "slow"),
        ):
            if r < rate:
                act = name
                break
            r -= rate
        if act == "500":
            raise _Reject(internal())
        if act == "503":
            raise _Reject(unavailable())
        if act == "drop":
            self.state.dropped += 1
            raise _Reject(_Dropped())
        if act == "slow":
            await anyio.sleep(f.slow_ms / 1000)
        return act == "truncate"

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
            return self._deliver(request, await self._openai_chat(request))
        except _Reject as r:
            self._count(0 if isinstance(r.response, _Dropped) else r.response.status_code)
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

        key = auth[7:].strip()
        if key.startswith("bad"):
            raise _Reject(
                _openai_error(
                    401,
                    f"Incorrect API key provided: {key[:3]}****. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                )
            )
        body = await self._json(request, bad)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise _Reject(bad("you must provide a model parameter"))
        if model.startswith("no-such-"):
            raise _Reject(
                _openai_error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                )
            )
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
        request.state.truncate = await self._faults(
            users[-1] if users else "",
            bad,
            lambda: _openai_error(
                503, "The server is overloaded or not ready yet.", "server_error", None
            ),
            lambda: _openai_error(
                500, "The server had an error while processing your request.", "server_error", None
            ),
        )
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
            return self._deliver(request, await self._gemini_generate(request))
        except _Reject as r:
            self._count(0 if isinstance(r.response, _Dropped) else r.response.status_code)
            return r.response

    def _deliver(self, request: Request, response: Response) -> Response:
        """Cut the body short if a truncation fault was drawn for this request."""
        if not getattr(request.state, "truncate", False):
            return response
        self.state.truncated += 1
        body = bytes(response.body)
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        return Response(body[: len(body) // 2], status_code=200, headers=headers)

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

        if key.startswith("bad"):
            raise _Reject(
                _gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ],
                )
            )
        if model.startswith("no-such-"):
            raise _Reject(
                _gemini_error(
                    404,
                    "NOT_FOUND",
                    f"models/{model} is not found for API version v1beta, or is not supported for "
                    "generateContent. Call ListModels to see the list of available models and "
                    "their supported methods.",
                )
            )
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
        request.state.truncate = await self._faults(
            users[-1] if users else "",
            bad,
            lambda: _gemini_error(
                503, "UNAVAILABLE", "The model is overloaded. Please try again later."
            ),
            lambda: _gemini_error(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry "
                "or report in https://developers.generativeai.google/guide/troubleshooting",
            ),
        )
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
