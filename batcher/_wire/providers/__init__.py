"""The provider layer: one module per wire format, chosen by name."""

from __future__ import annotations

from ..._core.errors import UsageError
from ._base import Completion, ImageOut, Provider, RateHints, RequestSpec, rate_hints
from ._gemini import GeminiProvider
from ._http import fingerprint, job_fingerprint, send
from ._images import OpenAIImagesProvider
from ._openai import OpenAIProvider

__all__ = [
    "Completion",
    "ImageOut",
    "Provider",
    "RateHints",
    "RequestSpec",
    "fingerprint",
    "get_provider",
    "job_fingerprint",
    "rate_hints",
    "send",
]

_PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
}


def get_provider(name: str, endpoint: str = "chat") -> Provider:
    """The provider for a ``--provider`` name, and ``--endpoint`` (chat, or images)."""
    if endpoint == "images":
        if name != "openai":
            raise UsageError(
                "--endpoint images speaks OpenAI's images API (OpenAI or a compatible proxy): "
                "use --provider openai, or --modalities text,image with --provider gemini"
            )
        return OpenAIImagesProvider()
    try:
        return _PROVIDERS[name]()
    except KeyError:
        raise UsageError(f"unknown provider {name!r}; choose openai or gemini") from None
