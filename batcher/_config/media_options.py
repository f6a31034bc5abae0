"""The option group of what API a run speaks beyond chat (``MediaOptions``): what answers may
hold, the image-generation endpoint's parameters and the embeddings endpoint's. ``RunOptions``
composes it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Literal

from .._core.errors import BadOption
from .._core.flag import flag
from .._jobs import REASONING_EFFORTS, TASK_TYPES

__all__ = ["MediaOptions"]


_MODALITIES = ("text", "image")
_APIS = ("chat", "responses", "images", "embeddings")


def _modalities(text: str) -> tuple[str, ...]:
    """``--modalities text,image`` as a tuple, each one checked."""
    items = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in items if m not in _MODALITIES]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"takes text and/or image, e.g. text,image; got {text!r}")
    return items


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaOptions:
    """What API beyond chat: what answers may hold, the image-generation endpoint's parameters
    and the embeddings endpoint's."""

    modalities: tuple[str, ...] = field(
        default=(),
        metadata=flag(
            "what answers may hold, e.g. text,image (Gemini's responseModalities); every image "
            "answered is saved under DIR/images/",
            metavar="LIST",
            parse=_modalities,
        ),
    )
    api: Literal["chat", "responses", "images", "embeddings"] = field(
        default="chat",
        metadata=flag(
            "chat (default); responses: OpenAI's POST /responses, the same jobs (newer models "
            "are offered there only); images: OpenAI-compatible POST /images/generations, each "
            "job's prompt making images saved under DIR/images/; embeddings: each job's text "
            "embedded (OpenAI /embeddings, Gemini batchEmbedContents), many jobs packed in a "
            "request, each vector in the column 'embedding'",
            choices=_APIS,
            name="--endpoint",
        ),
    )
    """Which API of the provider: chat (``chat/completions`` or ``generateContent``), OpenAI's
    responses (``responses``), images
    (``images/generations``) or embeddings (``embeddings`` or ``batchEmbedContents``).
    ``--endpoint`` on the command line."""
    size: str | None = field(
        default=None,
        metadata=flag(
            "size of generated images for jobs that set none, e.g. 1024x1024", metavar="WxH"
        ),
    )
    quality: str | None = field(
        default=None,
        metadata=flag("quality of generated images for jobs that set none, e.g. high", metavar="Q"),
    )
    n: int | None = field(
        default=None,
        metadata=flag("images per job for jobs that set none (default 1)", metavar="N"),
    )
    ipm: int | None = field(
        default=None,
        metadata=flag(
            "images per minute each model may be asked for (a request counts its n, or 1)",
            metavar="N",
        ),
    )

    dimensions: int | None = field(
        default=None,
        metadata=flag(
            "--endpoint embeddings: vectors of N dimensions, for models that can shorten theirs "
            "(OpenAI's text-embedding-3-*: dimensions; Gemini: outputDimensionality)",
            metavar="N",
        ),
    )
    task_type: str | None = field(
        default=None,
        metadata=flag(
            "--endpoint embeddings on Gemini: the taskType of jobs that set none, e.g. "
            "RETRIEVAL_DOCUMENT or RETRIEVAL_QUERY",
            metavar="TYPE",
        ),
    )

    upload: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata=flag(
            "send files through the provider's Files API rather than inline: auto (default) "
            "for files over the inline limit (Gemini 20 MB, OpenAI 50 MB) or sent by more than "
            "one job, and audio on Gemini; always; never (inline, over-limit jobs refused). "
            "Each file is uploaded once, recorded in DIR/uploads.jsonl for reruns",
            choices=("auto", "always", "never"),
        ),
    )
    """When files go through the Files API (OpenAI's ``/files``, Gemini's upload), uploaded
    once by SHA-256 and named by id in every request that sends them."""

    reasoning_effort: str | None = field(
        default=None,
        metadata=flag(
            "how hard OpenAI's reasoning models think, for jobs that set none: low, medium or "
            "high (the Responses API's reasoning.effort, chat's reasoning_effort)",
            choices=REASONING_EFFORTS,
        ),
    )

    def __post_init__(self) -> None:
        if isinstance(self.modalities, str):
            object.__setattr__(self, "modalities", _modalities(self.modalities))
        bad = [m for m in self.modalities if m not in _MODALITIES]
        if bad:
            raise BadOption("modalities", f"takes text and/or image, not {bad}")
        if self.api not in _APIS:
            raise BadOption("api", f"takes {', '.join(_APIS)}, not {self.api!r}")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise BadOption("reasoning_effort", f"takes one of {', '.join(REASONING_EFFORTS)}")
        if self.dimensions is not None and not 1 <= self.dimensions <= 65_536:
            raise BadOption("dimensions", f"must be from 1 to 65,536, got {self.dimensions}")
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise BadOption("task_type", f"takes one of {', '.join(TASK_TYPES)}")
        embedding = ("dimensions", "task_type")
        if self.api != "embeddings" and any(getattr(self, k) is not None for k in embedding):
            which = "dimensions" if self.dimensions is not None else "task_type"
            raise BadOption(which, "is an option of --endpoint embeddings")
        if self.upload not in ("auto", "always", "never"):
            raise BadOption("upload", f"takes auto, always or never, not {self.upload!r}")
        if self.n is not None and not 1 <= self.n <= 10:
            raise BadOption("n", "must be from 1 to 10")
        if self.ipm is not None and self.ipm < 1:
            raise BadOption("ipm", f"must be at least 1, got {self.ipm}")

    def job_defaults(self) -> dict[str, Any]:
        """The job fields these options fill in where a job sets none."""
        return {
            "modalities": self.modalities,
            "n": self.n,
            "size": self.size,
            "quality": self.quality,
            "task_type": self.task_type,
            "reasoning_effort": self.reasoning_effort,
        }
