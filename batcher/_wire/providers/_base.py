"""What every wire format provides: build a request from a job, read a completion from an answer."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from ..._core.codec import loads
from ..._core.completion import Completion, ImageOut
from ..._core.errors import FatalProviderError, PermanentJobError, ProviderError, RetryableError
from ..._core.media import Inline
from ..._jobs import Job, ProviderName

__all__ = [
    "Answer",
    "Completion",
    "ImageOut",
    "Provider",
    "RateHints",
    "RequestSpec",
    "classify_status",
    "count",
    "json_body",
    "rate_hints",
    "retry_after",
    "status_said",
    "str_or_none",
    "without_data",
]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """An HTTP request to make: path relative to the base URL, and the JSON body."""

    path: str
    body: dict[str, Any]


_BIG = 64
"""Strings at least this long under a key that carries base64 are left out of the raw answer."""


def without_data(body: Any, keys: frozenset[str] = frozenset({"data", "b64_json"})) -> Any:
    """``body`` with long base64 strings (inline images) replaced by a note of their length: the
    images are saved as files, and the ``response`` column stays small."""
    if isinstance(body, Mapping):
        return {
            k: f"<{len(v)} base64 characters, saved>"
            if k in keys and isinstance(v, str) and len(v) >= _BIG
            else without_data(v, keys)
            for k, v in body.items()
        }
    if isinstance(body, list):
        return [without_data(v, keys) for v in body]
    return body


class Answer(Protocol):
    """An HTTP answer as the parsers read it (batcher's ``Reply``, or an ``httpx.Response``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...


class Provider(Protocol):
    """One wire format. Implementations are stateless and cheap."""

    name: ProviderName
    default_base_url: str
    key_envs: tuple[str, ...]
    per_second_limits: bool
    """The provider enforces per-minute limits per second: leave a wider margin."""
    charges_output: bool
    """Admission charges prompt + ``max_tokens`` to TPM (OpenAI), not input tokens only (Gemini)."""

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def build(self, job: Job, model: str, inline: Inline = ...) -> RequestSpec:
        """The request for ``job``; ``inline`` gives each image's or file's (MIME type, base64
        data): by default read now, ``inline_digest`` for a fingerprint that never holds them."""
        ...

    def parse(self, response: Answer) -> Completion:
        """Read a completion, or raise a classified ``ProviderError``."""
        ...


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_RETRY_IN = re.compile(r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(ms|s)", re.IGNORECASE)


def parse_duration(text: str) -> float | None:
    """Go-style (``1m30.5s``, ``20ms``) or proto (``26s``) durations, in seconds."""
    text = text.strip()
    if not text:
        return None
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[m.group(2)]
        total += float(m.group(1)) * unit
        pos = m.end()
    return total if pos == len(text) else None


def retry_after(headers: Mapping[str, str], message: str = "") -> float | None:
    """The server's delay: ``retry-after-ms``, ``retry-after`` (seconds or a date), or the text."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if (ra := headers.get("retry-after")) is not None:
        try:
            return max(0.0, float(ra))
        except ValueError:
            try:
                from datetime import UTC, datetime

                return max(0.0, (parsedate_to_datetime(ra) - datetime.now(UTC)).total_seconds())
            except (TypeError, ValueError):
                pass
    if m := _RETRY_IN.search(message):
        return float(m.group(1)) / (1000 if m.group(2).lower() == "ms" else 1)
    return None


def count(value: Any) -> int | None:
    """A token count as reported, or None if the field is missing or not a count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def str_or_none(value: Any) -> str | None:
    """A text field of an answer; anything but a string or null makes the answer malformed."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError("expected a string")


def json_body(response: Answer) -> Any:
    """The decoded body; one that is not JSON is a retryable fault (truncated, a proxy's page)."""
    try:
        return loads(response.content, exact=False)  # its text is kept as it came
    except ValueError:
        snippet = response.content[:200].decode("utf-8", "replace")
        raise RetryableError(
            f"HTTP {response.status_code} with a body that is not JSON: {snippet!r}",
            status=response.status_code,
            body=snippet,
            unanswered=True,
        ) from None


def error_object(body: Any) -> Mapping[str, Any]:
    """The ``error`` object of an error body; Gemini's OpenAI endpoint may wrap it in a list."""
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        body = body[0]
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err: Mapping[str, Any] = body["error"]
        return err
    return {}


_SAID = (
    ("rate_limit", 429),
    ("resource_exhausted", 429),
    ("invalid_request", 400),
    ("invalid_argument", 400),
    ("auth", 401),
    ("permission", 403),
    ("not_found", 404),
)


def status_said(err: Mapping[str, Any]) -> int:
    """The HTTP status an error object sent under HTTP 200 stands for (some OpenAI-compatible
    proxies send errors so): its numeric ``code``, else what its ``type``, ``code`` or ``status``
    names (``rate_limit_error``, ``invalid_request_error``, Gemini's ``INVALID_ARGUMENT``...).
    A server's or an upstream's error, or one that says nothing more, is a 500."""
    code = err.get("code")
    if isinstance(code, int) and 400 <= code < 600:
        return code
    said = " ".join(str(err.get(k) or "") for k in ("type", "code", "status")).lower()
    return next((status for words, status in _SAID if words in said), 500)


def classify_status(
    status: int, message: str, body: str, delay: float | None, *, came_as: int | None = None
) -> ProviderError:
    """The common mapping from an HTTP error status to our error classes. ``came_as`` is the
    status the answer really came with when its body stands for ``status`` (an error under
    HTTP 200): the error keeps it, and a server error still counts as no answer."""
    real = status if came_as is None else came_as
    if status in (408, 409, 429) or status >= 500:
        return RetryableError(
            message, status=real, body=body, retry_after=delay, unanswered=status >= 500
        )
    if status in (401, 403, 404):
        return FatalProviderError(message, status=real, body=body)
    return PermanentJobError(message, status=real, body=body)


@dataclass(frozen=True, slots=True)
class RateHints:
    """What ``x-ratelimit-*`` headers say: limits per minute, what remains, and when it refills."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    @property
    def empty(self) -> bool:
        return self == _NO_HINTS


_NO_HINTS = RateHints()


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    v = headers.get(name)
    if v is None:
        return None
    try:
        return int(float(v))
    except ValueError:
        return None


def _header_duration(headers: Mapping[str, str], name: str) -> float | None:
    v = headers.get(name)
    return None if v is None else _duration(v)


@functools.lru_cache(maxsize=4096)
def _duration(v: str) -> float | None:
    """A header's duration in seconds (a number, or Go-style as OpenAI sends ``998ms``): read
    on every answer, and the values repeat (a reset is at most a window's milliseconds), so
    each is parsed once; a failed ``float`` costs an exception every time otherwise."""
    try:
        return float(v)
    except ValueError:
        return parse_duration(v)


def rate_hints(headers: Mapping[str, str]) -> RateHints:
    """Read ``x-ratelimit-*`` headers (OpenAI and most compatible servers; Gemini sends none)."""
    if "x-ratelimit-limit-requests" not in headers and "x-ratelimit-limit-tokens" not in headers:
        return _NO_HINTS
    return RateHints(
        limit_requests=_header_int(headers, "x-ratelimit-limit-requests"),
        remaining_requests=_header_int(headers, "x-ratelimit-remaining-requests"),
        reset_requests=_header_duration(headers, "x-ratelimit-reset-requests"),
        limit_tokens=_header_int(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=_header_int(headers, "x-ratelimit-remaining-tokens"),
        reset_tokens=_header_duration(headers, "x-ratelimit-reset-tokens"),
    )
