"""Which wire format answers which path: the one table a new route is added to."""

from __future__ import annotations

from ._config import MockConfig
from ._embeddings import GeminiEmbed, OpenAIEmbeddings
from ._gemini import PREFIX as GEMINI_PREFIX
from ._gemini import GeminiNative
from ._gemini_openai import GeminiOpenAIChat
from ._images import MockFiles, OpenAIImages
from ._openai import OpenAIChat
from ._responses import OpenAIResponses
from ._wire import WireFormat

__all__ = ["Routes"]


class Routes:
    """Wire formats by exact path, and by path prefix for paths that carry a name (a model).

    A prefix route matches one more path segment: ``/v1beta/models/m:generateContent`` but not
    ``/v1beta/models/m/x``; a method of its own (``:batchEmbedContents``) may go to another
    format. All of them are ``POST`` routes.
    """

    def __init__(self, config: MockConfig) -> None:
        openai = OpenAIChat()
        self.files = MockFiles()
        images = OpenAIImages(self.files)
        embeddings = OpenAIEmbeddings()
        responses = OpenAIResponses()
        self.exact: dict[str, WireFormat] = {
            "/v1/embeddings": embeddings,
            "/embeddings": embeddings,
            "/v1/responses": responses,
            "/responses": responses,
            "/v1/chat/completions": openai,
            "/chat/completions": openai,
            "/v1/images/generations": images,
            "/images/generations": images,
            "/v1beta/openai/chat/completions": GeminiOpenAIChat(free_tier=config.free_tier),
        }
        self.prefixed: dict[str, WireFormat] = {
            GEMINI_PREFIX: GeminiNative(free_tier=config.free_tier),
        }
        self.methods: dict[str, WireFormat] = {
            "batchEmbedContents": GeminiEmbed(free_tier=config.free_tier),
        }
        """Formats of a prefix route's methods other than its own, by method."""

    def match(self, path: str) -> WireFormat | None:
        """The wire format that answers ``path``, if any."""
        found = self.exact.get(path)
        if found is not None:
            return found
        for prefix, wire in self.prefixed.items():
            rest = path[len(prefix) :]
            if path.startswith(prefix) and rest and "/" not in rest:
                return self.methods.get(rest.partition(":")[2], wire)
        return None
