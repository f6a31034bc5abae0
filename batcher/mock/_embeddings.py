"""The embeddings wire formats: OpenAI's ``POST /v1/embeddings`` and Gemini's
``POST /v1beta/models/{model}:batchEmbedContents``, each many inputs to a request.

A request is one call to the pipeline (one request and its summed tokens for the limits, its
inputs' fault markers read together), refused as the providers refuse one: over 2,048 inputs or
300,000 tokens summed (OpenAI), over 100 requests (Gemini), an input over 8,192 tokens (2,048
for Gemini), ``dimensions`` to a model that takes none (``text-embedding-ada-002``). Each vector
is derived from the model and its input alone (unit length), so a test can check what it got.
https://platform.openai.com/docs/api-reference/embeddings/create,
https://ai.google.dev/api/embeddings#method:-models.batchembedcontents
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

from .._core.tokens import count_tokens
from ._gemini import PREFIX, GeminiNative
from ._openai import OpenAIChat
from ._wire import Call, Refusal, Reply, Request, Response, json_object, json_response

__all__ = ["GeminiEmbed", "OpenAIEmbeddings", "default_dimensions", "mock_vector"]

_DEFAULT_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "gemini-embedding-001": 3072,
    "text-embedding-004": 768,
}
"""The providers' models' own vector lengths; any other model of the mock answers 64."""


def default_dimensions(model: str) -> int:
    """The length of ``model``'s vectors when a request asks for none."""
    return _DEFAULT_DIMENSIONS.get(model, 64)


def mock_vector(model: str, text: str, dimensions: int) -> list[float]:
    """The mock's embedding of ``text`` on ``model``: deterministic (two bytes of a SHAKE-256
    stream, little-endian, a coordinate), of unit length."""
    stream = hashlib.shake_256(f"{model}\n{text}".encode()).digest(2 * dimensions)
    values = [v - 32767.5 for v in struct.unpack(f"<{dimensions}H", stream)]
    norm = math.sqrt(sum(v * v for v in values))
    return [round(v / norm, 6) for v in values]


def _encoded(call: Call, text: str, dimensions: int) -> list[float] | str:
    """A vector as the request asked: numbers, or base64 of little-endian float32s."""
    vector = mock_vector(call.model, text, dimensions)
    if call.encoding != "base64":
        return vector
    return base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")


def _dimensions(value: Any, model: str, invalid: Any) -> int:
    """The vector length asked (``value``, or the model's own), checked as the provider does."""
    if value is None:
        return default_dimensions(model)
    if model == "text-embedding-ada-002":
        raise Refusal(invalid("This model does not support specifying dimensions."))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3072:
        raise Refusal(invalid(f"Invalid value for dimensions: {value!r}"))
    return value


def _check_inputs(inputs: list[str], per_input: int, invalid: Any) -> None:
    for i, text in enumerate(inputs):
        if not text:
            raise Refusal(invalid(f"input[{i}] is empty: an input must be a non-empty string"))
        if count_tokens(text) > per_input:
            raise Refusal(
                invalid(
                    f"This model's maximum context length is {per_input} tokens, however you "
                    f"requested {count_tokens(text)} tokens in input[{i}]. Please reduce your "
                    "prompt."
                )
            )


class OpenAIEmbeddings(OpenAIChat):
    """``POST /v1/embeddings`` as OpenAI answers it; keys, models and errors as chat's."""

    max_inputs = 2048
    max_tokens = 300_000
    per_input = 8192

    def parse(self, request: Request) -> Call:
        key = self.check_key(request)
        body = json_object(request.body, self.invalid)
        model, raw = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            raise Refusal(self.invalid("you must provide a model parameter"))
        self.check_model(model)
        inputs = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(t, str) for t in inputs)
        ):
            raise Refusal(self.invalid("'input' must be a string or a non-empty array of strings"))
        if len(inputs) > self.max_inputs:
            raise Refusal(
                self.invalid(f"'input' holds {len(inputs)} items, more than {self.max_inputs}")
            )
        _check_inputs(inputs, self.per_input, self.invalid)
        total = sum(count_tokens(t) for t in inputs)
        if total > self.max_tokens:
            raise Refusal(
                self.invalid(f"Requested {total} tokens, max {self.max_tokens} tokens per request")
            )
        dimensions = _dimensions(body.get("dimensions"), model, self.invalid)
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise Refusal(self.invalid(f"Invalid value for encoding_format: {encoding!r}"))
        return Call(
            model=model,
            key=key,
            prompt="\n".join(inputs),
            last_user="\n".join(inputs),
            inputs=tuple(inputs),
            dimensions=(dimensions,) * len(inputs),
            encoding=encoding,
        )

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(call, text, n)}
            for i, (text, n) in enumerate(zip(call.inputs, call.dimensions, strict=True))
        ]
        tokens = sum(count_tokens(t) for t in call.inputs)
        body = {
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json_response(200, body, {"x-request-id": f"req_mock{serial:08d}", **headers})


class GeminiEmbed(GeminiNative):
    """``POST /v1beta/models/{model}:batchEmbedContents`` as the Gemini API answers it."""

    max_inputs = 100
    per_input = 2048

    def parse(self, request: Request) -> Call:
        model, _, method = request.path[len(PREFIX) :].partition(":")
        key = self.check_call(request, model)
        if method != "batchEmbedContents":
            raise Refusal(self.invalid(f"Method {method!r} not found."))
        body = json_object(request.body, self.invalid)
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Refusal(self.invalid("'requests' must be a non-empty array"))
        if len(requests) > self.max_inputs:
            raise Refusal(
                self.invalid(
                    f"* BatchEmbedContentsRequest.requests: at most {self.max_inputs} requests "
                    "can be in one batch"
                )
            )
        inputs, sizes = [], []
        for i, one in enumerate(requests):
            if not isinstance(one, Mapping) or one.get("model") != f"models/{model}":
                raise Refusal(
                    self.invalid(f"requests[{i}].model must be the batch's model, models/{model}")
                )
            parts = (one.get("content") or {}).get("parts") if isinstance(one, Mapping) else None
            if not isinstance(parts, list) or not parts:
                raise Refusal(self.invalid(f"requests[{i}].content.parts is required"))
            inputs.append("".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping)))
            sizes.append(_dimensions(one.get("outputDimensionality"), model, self.invalid))
        _check_inputs(inputs, self.per_input, self.invalid)
        return Call(
            model=model,
            key=key,
            prompt="\n".join(inputs),
            last_user="\n".join(inputs),
            inputs=tuple(inputs),
            dimensions=tuple(sizes),
        )

    def answer(self, call: Call, reply: Reply, serial: int, headers: Mapping[str, str]) -> Response:
        embeddings = [
            {"values": mock_vector(call.model, text, n)}
            for text, n in zip(call.inputs, call.dimensions, strict=True)
        ]
        return json_response(200, {"embeddings": embeddings})
