"""Images and files in jobs: where their bytes are, what type they are, what they cost in tokens.

A job holds a ``Media`` reference (a path, a URL, a ``data:`` URI, or bytes from a Parquet column),
never the bytes of a file: a million image jobs stream through in flat memory, and each file is
read when its job is sent. The type is sniffed from the content's first bytes and image dimensions
are read from its header (``_core.sniff``), for the checks and the token estimate.

The checks here run in the scan, before anything is sent: a ref that is missing, unreadable, of a
type the provider does not take, or over the provider's inline request limit is an input problem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    import urllib.request

from .sniff import dimensions, sniff
from .stores import STORES, read_stored

__all__ = [
    "INLINE_LIMIT",
    "Inline",
    "Loaded",
    "Media",
    "MediaKind",
    "Probe",
    "decode_data_uri",
    "fetch",
    "gemini_image_tokens",
    "inline_digest",
    "inline_now",
    "job_media_tokens",
    "load",
    "media_problem",
    "media_tokens",
    "openai_image_tokens",
    "probe",
    "sha256_of",
    "uploadable",
]

MediaKind: TypeAlias = Literal["image", "file"]

_HEAD = 64 * 1024
"""Bytes read to sniff a type and find an image's dimensions (a JPEG's SOF may follow EXIF)."""

INLINE_LIMIT = {"gemini": 20 * 1024 * 1024, "openai": 50 * 1024 * 1024}
"""Largest request body a provider takes with its media inline, in bytes (base64 counted).

Gemini: "the total request size must be under 20 MB" for inline data
(https://ai.google.dev/gemini-api/docs/image-understanding); larger files go through the Files
API (``--upload``, ``uploadable``), else such a job is refused in the scan. OpenAI: "up to 50 MB
total payload size per request" (https://platform.openai.com/docs/guides/images-vision)."""

_IMAGE_TYPES = {
    # https://platform.openai.com/docs/guides/images-vision: PNG, JPEG, WEBP, non-animated GIF.
    "openai": frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"}),
    # https://ai.google.dev/gemini-api/docs/image-understanding: PNG, JPEG, WEBP, HEIC, HEIF.
    "gemini": frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}),
}
_FILE_TYPES = {
    # input_audio takes wav and mp3; the file part takes PDFs
    # (https://platform.openai.com/docs/guides/audio, .../guides/pdf-files).
    "openai": frozenset({"application/pdf", "audio/wav", "audio/mpeg"}),
    # https://ai.google.dev/gemini-api/docs/audio, .../document-processing and
    # .../video-understanding (video through the Files API, PROCESSING until it can be used).
    "gemini": frozenset(
        {
            "application/pdf",
            "audio/wav",
            "audio/mpeg",
            "audio/flac",
            "audio/ogg",
            "audio/aac",
            "video/mp4",
            "video/webm",
        }
    ),
}


@dataclass(frozen=True, slots=True)
class Media:
    """An image or a file a job sends: a reference to its bytes, never the bytes of a file.

    ``ref`` is an absolute path, an ``http(s)://`` URL, an object store's URL (``s3://...``,
    ``in_store``: read when its job is sent, never probed before) or a ``data:`` URI; ``data``
    holds bytes that came inline from a Parquet column (``ref`` is then a label such as
    ``<bytes>``).
    ``detail`` is OpenAI's image detail (``low``, ``high``, ``auto``). ``uploaded`` is set when
    the bytes went through the provider's Files API: (its file id, or URI on Gemini; the MIME
    type), which the part names instead of carrying the bytes."""

    ref: str
    kind: MediaKind = "image"
    detail: str | None = None
    data: bytes | None = None
    uploaded: tuple[str, str] | None = None

    @property
    def is_url(self) -> bool:
        return self.data is None and self.ref.startswith(("http://", "https://"))

    @property
    def in_store(self) -> bool:
        """In object storage (``s3://``, ``gs://``, ``az://``, ``hf://``): batcher reads it (the
        provider could not), only when its job is sent."""
        return self.data is None and self.ref.startswith(STORES)

    @property
    def is_data_uri(self) -> bool:
        return self.data is None and self.ref.startswith("data:")

    @property
    def label(self) -> str:
        """How a message names this ref: the path or URL, or the start of a data URI."""
        if self.is_data_uri:
            return self.ref[:40] + "..."
        return self.ref


def decode_data_uri(uri: str) -> tuple[str | None, bytes]:
    """(declared MIME type, bytes) of a base64 ``data:`` URI; ``ValueError`` if it is not one."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError("not a base64 data: URI (data:<type>;base64,<data>)")
    mime = head[5:-7] or None
    try:
        return mime, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("its base64 data is not valid") from None


# --- token rules ----------------------------------------------------------------------------------


def openai_image_tokens(width: int, height: int, detail: str | None = None) -> int:
    """OpenAI's cost of an image (GPT-4o class): 85 at low detail; else scaled to fit 2048 x 2048,
    its short side to 768, then 85 + 170 per 512-px tile.
    https://platform.openai.com/docs/guides/images-vision#calculating-costs"""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def gemini_image_tokens(width: int, height: int) -> int:
    """Gemini's cost of an image: 258 if both sides are at most 384 px, else 258 per 768 x 768
    tile. https://ai.google.dev/gemini-api/docs/tokens#multimodal-tokens"""
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


_FILE_TOKENS = 258
"""A file's tokens before the usage reported teaches the estimate better (a PDF page, in Gemini's
rule; audio counts 32 a second, which the header does not tell)."""


def media_tokens(provider: str, mime: str, size: tuple[int, int] | None, detail: str | None) -> int:
    """The tokens one image or file is charged by ``provider``'s rule (an estimate for files)."""
    if not mime.startswith("image/"):
        return _FILE_TOKENS
    if size is None:
        return 85 if provider == "openai" else 258
    if provider == "gemini":
        return gemini_image_tokens(*size)
    return openai_image_tokens(*size, detail)


# --- reading and checking -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """What the scan learns of a ref without reading it all: type, size in bytes, dimensions."""

    mime: str | None
    size: int
    dims: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A ref's bytes, read when its job is sent, with what the wire and the estimate need."""

    mime: str
    data: bytes
    dims: tuple[int, int] | None

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _inline(media: Media) -> bytes | None:
    """The bytes a ref carries itself (Parquet bytes, a data URI); None for paths and URLs."""
    if media.data is not None:
        return media.data
    if media.is_data_uri:
        return decode_data_uri(media.ref)[1]
    return None


def probe(media: Media, *, dims: bool = True) -> Probe:
    """Type, size and (with ``dims``) dimensions of a local or inline ref; ``OSError`` or
    ``ValueError`` if it cannot be read. URLs (a store's too) are not fetched: their probe knows
    nothing. Without
    ``dims`` a file's first 64 bytes are read, which is all the scan needs."""
    if media.is_url or media.in_store:
        return Probe(None, 0, None)
    data = _inline(media)
    if data is not None:
        return Probe(sniff(data[:64]), len(data), dimensions(data[:_HEAD]) if dims else None)
    with open(media.ref, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HEAD if dims else 64)
    return Probe(sniff(head[:64]), size, dimensions(head) if dims else None)


def load(media: Media) -> Loaded:
    """Read a local or inline ref whole, when its job is sent; ``OSError``/``ValueError`` if it
    cannot be read or is of an unknown type."""
    data = _inline(media)
    if data is None:
        data = read_stored(media.ref) if media.in_store else Path(media.ref).read_bytes()
    mime = sniff(data[:64])
    if mime is None:
        raise ValueError(f"{media.label}: not an image or file type batcher knows")
    return Loaded(mime, data, dimensions(data[:_HEAD]))


def sha256_of(media: Media) -> str:
    """The SHA-256 of a ref's bytes, streamed from a file (never all held); of the URL for a URL,
    whose bytes batcher does not fetch to compare (a store's URL too)."""
    if media.is_url or media.in_store:
        return hashlib.sha256(media.ref.encode()).hexdigest()
    data = _inline(media)
    if data is not None:
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(media.ref, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def media_problem(media: Media, provider: str) -> tuple[str | None, int]:
    """(why ``media`` cannot be sent to ``provider`` or None, its size in bytes): a URL's (a
    store's too) is known only once it is read, when its job is sent."""
    if media.is_url or media.in_store:
        return None, 0
    try:
        p = probe(media, dims=False)
    except FileNotFoundError:
        return f"{media.kind} {media.label}: no such file", 0
    except OSError as e:
        return f"{media.kind} {media.label}: cannot read it ({e.strerror or e})", 0
    except ValueError as e:
        return f"{media.kind} {media.label}: {e}", 0
    if p.mime is None:
        known = "PNG, JPEG, GIF, WebP, HEIC, PDF, WAV, MP3, ..."
        return f"{media.kind} {media.label}: not a type batcher knows ({known})", 0
    taken = _IMAGE_TYPES[provider] | _FILE_TYPES[provider]
    if p.mime not in taken:
        return f"{media.kind} {media.label}: {p.mime} is not a type {provider} takes", 0
    return None, p.size


def uploadable(media: Media, mime: str | None, provider: str, api: str = "chat") -> bool:
    """Whether ``media`` can go through ``provider``'s Files API rather than inline: a local
    file (a path), and on OpenAI a file part (a PDF: chat's ``file`` and the Responses API's
    ``input_file`` take a ``file_id``, ``image_url`` and ``input_audio`` do not), and through
    the Responses API (``api``) an image too (``input_image`` takes a ``file_id``:
    https://platform.openai.com/docs/api-reference/responses/create); on Gemini any
    (https://ai.google.dev/gemini-api/docs/files)."""
    if media.data is not None or media.is_url or media.in_store or media.is_data_uri:
        return False
    if provider == "gemini":
        return True
    if api == "responses" and mime is not None and mime.startswith("image/"):
        return True
    return mime is not None and not mime.startswith(("image/", "audio/"))


_URL_LIMIT = 20 * 1024 * 1024
_URL_TIMEOUT = 30.0


def fetch(url: str, opener: urllib.request.OpenerDirector | None = None) -> bytes:
    """An image URL's bytes (an image answered as a URL; a job's, for a wire that takes only
    inline data, Gemini's native one): at most 20 MB in at most 30 s; ``OSError`` if it cannot
    be had. ``opener`` is how the run reaches the network (its proxy and CAs:
    ``_wire.proxy.url_opener``); without one, urllib's defaults. Only http(s) URLs: an answer
    naming ``file:///`` gets nothing of this machine's."""
    import time
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise OSError(f"cannot fetch {url[:100]}: not an http:// or https:// URL")
    start = time.monotonic()
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=_URL_TIMEOUT) as r:
            pieces: list[bytes] = []
            got = 0
            while got <= _URL_LIMIT and (piece := r.read1(1 << 16)):
                pieces.append(piece)
                got += len(piece)
                if time.monotonic() - start > _URL_TIMEOUT:  # a byte now and then, for ever
                    raise TimeoutError(f"not whole within {_URL_TIMEOUT:g} s")
    except (urllib.error.URLError, TimeoutError, ValueError) as e:
        raise OSError(f"cannot fetch {url}: {e}") from None
    if got > _URL_LIMIT:
        raise OSError(f"{url} is larger than {_URL_LIMIT // 2**20} MB")
    return b"".join(pieces)


Inline: TypeAlias = Callable[[Media], tuple[str, str]]
"""How a wire format gets a ref's (MIME type, base64 data): read now to send, or a digest to
fingerprint what would be sent."""


def inline_now(
    media: Media, opener: urllib.request.OpenerDirector | None = None
) -> tuple[str, str]:
    """(MIME type, base64) of a ref, read now (a URL fetched through ``opener``): what is sent."""
    if media.is_url:
        data = fetch(media.ref, opener)
        mime = sniff(data[:64])
        if mime is None:
            raise ValueError(f"{media.ref}: not an image or file type batcher knows")
        return mime, base64.b64encode(data).decode("ascii")
    loaded = load(media)
    return loaded.mime, loaded.b64()


def inline_digest(media: Media) -> tuple[str, str]:
    """A stand-in for the data: its SHA-256, streamed, so a fingerprint covers the bytes without
    holding them (a changed image is a changed job)."""
    mime = "" if media.is_url or media.in_store else (probe(media, dims=False).mime or "")
    return mime, "sha256:" + sha256_of(media)


def job_media_tokens(media: tuple[Media, ...], provider: str) -> int:
    """The tokens ``provider`` charges for these images and files, by its rule (read from their
    headers; a URL counts as one small image)."""
    total = 0
    for m in media:
        try:
            p = probe(m)
        except (OSError, ValueError):
            p = Probe(None, 0, None)
        total += media_tokens(provider, p.mime or "image/", p.dims, m.detail)
    return total
