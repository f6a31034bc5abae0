"""Bodies too large to hold: a batch input file sent from disk, a results file saved to disk.

A batch API's input file (OpenAI's up to 200 MB, Gemini's up to 2 GB) is written to disk as it is
cut and sent from there a piece at a time (``FileBody``), between the head and tail of its
multipart envelope, with its length known beforehand (no chunked encoding, which upload endpoints
may refuse). A results file is written to disk as it arrives (``Transport.download``) and parsed
a line at a time, so a million answers never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PIECE", "FileBody"]

PIECE = 1024 * 1024
"""Bytes read from or written to a file at a time."""


@dataclass(frozen=True, slots=True)
class FileBody:
    """A request body of ``head``, the file at ``path``, then ``tail``, read as it is sent."""

    path: Path
    head: bytes = b""
    tail: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + self.path.stat().st_size + len(self.tail)

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body a piece at a time (a read of a piece from the page cache takes well under a
        millisecond: the loop is not held up for it)."""
        if self.head:
            yield self.head
        with self.path.open("rb") as f:
            while piece := f.read(PIECE):
                yield piece
        if self.tail:
            yield self.tail
