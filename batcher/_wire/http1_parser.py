"""The HTTP/1.1 answer parser of the lean client (``http1``): incremental, capped, decoding.

A hostile or broken server cannot take more than it is given: the head, the body and the body
once inflated are capped (``max_head``, ``max_body``, ``max_inflated``); each breach, like any
malformed answer, is a ``ProtocolError`` (retryable), never a crash. A body is gzip/deflate
decoded should a server send it so unasked.

Wire rules followed are RFC 9112 (HTTP/1.1 message syntax, https://www.rfc-editor.org/rfc/rfc9112):
framing in section 6.3, chunked coding in 7.1, obs-fold in 5.2, persistence in 9.3.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TypeVar, overload

from .answer_caps import MAX_BODY, MAX_HEAD, ProtocolError, size_text
from .codings import decode_body

__all__ = ["Headers", "ResponseParser"]

_MAX_DIGITS = 18  # a content-length longer than this is no size (and int() refuses 4,300 digits)
_MAX_CHUNK_LINE = 4096  # the longest chunk-size line (size and extensions)
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_DIGITS = re.compile(r"[0-9]+")
_T = TypeVar("_T")

# The parser's states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


class Headers(Mapping[str, str]):
    """An answer's headers, read-only and case-insensitive: keys lower-cased, a repeated header's
    values joined with ``", "``."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items  # lower-cased names -> values

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    @overload
    def get(self, key: str, /) -> str | None: ...
    @overload
    def get(self, key: str, /, default: str | _T) -> str | _T: ...
    def get(self, key: str, /, default: object = None) -> object:
        return self._items.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class ResponseParser:
    """One answer, parsed as its pieces arrive. ``feed`` each piece (True once complete), ``eof``
    when the server closes; ``ProtocolError`` for anything malformed or over a cap. ``tunnel``:
    the answer to a ``CONNECT``, a head only (RFC 9110 9.3.6: a 2xx has no content).

    The received bytes are kept in ``_buf``; ``_pos`` is where the unparsed ones begin, so each
    piece is parsed once (the head's end is searched from ``_scan``, not from the start)."""

    __slots__ = (
        "_body",
        "_buf",
        "_got",
        "_max_body",
        "_max_head",
        "_max_inflated",
        "_need",
        "_pos",
        "_scan",
        "_state",
        "_tunnel",
        "content",
        "headers",
        "keep_alive",
        "received",
        "status",
    )

    def __init__(
        self,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        max_inflated: int = MAX_BODY,
        *,
        tunnel: bool = False,
    ) -> None:
        self._max_head = max_head
        self._max_body = max_body
        self._max_inflated = max_inflated
        self._tunnel = tunnel
        self._got = 0  # the body's bytes announced so far (chunked coding)
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._state = _HEAD
        self._need = 0  # bytes still to come: of the body (content-length) or of the chunk
        self._body: list[bytes] = []  # the chunks so far (chunked coding)
        self.status = 0
        self.headers: Headers = Headers({})
        self.keep_alive = False  # whether the connection may carry another request afterwards
        self.content = b""
        self.received = 0  # bytes received so far (0: the server has sent nothing)

    def feed(self, data: bytes) -> bool:
        """Take the next piece of the answer; True once the answer is complete."""
        if self._state == _DONE:
            if data:
                self.keep_alive = False  # bytes after a complete answer: the connection is off
            return True
        self.received += len(data)
        buf = self._buf
        if self._pos > 65536 and self._pos * 2 > len(buf):
            del buf[: self._pos]  # drop what is parsed, once it is most of the buffer
            self._scan -= self._pos
            self._pos = 0
        buf += data
        while True:
            state = self._state
            if state == _LENGTH:
                if len(buf) - self._pos < self._need:
                    return False
                start = self._pos
                self._pos = start + self._need
                return self._finish(bytes(buf[start : self._pos]))
            if state == _HEAD:
                if not self._head():
                    return False
            elif state == _CHUNK_SIZE:
                if not self._chunksize_text():
                    return False
            elif state == _CHUNK_DATA:
                end = self._pos + self._need
                if len(buf) < end + 2:
                    return False
                if buf[end : end + 2] != b"\r\n":
                    raise ProtocolError("a chunk not followed by CRLF")
                self._body.append(bytes(buf[self._pos : end]))
                self._pos = end + 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                if not self._trailer():
                    return False
            elif state == _UNTIL_CLOSE:
                if len(buf) - self._pos > self._max_body:
                    raise ProtocolError(self._over("body", self._max_body, "max_body"))
                return False  # the answer ends when the server closes
            else:
                return True

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    def eof(self) -> bool:
        """The server closed the connection: True if that completes the answer."""
        if self._state == _UNTIL_CLOSE:
            self._finish(bytes(self._buf[self._pos :]))
        if self._state == _DONE:
            self.keep_alive = False
            return True
        return False

    @staticmethod
    def _over(what: str, cap: int, name: str) -> str:
        return f"an answer {what} over the {size_text(cap)} cap ({name})"

    def _head(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if len(buf) - self._pos > self._max_head:
                raise ProtocolError(self._over("head", self._max_head, "max_head"))
            self._scan = max(self._pos, len(buf) - 3)
            return False
        if end - self._pos > self._max_head:
            raise ProtocolError(self._over("head", self._max_head, "max_head"))
        lines = buf[self._pos : end].decode("latin-1").split("\r\n")
        self._pos = self._scan = end + 4
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or len(code) != 3
            or not code.isdigit()
            or rest[3:4] not in ("", " ")
        ):
            raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(code)
        items: dict[str, str] = {}
        name = ""
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):  # obs-fold: a continuation, read as one space
                if not name:
                    raise ProtocolError("a header continuation without a header")
                items[name] = (items[name] + " " + line.strip(" \t")).strip(" ")
                continue
            field, sep, value = line.partition(":")
            if not sep or not field or " " in field or "\t" in field:
                raise ProtocolError(f"a malformed header line: {line[:80]!r}")
            name = field.lower()
            value = value.strip(" \t")
            old = items.get(name)
            items[name] = value if old is None else f"{old}, {value}"
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("101 Switching Protocols, never asked for")
            return True  # an interim answer: the final one follows
        self.status = status
        self.headers = Headers(items)
        if self._tunnel:  # a 2xx is the tunnel, whatever its framing headers say; else refused
            self.keep_alive = 200 <= status < 300
            self._state = _DONE
            return True
        connection = items.get("connection")
        tokens = {t.strip().lower() for t in connection.split(",")} if connection else set()
        self.keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        coding = items.get("transfer-encoding")
        length = items.get("content-length")
        if status in (204, 304):
            self._finish(b"")
        elif coding is not None:
            if coding.strip().lower() != "chunked":
                raise ProtocolError(f"transfer-encoding {coding!r} (only chunked is understood)")
            if length is not None:  # RFC 9112 6.3 (3): chunked wins; the connection must close
                self.keep_alive = False
            self._state = _CHUNK_SIZE
        elif length is not None:
            values = {v.strip(" \t") for v in length.split(",")}
            only = values.pop()
            if values or not _DIGITS.fullmatch(only):
                raise ProtocolError(f"a bad content-length {length[:40]!r}")
            if len(only.lstrip("0")) > _MAX_DIGITS:
                raise ProtocolError(
                    f"a content-length of {len(only):,} digits, over the "
                    f"{size_text(self._max_body)} cap (max_body)"
                )
            self._need = int(only.lstrip("0") or "0")  # zeros are no size, nor digits to parse
            if self._need > self._max_body:
                raise ProtocolError(self._over("body", self._max_body, "max_body"))
            if self._need == 0:
                self._finish(b"")
            else:
                self._state = _LENGTH
        else:
            self.keep_alive = False  # the answer ends when the server closes
            self._state = _UNTIL_CLOSE
        return True

    def _chunksize_text(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n", self._pos)
        if end < 0:
            if len(buf) - self._pos > _MAX_CHUNK_LINE:
                raise ProtocolError("a chunk-size line too long")
            return False
        size = bytes(buf[self._pos : end]).partition(b";")[0].strip(b" \t")
        if not _HEX.fullmatch(size):
            raise ProtocolError(f"a bad chunk size {size[:40]!r}")
        self._pos = end + 2
        self._need = int(size, 16)  # base 16: no digit limit, and the cap below bounds it
        self._got += self._need
        if self._got > self._max_body:
            raise ProtocolError(self._over("body", self._max_body, "max_body"))
        self._state = _CHUNK_DATA if self._need else _TRAILER
        return True

    def _trailer(self) -> bool:
        buf = self._buf
        if len(buf) - self._pos < 2:
            return False
        if buf[self._pos : self._pos + 2] == b"\r\n":  # no trailer fields
            end = self._pos + 2
        else:
            found = buf.find(b"\r\n\r\n", self._pos)
            if found < 0:
                if len(buf) - self._pos > self._max_head:
                    raise ProtocolError(self._over("trailer section", self._max_head, "max_head"))
                return False
            end = found + 4  # the trailer fields are read past, not kept
        self._pos = end
        self._finish(b"".join(self._body))
        return True

    def _finish(self, content: bytes) -> bool:
        encoding = self.headers.get("content-encoding")
        if encoding is not None and content:
            content = decode_body(content, encoding.strip().lower(), self._max_inflated)
        self.content = content
        self._state = _DONE
        self._body = []
        if self._pos != len(self._buf):
            self.keep_alive = False  # bytes after the answer: the connection cannot be trusted
        return True
