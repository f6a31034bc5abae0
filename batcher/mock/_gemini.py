"""Gemini's native ``generateContent`` wire format: ``x-goog-api-key``, ``contents`` in,
``candidates`` out, and Google's error bodies, including the real 429 with its quota details."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from ._limits import Rejection
from ._media import BadMedia, Described, describe_b64, describe_url, make_png
from ._named_files import describe_named
from ._structured import schema_of_request, with_schema
from ._wire import Call, LimitStyle, Refusal, Reply, Request, Response, json_object, json_response

__all__ = ["PREFIX", "GeminiNative", "gemini_429_body"]

PREFIX = "/v1beta/models/"
"""Every path this format answers starts so, followed by ``{model}:{method}``."""

_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). Please "
    "use API Key or other form of API consumer identity to call this API."
)
_BAD_KEY_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
]


def gemini_error_body(
    status: int, grpc_status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Google's error shape: ``{"error": {"code", "message", "status", "details"?}}``."""
    err: dict[str, Any] = {"code": status, "message": message, "status": grpc_status}
    if details:
        err["details"] = details
    return {"error": err}


def _error(
    status: int, grpc_status: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    return json_response(status, gemini_error_body(status, grpc_status, message, details))


def gemini_429_body(model: str, why: Rejection, free_tier: bool) -> dict[str, Any]:
    """Gemini's RESOURCE_EXHAUSTED body: the message, a QuotaFailure, a Help link, RetryInfo."""
    suffix = "-FreeTier" if free_tier else ""
    quota_id, metric = {
        "requests": (f"GenerateRequestsPerMinutePerProjectPerModel{suffix}", "requests"),
        "tokens": (f"GenerateContentInputTokensPerModelPerMinute{suffix}", "input_token_count"),
        "day": (f"GenerateRequestsPerDayPerProjectPerModel{suffix}", "requests"),
    }[why.scope]
    metric = (
        "generativelanguage.googleapis.com/generate_content_"
        f"{'free_tier_' if free_tier else ''}{metric}"
    )
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        f"* Quota exceeded for metric: {metric}, limit: {why.limit}, model: {model}\n"
        f"Please retry in {why.retry_after:.6f}s."
    )
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(why.limit),
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
            "retryDelay": f"{int(why.retry_after)}s",
        },
    ]
    return gemini_error_body(429, "RESOURCE_EXHAUSTED", message, details)


def _gemini_part(p: Mapping[str, Any]) -> Described:
    """A text, ``inlineData`` or ``fileData`` part, checked; ``BadMedia`` if it is not valid.
    https://ai.google.dev/api/caching#Part"""
    if isinstance(p.get("text"), str):
        return Described(p["text"], 0)
    inline = p.get("inlineData", p.get("inline_data"))
    if isinstance(inline, Mapping):
        mime = inline.get("mimeType", inline.get("mime_type"))
        if not isinstance(mime, str):
            raise BadMedia(
                "* GenerateContentRequest.contents.parts.inline_data.mime_type: required"
            )
        return describe_b64(str(inline.get("data", "")), "gemini", mime, None)
    file = p.get("fileData", p.get("file_data"))
    if isinstance(file, Mapping):
        uri = str(file.get("fileUri", file.get("file_uri", "")))
        if "/v1beta/files/" in uri:  # uploaded through the Files API: named by its resource
            return describe_named("files/" + uri.rpartition("/files/")[2], "gemini")
        return describe_url(uri, "gemini")
    return Described("", 0)


def _contents_text(
    body: dict[str, Any], invalid: Callable[[str], Response]
) -> tuple[str, str, int]:
    """(every turn's text, one per line; the last user turn's text; media tokens) of a body."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Refusal(invalid("* GenerateContentRequest.contents: contents is not specified"))
    texts, users, tokens = [], [], 0
    system = body.get("systemInstruction", body.get("system_instruction"))
    for c in ([system] if isinstance(system, Mapping) else []) + contents:
        if not isinstance(c, Mapping) or not isinstance(c.get("parts"), list):
            raise Refusal(invalid("* GenerateContentRequest.contents: parts is not specified"))
        try:
            read = [_gemini_part(p) for p in c["parts"] if isinstance(p, Mapping)]
        except BadMedia as e:
            raise Refusal(invalid(str(e))) from None
        t = " ".join(d.text for d in read if d.text)
        tokens += sum(d.tokens for d in read)
        texts.append(t)
        if c is not system and c.get("role", "user") == "user":
            users.append(t)
    return "\n".join(texts), users[-1] if users else "", tokens


class GeminiNative:
    """``POST /v1beta/models/{model}:generateContent`` as the Gemini API answers it."""

    limit_style: LimitStyle = "gemini"
    reports_limits = False

    def __init__(self, *, free_tier: bool) -> None:
        self.free_tier = free_tier

    def parse(self, request: Request) -> Call:
        model, _, method = request.path[len(PREFIX) :].partition(":")
        if method != "generateContent":
            raise Refusal(_error(404, "NOT_FOUND", f"Method {method!r} not found."))
        key = self.check_call(request, model)
        body = json_object(request.body, self.invalid)
        prompt, last_user, media_tokens = _contents_text(body, self.invalid)
        config = body.get("generationConfig", body.get("generation_config"))
        config = config if isinstance(config, Mapping) else {}
        max_tokens = config.get("maxOutputTokens", config.get("max_output_tokens"))
        modalities = config.get("responseModalities", config.get("response_modalities")) or []
        images = 0
        if isinstance(modalities, list) and "IMAGE" in modalities:
            if "image" not in model:
                raise Refusal(
                    self.invalid("Model does not support the requested response modalities: image")
                )
            images = 1
        schema = schema_of_request(body)
        return Call(
            model=model,
            key=key,
            prompt=with_schema(prompt, schema),
            last_user=last_user,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            media_tokens=media_tokens,
            images=images,
            schema=schema,
        )

    def check_call(self, request: Request, model: str) -> str:
        """The key of a call of ``model``; ``Refusal`` as Gemini refuses a missing or bad key,
        or a model it does not have (``no-such-*``)."""
        method = request.path.rpartition(":")[2]
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise Refusal(_error(403, "PERMISSION_DENIED", _NO_KEY))
        if key.startswith("bad"):
            raise Refusal(
                _error(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    _BAD_KEY_DETAILS,
                )
            )
        if model.startswith("no-such-"):
            raise Refusal(
                _error(
                    404,
                    "NOT_FOUND",
                    f"models/{model} is not found for API version v1beta, or is not supported for "
                    f"{method}. Call ListModels to see the list of available models and "
                    "their supported methods.",
                )
            )
        return key

    def invalid(self, message: str) -> Response:
        return _error(400, "INVALID_ARGUMENT", message)

    def unavailable(self) -> Response:
        return _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")

    def internal(self) -> Response:
        return _error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry "
            "or report in https://developers.generativeai.google/guide/troubleshooting",
        )

    def rate_limited(self, call: Call, why: Rejection, headers: Mapping[str, str]) -> Response:
        return json_response(429, gemini_429_body(call.model, why, self.free_tier))

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        parts: list[dict[str, Any]] = [{"text": reply.text}]
        for k in range(call.images):
            png = make_png(f"{call.model}\n{call.last_user}\n{k}", *call.image_size)
            b64 = base64.b64encode(png).decode("ascii")
            parts.append({"inlineData": {"mimeType": "image/png", "data": b64}})
        body = {
            "candidates": [
                {
                    "content": {"parts": parts, "role": "model"},
                    "finishReason": "MAX_TOKENS" if reply.cut else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": reply.input_tokens,
                "candidatesTokenCount": reply.output_tokens,
                "totalTokenCount": reply.input_tokens + reply.output_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
            },
            "modelVersion": call.model,
            "responseId": f"mock{serial:012d}",
        }
        return json_response(200, body)
