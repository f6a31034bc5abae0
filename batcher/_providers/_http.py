"""One HTTP attempt for a wire format, and the fingerprint of what a job sends.

httpx's exceptions are translated into ours here and only here (``send``), so the rest of batcher
sees ``RetryableError`` for timeouts and broken connections, never a transport's own classes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx

from .._errors import RetryableError
from ._base import Completion, Provider, RateHints, RequestSpec, rate_hints

__all__ = ["fingerprint", "send"]


async def send(
    client: httpx.AsyncClient,
    provider: Provider,
    spec: RequestSpec,
    observe: Callable[[RateHints], None] | None = None,
) -> Completion:
    """POST ``spec`` and read the answer; ``observe`` sees every answer's rate-limit headers."""
    try:
        response = await client.post(spec.path, json=spec.body)
    except httpx.TimeoutException as e:
        raise RetryableError(f"request timed out ({type(e).__name__})") from None
    except httpx.TransportError as e:
        raise RetryableError(f"connection failed ({type(e).__name__}: {e})") from None
    if observe is not None:
        observe(rate_hints(response.headers))
    return provider.parse(response)


def fingerprint(provider: Provider, model: str, spec: RequestSpec) -> str:
    """A hash of what is sent for a job: provider, model, path and body (never the key)."""
    data: list[Any] = [provider.name, model, spec.path, spec.body]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
