"""The Gemini ``generateContent`` wire format."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..._core.errors import FatalProviderError, PermanentJobError, RateLimitError, RetryableError
from ..._core.media import Inline, inline_now
from ..._jobs import Job, Part, ProviderName
from ._base import (
    Answer,
    Completion,
    ImageOut,
    RequestSpec,
    classify_status,
    count,
    error_object,
    json_body,
    parse_duration,
    retry_after,
    status_said,
    str_or_none,
    without_data,
)

__all__ = ["GeminiProvider", "model_path"]


def model_path(model: str, method: str) -> str:
    """``models/{model}:{method}``, the model's name quoted as one path segment: a ``?``, ``#``,
    ``/`` or ``..`` in it stays part of the name, never a query, a fragment or another path."""
    return f"models/{quote(model.removeprefix('models/'), safe='')}:{method}"


_BLOCKED_FINISH = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def _part(p: Part, inline: Inline) -> dict[str, Any]:
    """A text part, or an image or file as ``inlineData {mimeType, data}`` (a URL fetched first),
    or as ``fileData {fileUri, mimeType}`` once uploaded through the Files API.
    https://ai.google.dev/gemini-api/docs/image-understanding#inline-image,
    https://ai.google.dev/gemini-api/docs/files"""
    if p.media is None:
        return {"text": p.text}
    if p.media.uploaded is not None:
        uri, mime = p.media.uploaded
        return {"fileData": {"fileUri": uri, "mimeType": mime}}
    mime, data = inline(p.media)
    return {"inlineData": {"mimeType": mime, "data": data}}


def build_body(job: Job, inline: Inline = inline_now) -> dict[str, Any]:
    """The generateContent body for a job: its native request if it has one, else built from it.
    ``inline`` gives each image's or file's data (read now, unless fingerprinting)."""
    if job.native is not None and job.native.provider == "gemini":
        return {k: v for k, v in job.native.body.items() if k != "model"}
    body: dict[str, Any] = {"contents": []}
    for m in job.messages:
        parts = [_part(p, inline) for p in m.parts if p.text or p.media is not None]
        parts = parts or [{"text": ""}]
        if m.role == "system":
            body.setdefault("systemInstruction", {"parts": []})["parts"].extend(parts)
        else:
            role = "user" if m.role == "user" else "model"
            body["contents"].append({"role": role, "parts": parts})
    config: dict[str, Any] = {}
    if job.temperature is not None:
        config["temperature"] = job.temperature
    if job.max_tokens is not None:
        config["maxOutputTokens"] = job.max_tokens
    if job.top_p is not None:
        config["topP"] = job.top_p
    if job.stop:
        config["stopSequences"] = list(job.stop)
    if job.modalities:
        # https://ai.google.dev/gemini-api/docs/image-generation: ["TEXT", "IMAGE"]; a job's
        # n, size and quality have no field here and are refused before sending (_jobs._source)
        config["responseModalities"] = [m.upper() for m in job.modalities]
    if config:
        body["generationConfig"] = config
    return body


def _images(parts: list[Any]) -> tuple[ImageOut, ...]:
    """Every ``inlineData`` image part of a candidate, decoded (``TypeError`` if malformed).
    https://ai.google.dev/gemini-api/docs/image-generation"""
    out = []
    for p in parts:
        inline = p.get("inlineData", p.get("inline_data"))
        if inline is None or p.get("thought"):
            continue
        mime = str_or_none(inline.get("mimeType", inline.get("mime_type")))
        if mime is None or not mime.startswith("image/"):
            continue
        try:
            data = base64.b64decode(inline["data"], validate=True)
        except (binascii.Error, ValueError):
            raise TypeError("inlineData.data is not base64") from None
        out.append(ImageOut(mime, data))
    return tuple(out)


def _json_text(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _details(err: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping) and str(d.get("@type", "")).endswith(kind)]


def retry_delay(err: Mapping[str, Any]) -> float | None:
    """``RetryInfo.retryDelay`` (``"26s"``) from a Gemini error, if present."""
    for d in _details(err, "RetryInfo"):
        if isinstance(d.get("retryDelay"), str):
            return parse_duration(d["retryDelay"])
    return None


def _rate_limit(
    err: Mapping[str, Any], message: str, body: str, delay: float | None, came: int = 429
) -> FatalProviderError | RateLimitError:
    """Read a Gemini 429: which quota (``QuotaFailure``), per day or per minute, or none at all."""
    quotas = [
        str(v.get("quotaId", ""))
        for d in _details(err, "QuotaFailure")
        for v in (d.get("violations") or [])
        if isinstance(v, Mapping)
    ]
    if "limit: 0" in message:
        return FatalProviderError(
            f"this model has no quota on your tier ({', '.join(quotas) or 'limit: 0'}): {message}",
            status=came,
            body=body,
        )
    per_day = any("PerDay" in q for q in quotas)
    scope = None
    if quotas:
        scope = "tokens" if all("Token" in q for q in quotas) else "requests"
    return RateLimitError(
        message,
        status=came,
        body=body,
        retry_after=delay,
        scope=scope,
        quota=", ".join(quotas) or None,
        per_day=per_day,
    )


class GeminiProvider:
    """``POST {base}/models/{model}:generateContent`` with ``x-goog-api-key``."""

    name: ProviderName = "gemini"
    default_base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    key_envs: tuple[str, ...] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    per_second_limits = False
    charges_output = False

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def build(self, job: Job, model: str, inline: Inline = inline_now) -> RequestSpec:
        return RequestSpec(model_path(model, "generateContent"), build_body(job, inline))

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body, response.status_code)
        if not isinstance(body, Mapping):
            raise RetryableError("HTTP 200 whose body is not a JSON object", status=200)
        candidates = body.get("candidates")
        if not candidates:
            if err := error_object(body):
                raise self._error(response, body, status_said(err))
            feedback = body.get("promptFeedback")
            if isinstance(feedback, Mapping) and feedback.get("blockReason"):
                raise PermanentJobError(
                    f"prompt blocked: {feedback['blockReason']}", status=200, body=response.text
                )
            raise RetryableError(
                "HTTP 200 without candidates", status=200, body=response.text[:500]
            )
        try:
            cand = candidates[0]
            finish = str_or_none(cand.get("finishReason"))
            parts = (cand.get("content") or {}).get("parts") or []
            text = "".join(
                str_or_none(p["text"]) or "" for p in parts if "text" in p and not p.get("thought")
            )
            images = _images(parts)
            usage = body.get("usageMetadata") or {}
            output = count(usage.get("candidatesTokenCount"))
            thoughts = count(usage.get("thoughtsTokenCount"))
            completion = Completion(
                text=text,
                finish_reason=finish,
                input_tokens=count(usage.get("promptTokenCount")),
                output_tokens=output + thoughts if output is not None and thoughts else output,
                model=str_or_none(body.get("modelVersion")),
                raw=_json_text(without_data(body)) if images else response.text,
                images=images,
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RetryableError(
                "HTTP 200 with a malformed candidate", status=200, body=response.text[:500]
            ) from None
        if finish in _BLOCKED_FINISH:
            raise PermanentJobError(
                f"response blocked: finishReason {finish}", status=200, body=response.text
            )
        return completion

    def _error(self, response: Answer, body: Any, status: int) -> Exception:
        """The error an answer's body says, as an answer of ``status`` would be (an error under
        HTTP 200 stands for the status it names): it keeps the status it came with."""
        err = error_object(body)
        came = response.status_code
        message = str(err.get("message") or f"HTTP {status}")
        label = f"{status} {err.get('status') or ''}".strip()
        if came != status:
            label = f"an error under HTTP {came} ({err.get('status') or status})"
        text = response.text[:2000]
        reasons = {d.get("reason") for d in _details(err, "ErrorInfo")}
        if "API_KEY_INVALID" in reasons or status in (401, 403):
            return FatalProviderError(f"{label}: {message}", status=came, body=text)
        delay = retry_delay(err)
        if delay is None:
            delay = retry_after(response.headers, message)
        if status == 429:
            return _rate_limit(err, f"{label}: {message}", text, delay, came)
        return classify_status(status, f"{label}: {message}", text, delay, came_as=came)
