"""What a row asks for, and the checks of one value in it, shared by every line shape's parser.

``JobFields`` is a job without its id and without the place it was read from. The ``*_of``
helpers read one field of a row (or of a JSON object in it), and ``media_ref`` one image or file
reference; each raises ``BadRow`` with the message a user sees.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from .._core.media import Media, MediaKind
from .._core.stores import STORES
from ._model import REASONING_EFFORTS, Job, Message, NativeRequest
from ._readers import BadRow, Row

__all__ = [
    "Base",
    "ImageRequest",
    "JobFields",
    "Sampling",
    "count_of",
    "effort_of",
    "maybe_json",
    "media_ref",
    "media_refs",
    "number_of",
    "row_id",
    "sampling_of",
    "stop_of",
    "str_of",
]


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampling parameters a row sets; None (or no stop) leaves the provider's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What an image-generation job asks for beyond its prompt; None leaves the default."""

    n: int | None = None
    size: str | None = None
    quality: str | None = None


@dataclass(frozen=True, slots=True)
class JobFields:
    """What one row asks for: a job without its id and without the place it was read from."""

    messages: tuple[Message, ...]
    model: str | None = None
    sampling: Sampling = Sampling()
    native: NativeRequest | None = None
    image: ImageRequest = ImageRequest()
    task_type: str | None = None

    def job(self, job_id: str, *, source: str, default_model: str | None) -> Job:
        """The job these fields make; a row that names no model gets ``default_model``."""
        s = self.sampling
        return Job(
            id=job_id,
            messages=self.messages,
            model=self.model or default_model,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            top_p=s.top_p,
            stop=s.stop,
            reasoning_effort=s.reasoning_effort,
            native=self.native,
            source=source,
            n=self.image.n,
            size=self.image.size,
            quality=self.image.quality,
            task_type=self.task_type,
        )


# --- one field of a row or of a JSON object in it -------------------------------------------------


def str_of(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise BadRow(f"{key!r} must be a string, got {type(v).__name__}")
    return v


def number_of(obj: Mapping[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRow(f"{key!r} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise BadRow(f"{key!r} must be a finite number, got {v}")
    return float(v)


def count_of(obj: Mapping[str, Any], key: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise BadRow(f"{key!r} must be a positive integer, got {v!r}")
    return v


def stop_of(v: Any, key: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list | tuple) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise BadRow(f"{key!r} must be a string or a list of strings")


def sampling_of(obj: Mapping[str, Any]) -> Sampling:
    return Sampling(
        temperature=number_of(obj, "temperature"),
        max_tokens=count_of(obj, "max_tokens"),
        top_p=number_of(obj, "top_p"),
        stop=stop_of(obj.get("stop"), "stop"),
        reasoning_effort=effort_of(obj),
    )


def effort_of(obj: Mapping[str, Any]) -> str | None:
    """A row's ``reasoning_effort``, or the Responses form ``reasoning: {effort}``."""
    v = obj.get("reasoning_effort")
    if v is None and isinstance(obj.get("reasoning"), Mapping):
        v = obj["reasoning"].get("effort")
    if v is None:
        return None
    if v not in REASONING_EFFORTS:
        raise BadRow(f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}, got {v!r}")
    return str(v)


def row_id(row: Row, key: str) -> str | None:
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise BadRow(f"{key!r} must be a string or an integer, got {type(v).__name__}")
    s = str(v)
    if not s:
        raise BadRow(f"{key!r} is empty")
    return s


def maybe_json(v: Any) -> Any:
    """Parquet columns may hold nested values as JSON strings; accept both."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


# --- image and file references --------------------------------------------------------------------


Base: TypeAlias = Path | str | None
"""Where a row's relative image and file paths start from: its job file's folder, the URL of a
remote job file's folder (``s3://bucket/jobs/``: a relative ref is a URL there), or None (the
working directory, for Python jobs)."""


def media_ref(value: Any, base: Base, kind: MediaKind, where: str) -> Media:
    """One image or file reference: a path (relative to ``base``), an http(s) URL, an object
    store's URL (``s3://...``, read when the job is sent) or a data: URI, or an object
    ``{"url": REF, "detail": "low"|"high"|"auto"}``."""
    detail = None
    if isinstance(value, Mapping):
        detail = value.get("detail")
        if detail is not None and detail not in ("low", "high", "auto"):
            raise BadRow(f"{where}.detail must be low, high or auto, got {detail!r}")
        value = value.get("url", value.get("path"))
    if isinstance(value, bytes | bytearray):
        return Media("<bytes>", kind, detail, bytes(value))
    if not isinstance(value, str) or not value:
        raise BadRow(f"{where} must be a path, an http(s) URL or a data: URI")
    if value.startswith(("http://", "https://", "data:", *STORES)):
        return Media(value, kind, detail)
    path = Path(value).expanduser()
    if isinstance(base, str) and not path.is_absolute():
        return Media(f"{base.rstrip('/')}/{value}", kind, detail)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Media(os.path.abspath(path), kind, detail)


def media_refs(row: Row, key: str, base: Base, kind: MediaKind) -> tuple[Media, ...]:
    """The refs listed under ``key`` (one ref or a list of them); none if the key is absent."""
    raw = maybe_json(row.get(key))
    if raw is None:
        return ()
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    return tuple(media_ref(v, base, kind, f"{key}[{i}]") for i, v in enumerate(items))
