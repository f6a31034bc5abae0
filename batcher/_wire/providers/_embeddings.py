"""The embeddings wire formats: OpenAI's ``POST {base}/embeddings`` and Gemini's
``models/{m}:batchEmbedContents``, each taking many inputs in one request.

OpenAI: ``{model, input: [str], dimensions?, encoding_format: "base64"}`` answered ``{data:
[{index, embedding}], model, usage: {prompt_tokens}}``; at most 2,048 inputs and 300,000 tokens
summed over them in one request, 8,192 tokens an input; usage is the request's only. Each
``embedding`` comes as base64 of little-endian float32s (a quarter of the JSON numbers' bytes, read
without a float object a number); a server that answers numbers anyway is read too.
https://platform.openai.com/docs/api-reference/embeddings/create

Gemini: ``{requests: [{model, content: {parts: [{text}]}, taskType?, outputDimensionality?}]}``
answered ``{embeddings: [{values}]}``, in the order asked; the SDKs send at most 100 a call.
https://ai.google.dev/api/embeddings#method:-models.batchembedcontents

A job's own request (``build``: what its fingerprint hashes) is the one-input form of the same
body, so a job's fingerprint does not depend on the jobs it was packed with.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeGuard

from ..._core.errors import RetryableError
from ..._core.media import Inline, inline_now
from ..._jobs import Job
from ._base import (
    Answer,
    Completion,
    Provider,
    RequestSpec,
    count,
    error_object,
    json_body,
    status_said,
)
from ._gemini import GeminiProvider, model_path
from ._openai import OpenAIProvider

__all__ = ["Embedder", "GeminiEmbeddings", "OpenAIEmbeddings", "is_embedder"]


class Embedder(Provider, Protocol):
    """An embeddings wire: a request of many jobs' texts, within its limits."""

    max_inputs: int
    """Inputs a request takes at most."""
    max_tokens: int | None
    """Tokens summed over a request's inputs at most (None: no such limit known)."""

    def build_pack(self, jobs: Sequence[Job], model: str) -> RequestSpec:
        """One request embedding every job's text, in order."""
        ...


def is_embedder(provider: Provider) -> TypeGuard[Embedder]:
    """Whether ``provider`` speaks an embeddings wire (packs jobs: ``build_pack``)."""
    return bool(getattr(provider, "embeds", False))


def _base64_vector(text: str) -> array[float]:
    """An embedding sent as base64 of little-endian float32s (``TypeError`` if it is not)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise TypeError("an embedding is not base64") from None
    if not raw or len(raw) % 4:
        raise TypeError("an embedding's bytes are not float32s")
    out = array("f", raw)
    if sys.byteorder == "big":
        out.byteswap()
    if not all(math.isfinite(v) for v in out):
        raise TypeError("an embedding holds something that is not a finite float32")
    return out


def _vector(values: Any) -> array[float]:
    """One embedding as float32 (``TypeError`` if it is not a non-empty list of finite numbers):
    4 bytes a number from the answer on, where a list of floats holds 32 (a pack of 2,048
    vectors of 3,072 is 25 MB so, 200 MB as floats)."""
    if isinstance(values, str):
        return _base64_vector(values)
    if not isinstance(values, list) or not values:
        raise TypeError("an embedding is a non-empty list of numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise TypeError("an embedding holds something that is not a number")
    out = array("f", values)
    if not all(math.isfinite(v) for v in out):
        raise TypeError("an embedding holds something that is not a finite float32")
    return out


def _malformed(what: str, response: Answer) -> RetryableError:
    return RetryableError(f"HTTP 200 {what}", status=200, body=response.text[:500])


class OpenAIEmbeddings(OpenAIProvider):
    """``POST {base}/embeddings`` with a Bearer key; errors as chat/completions's."""

    embeds = True
    max_inputs = 2048
    max_tokens: int | None = 300_000
    charges_output = False

    def __init__(self, dimensions: int | None = None) -> None:
        self.dimensions = dimensions

    def build(self, job: Job, model: str, inline: Inline = inline_now) -> RequestSpec:
        return self.build_pack([job], model)

    def build_pack(self, jobs: Sequence[Job], model: str) -> RequestSpec:
        body: dict[str, Any] = {"model": model, "input": [job.text for job in jobs]}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        body["encoding_format"] = "base64"
        return RequestSpec("embeddings", body)

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body, response.status_code)
        try:
            data = sorted(body["data"], key=lambda d: int(d["index"]))
            vectors = tuple(_vector(d["embedding"]) for d in data)
            if [int(d["index"]) for d in data] != list(range(len(data))):
                raise TypeError("data[].index does not number the inputs")
            usage: Mapping[str, Any] = body.get("usage") or {}
            model = body.get("model")
        except (KeyError, TypeError, ValueError, AttributeError):
            if err := error_object(body):
                raise self._error(response, body, status_said(err)) from None
            raise _malformed(
                "without data[].embedding: not an embeddings answer", response
            ) from None
        return Completion(
            text=None,
            finish_reason=None,
            input_tokens=count(usage.get("prompt_tokens")),
            output_tokens=0,
            model=model if isinstance(model, str) else None,
            raw="",
            vectors=vectors,
        )


class GeminiEmbeddings(GeminiProvider):
    """``POST {base}/models/{model}:batchEmbedContents`` with ``x-goog-api-key``."""

    embeds = True
    max_inputs = 100
    max_tokens: int | None = None

    def __init__(self, dimensions: int | None = None) -> None:
        self.dimensions = dimensions

    def build(self, job: Job, model: str, inline: Inline = inline_now) -> RequestSpec:
        return self.build_pack([job], model)

    def build_pack(self, jobs: Sequence[Job], model: str) -> RequestSpec:
        """One request embedding every job's text, in order (each with its taskType)."""
        name = f"models/{model.removeprefix('models/')}"
        requests = []
        for job in jobs:
            one: dict[str, Any] = {"model": name, "content": {"parts": [{"text": job.text}]}}
            if job.task_type is not None:
                one["taskType"] = job.task_type
            if self.dimensions is not None:
                one["outputDimensionality"] = self.dimensions
            requests.append(one)
        return RequestSpec(model_path(model, "batchEmbedContents"), {"requests": requests})

    def parse(self, response: Answer) -> Completion:
        body = json_body(response)
        if response.status_code != 200:
            raise self._error(response, body, response.status_code)
        if not isinstance(body, Mapping) or "embeddings" not in body:
            if err := error_object(body):
                raise self._error(response, body, status_said(err))
            raise _malformed("without embeddings: not a batchEmbedContents answer", response)
        try:
            vectors = tuple(_vector(e["values"]) for e in body["embeddings"])
            usage = body.get("usageMetadata") or {}
            tokens = count(usage.get("promptTokenCount"))
        except (KeyError, TypeError, AttributeError):
            raise _malformed("with a malformed embeddings[].values", response) from None
        return Completion(
            text=None,
            finish_reason=None,
            input_tokens=tokens,
            output_tokens=0,
            model=None,
            raw="",
            vectors=vectors,
        )
