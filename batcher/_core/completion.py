"""A usable answer, whatever the wire format: the value every wire's parser returns and every
executor records (and ``InvalidOutput`` carries, so that a row keeps what was answered)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Completion", "ImageOut"]


@dataclass(frozen=True, slots=True)
class ImageOut:
    """An image an answer holds: its bytes, or a URL to download them from."""

    mime_type: str | None
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A usable answer, whatever the wire format."""

    text: str | None
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    model: str | None
    raw: str
    images: tuple[ImageOut, ...] = ()
    """Images the answer holds (saved under DIR/images/ before the job is recorded)."""
    parsed: Any = None
    """The answer checked against the run's output schema (``SchemaProvider``), as the
    ``parsed`` column holds it."""
    vectors: tuple[Sequence[float], ...] = ()
    """Embeddings answered, one per input in input order (``--endpoint embeddings``): a packed
    request's answer holds one for each of its jobs, a job's own completion its one."""
