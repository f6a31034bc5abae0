"""The plain values the pipeline and each wire format hand each other: request, response, call.

None of them knows an HTTP framework, so one pipeline serves the ASGI adapter and the socket
server alike, and a wire format is a few small functions from one value to another.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ._limits import Rejection

__all__ = [
    "Call",
    "LimitStyle",
    "Refusal",
    "Reply",
    "Request",
    "Response",
    "WireFormat",
    "json_object",
    "json_response",
    "text_response",
]

LimitStyle = Literal["openai", "gemini"]
"""Whose way of counting limits applies (see ``_limits``)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the pipeline sees it; header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer; the server adds ``content-length`` from ``body`` unless ``drop`` is set."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    """Send ``body`` as the first part of a longer answer (its ``content-length`` is in
    ``headers``), then break the connection: the ``drop`` fault."""


@dataclass(frozen=True, slots=True)
class Call:
    """A model call in no wire format: what the faults, the limits and the answer need."""

    model: str
    key: str
    prompt: str
    """Every turn's text, system instruction included, one per line: what input tokens count."""
    last_user: str
    """The last user turn: what the answer echoes and what fault markers are read from."""
    max_tokens: int | None = None
    media_tokens: int = 0
    """The tokens of the images and files sent, by the provider's rule (beside ``prompt``'s)."""
    images: int = 0
    """Images to answer (Gemini with an IMAGE response modality, or the images route)."""
    image_size: tuple[int, int] = (64, 64)
    image_base: str | None = None
    """Where images answered as URLs are served; None: answer them inline (base64)."""
    schema: Mapping[str, Any] | None = None
    """The JSON Schema the answer must fit, if the request asked for one."""
    inputs: tuple[str, ...] = ()
    """The texts to embed (an embeddings call: one vector each, in order)."""
    dimensions: tuple[int, ...] = ()
    """Each input's vector length (an embeddings call)."""
    encoding: str = "float"
    """How an embeddings call wants its vectors: numbers (``float``) or ``base64``."""
    reasoning_tokens: int = 0
    """Tokens a reasoning model thinks before it answers (the Responses API): they come out of
    ``max_tokens`` first, and count as output."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The mock's answer to a call: its text, whether ``max_tokens`` cut it, its token counts
    (``output_tokens`` includes ``reasoning_tokens``, as OpenAI counts them)."""

    text: str
    cut: bool
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0


class Refusal(Exception):
    """Raised by a wire format or the pipeline to answer ``response`` instead of a reply."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class WireFormat(Protocol):
    """What differs between providers' wire formats; the pipeline does everything else."""

    @property
    def limit_style(self) -> LimitStyle:
        """Whose limits apply to calls in this format."""
        ...

    @property
    def reports_limits(self) -> bool:
        """Whether answers carry ``x-ratelimit-*`` headers (OpenAI's do, Gemini's do not)."""
        ...

    def parse(self, request: Request) -> Call:
        """Check the key, read the body into a call; raise ``Refusal`` with the format's error."""
        ...

    def invalid(self, message: str) -> Response:
        """A 400 for a request the provider would refuse as malformed."""
        ...

    def unavailable(self) -> Response:
        """A 503: the model is overloaded."""
        ...

    def internal(self) -> Response:
        """A 500: the server failed."""
        ...

    def rate_limited(self, call: Call, why: Rejection, headers: Mapping[str, str]) -> Response:
        """The provider's own 429 for ``call``, refused for ``why``."""
        ...

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        """The 200 carrying ``reply``; ``serial`` numbers the mock's answers, for their ids."""
        ...


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_response(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Response:
    """``content`` as compact UTF-8 JSON (the bytes Starlette's ``JSONResponse`` wrote)."""
    body = _JSON.encode(content)
    extra = tuple(headers.items()) if headers else ()
    return Response(status, body.encode(), (("content-type", "application/json"), *extra))


def text_response(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """A plain-text answer, for what no provider would answer in JSON (an unknown path)."""
    extra = tuple(headers.items()) if headers else ()
    return Response(status, text.encode(), (("content-type", "text/plain; charset=utf-8"), *extra))


def json_object(body: bytes, invalid: Callable[[str], Response]) -> dict[str, Any]:
    """``body`` parsed as a JSON object, or a ``Refusal`` with ``invalid(message)``."""
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refusal(invalid("the request body is not valid JSON")) from None
    if not isinstance(parsed, dict):
        raise Refusal(invalid("the request body must be a JSON object"))
    return parsed
