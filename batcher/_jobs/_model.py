"""The job model: what one request asks for, whatever line shape or Python object it came from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

from .._core.media import Media

__all__ = [
    "REASONING_EFFORTS",
    "TASK_TYPES",
    "Job",
    "Message",
    "NativeRequest",
    "Part",
    "ProviderName",
    "Role",
]

ProviderName: TypeAlias = Literal["openai", "gemini"]
Role: TypeAlias = Literal["system", "user", "assistant"]

TASK_TYPES = (
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "RETRIEVAL_DOCUMENT",
    "RETRIEVAL_QUERY",
    "CODE_RETRIEVAL_QUERY",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
)
"""Gemini's embedding task types (https://ai.google.dev/api/embeddings#tasktype)."""

REASONING_EFFORTS = ("low", "medium", "high")
"""How hard an OpenAI reasoning model thinks (Responses ``reasoning.effort``, chat's
``reasoning_effort``); https://platform.openai.com/docs/guides/reasoning"""


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a message: text, or an image or file (``media``, a reference to its bytes,
    read when the job is sent; its ``text`` is then empty)."""

    text: str = ""
    media: Media | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A provider's own request body, from a batch API line, sent as it is to that provider."""

    provider: ProviderName
    body: Mapping[str, Any]
    unconvertible: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    """One request to make: its id, its conversation and its sampling parameters."""

    id: str
    messages: tuple[Message, ...]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    native: NativeRequest | None = None
    source: str = "<python>"
    modalities: tuple[str, ...] = ()
    """What the answer may hold (``("text", "image")``): Gemini's ``responseModalities``."""
    n: int | None = None
    """Images to generate (the images endpoint)."""
    size: str | None = None
    """Size of generated images, e.g. ``1024x1024`` (the images endpoint)."""
    quality: str | None = None
    """Quality of generated images, e.g. ``high`` (the images endpoint)."""
    task_type: str | None = None
    """What the vector is for, e.g. ``RETRIEVAL_QUERY`` (the embeddings endpoint, Gemini's
    ``taskType``)."""
    reasoning_effort: str | None = None
    """How hard an OpenAI reasoning model thinks: low, medium or high (``REASONING_EFFORTS``)."""

    @classmethod
    def from_prompt(cls, id: str, prompt: str, **kwargs: Any) -> Job:
        """A single-turn job, the common case for Python callers."""
        system = kwargs.pop("system", None)
        messages = [Message("user", (Part(prompt),))]
        if system is not None:
            messages.insert(0, Message("system", (Part(system),)))
        return cls(id=id, messages=tuple(messages), **kwargs)

    @property
    def text(self) -> str:
        """All the text the job sends, for token estimates."""
        return "\n".join(m.text for m in self.messages)

    @property
    def media(self) -> tuple[Media, ...]:
        """Every image and file the job sends, in order."""
        return tuple(p.media for m in self.messages for p in m.parts if p.media is not None)

    def with_media(self, swap: Callable[[Media], Media]) -> Job:
        """This job with each image or file replaced by ``swap`` of it (a ref marked uploaded)."""
        messages = tuple(
            replace(
                m,
                parts=tuple(
                    p if p.media is None else replace(p, media=swap(p.media)) for p in m.parts
                ),
            )
            for m in self.messages
        )
        return replace(self, messages=messages)
