"""The provider layer: one module per wire format, chosen by name."""

from __future__ import annotations

from .._errors import UsageError
from ._base import Completion, Provider, RateHints, RequestSpec, rate_hints
from ._gemini import GeminiProvider
from ._http import fingerprint, send
from ._openai import OpenAIProvider

__all__ = [
    "Completion",
    "Provider",
    "RateHints",
    "RequestSpec",
    "fingerprint",
    "get_provider",
    "rate_hints",
    "send",
]

_PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
}


def get_provider(name: str) -> Provider:
    """The provider for a ``--provider`` name."""
    try:
        return _PROVIDERS[name]()
    except KeyError:
        raise UsageError(f"unknown provider {name!r}; choose openai or gemini") from None
