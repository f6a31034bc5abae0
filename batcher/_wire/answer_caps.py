"""An answer's caps and its one error: the lean client's largest head and body (``MAX_HEAD``,
``MAX_BODY``), the ``ProtocolError`` for an answer over one or breaking HTTP/1.1's syntax, and a cap
in words for its message (``size_text``). Shared by the answer parser (``http1_parser``), the
content codings (``codings``) and the aiohttp transport, which keeps the same caps.
"""

from __future__ import annotations

__all__ = ["MAX_BODY", "MAX_HEAD", "ProtocolError", "size_text"]

MAX_HEAD = 64 * 1024  # the largest answer head (status line, headers; or a trailer section)
MAX_BODY = 64 * 2**20  # the largest body, as sent and once inflated: room for images in base64


class ProtocolError(Exception):
    """An answer that breaks HTTP/1.1's syntax or framing."""


def size_text(n: int) -> str:
    """A cap in words, for messages: ``64 MiB``, ``64 KiB``, ``100 bytes``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"
