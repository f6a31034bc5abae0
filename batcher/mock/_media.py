"""Images and files in the mock: checking what a request sends, and making the images it answers.

A request's image or file is checked as a provider checks it (valid base64, a type the bytes bear
out) and described in the text the mock echoes (``[image/png 4x3 sha256:1a2b3c4d5e6f]``), so an
answer depends on the bytes sent. Its tokens are counted by the provider's rule. The images the
mock answers are small PNGs, written with zlib and struct and made from a hash of the prompt: the
same prompt always gets the same picture.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from dataclasses import dataclass

from .._core.media import decode_data_uri, media_tokens
from .._core.sniff import dimensions, sniff

__all__ = [
    "BadMedia",
    "Described",
    "describe_b64",
    "describe_bytes",
    "describe_data_uri",
    "describe_url",
    "make_png",
    "size",
]


@dataclass(frozen=True, slots=True)
class Described:
    """What the mock read from one image or file: the text it stands for, and its tokens."""

    text: str
    tokens: int


class BadMedia(ValueError):
    """An image or file the provider would refuse: the message says why."""


def describe_bytes(
    data: bytes, provider: str, declared: str | None, detail: str | None
) -> Described:
    """Describe ``data``; ``BadMedia`` if its type is unknown or not the ``declared`` one."""
    mime = sniff(data[:64])
    if mime is None:
        raise BadMedia("Unable to process input image: unknown or unsupported type.")
    if (
        declared is not None
        and declared != mime
        and not (declared == "image/jpg" and "jpeg" in mime)
    ):
        raise BadMedia(f"The data declared as {declared} is {mime}.")
    dims = dimensions(data[:65536])
    where = f" {dims[0]}x{dims[1]}" if dims else ""
    digest = hashlib.sha256(data).hexdigest()[:12]
    return Described(f"[{mime}{where} sha256:{digest}]", media_tokens(provider, mime, dims, detail))


def describe_b64(b64: str, provider: str, declared: str | None, detail: str | None) -> Described:
    """Describe base64 data; ``BadMedia`` if it is not base64."""
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadMedia("Invalid base64 data in the request.") from None
    return describe_bytes(data, provider, declared, detail)


def describe_data_uri(uri: str, provider: str, detail: str | None) -> Described:
    """Describe a ``data:`` URI; ``BadMedia`` if it is not a valid base64 one."""
    try:
        declared, data = decode_data_uri(uri)
    except ValueError as e:
        raise BadMedia(f"Invalid image URL: {e}.") from None
    return describe_bytes(data, provider, declared, detail)


def describe_url(url: str, provider: str) -> Described:
    """A URL the mock does not fetch: named, and counted as one small image."""
    return Described(f"[url {url}]", media_tokens(provider, "image/", None, None))


def size(text: str | None, default: tuple[int, int] = (64, 64)) -> tuple[int, int]:
    """``WxH`` as (width, height), each at most 256 (the mock keeps its pictures small)."""
    try:
        w, h = (int(v) for v in (text or "").lower().split("x"))
    except ValueError:
        return default
    return max(1, min(w, 256)), max(1, min(h, 256))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(seed: str, width: int = 64, height: int = 64) -> bytes:
    """A valid RGB PNG of horizontal stripes whose colours come from a hash of ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    colours = [digest[i : i + 3] for i in range(0, 24, 3)]
    rows = b"".join(b"\x00" + colours[(y * 8) // height] * width for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )
