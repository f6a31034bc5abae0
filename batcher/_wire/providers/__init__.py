"""The provider layer: one module per wire format, chosen by name."""

from __future__ import annotations

from ..._core.errors import UsageError
from ._base import Completion, ImageOut, Provider, RateHints, RequestSpec, rate_hints
from ._embeddings import Embedder, GeminiEmbeddings, OpenAIEmbeddings, is_embedder
from ._gemini import GeminiProvider
from ._http import fingerprint, job_fingerprint, send
from ._images import OpenAIImagesProvider
from ._openai import OpenAIProvider
from ._responses import OpenAIResponses

__all__ = [
    "Completion",
    "Embedder",
    "ImageOut",
    "Provider",
    "RateHints",
    "RequestSpec",
    "fingerprint",
    "get_provider",
    "is_embedder",
    "job_fingerprint",
    "rate_hints",
    "send",
]

_PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
}


def get_provider(name: str, endpoint: str = "chat", *, dimensions: int | None = None) -> Provider:
    """The provider for a ``--provider`` name, and ``--endpoint`` (chat, responses, images or
    embeddings, whose vectors have ``dimensions`` if given)."""
    if endpoint == "embeddings":
        if name not in _PROVIDERS:
            raise UsageError(f"unknown provider {name!r}; choose openai or gemini")
        embedder = OpenAIEmbeddings if name == "openai" else GeminiEmbeddings
        return embedder(dimensions)
    if endpoint == "responses":
        if name != "openai":
            raise UsageError(
                "--endpoint responses speaks OpenAI's Responses API (OpenAI or a compatible "
                "server): use --provider openai"
            )
        return OpenAIResponses()
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
