"""One HTTP attempt for a wire format, and the fingerprint of what a job sends."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..._core.codec import canonical, dumps
from ..._core.media import inline_digest
from ..._jobs import Job
from ..proxy import proxy_refused
from ..transport import Transport
from ._base import Completion, Provider, RateHints, RequestSpec, rate_hints

__all__ = ["encode", "fingerprint", "job_fingerprint", "send"]


def encode(body: Any) -> bytes:
    """A request body as compact UTF-8 JSON."""
    return dumps(body)


async def send(
    transport: Transport,
    provider: Provider,
    spec: RequestSpec,
    observe: Callable[[RateHints], None] | None = None,
    resent: Callable[[], None] | None = None,
) -> Completion:
    """POST ``spec`` and read the answer; ``observe`` sees every answer's rate-limit headers,
    ``resent`` hears of a request the transport had to send twice (see ``Reply.resent``).

    The transport turns a missing answer into ``RetryableError``; ``provider.parse`` classifies
    every answer but a proxy's 407 (only a proxy says it, RFC 9110 15.5.8), ``ProxyRefused``."""
    reply = await transport.post(spec.path, encode(spec.body))
    if reply.resent and resent is not None:
        resent()
    if reply.status_code == 407:
        raise proxy_refused(None, 407)
    if observe is not None:
        observe(rate_hints(reply.headers))
    return provider.parse(reply)


def fingerprint(provider: Provider, model: str, spec: RequestSpec) -> str:
    """A hash of what is sent for a job: provider, model, path and body (never the key)."""
    data: list[Any] = [provider.name, model, spec.path, spec.body]
    return hashlib.sha256(canonical(data)).hexdigest()[:16]


def job_fingerprint(provider: Provider, job: Job, model: str) -> str:
    """The fingerprint of what ``job`` sends, its images and files counted by their SHA-256
    (streamed, never held): the one every path that records or compares a job uses."""
    return fingerprint(provider, model, provider.build(job, model, inline_digest))
