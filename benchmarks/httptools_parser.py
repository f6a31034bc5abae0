"""The lean client's answer parser with ``httptools`` (llhttp, the parser of aiohttp and
uvicorn) doing the HTTP/1.1 framing in place of ours: the same interface and caps as
``batcher._wire.http1_parser.ResponseParser`` (head, body, inflated size; ``ProtocolError`` for
anything malformed), for ``transports.py`` to measure and to run through the hostile cases.

llhttp frames; what it does not do is done here as in ours: the caps, 1xx answers skipped, a
body read until close (llhttp has no ``finish`` in httptools: the close ends it), the content
coding undone with ``decode_body`` (gzip/deflate only, capped).
"""

from __future__ import annotations

import httptools

from batcher._wire.answer_caps import MAX_BODY, MAX_HEAD, ProtocolError, size_text
from batcher._wire.codings import decode_body
from batcher._wire.http1_parser import Headers

__all__ = ["LlhttpParser"]


class LlhttpParser:
    """One answer, parsed by llhttp as its pieces arrive; see ``ResponseParser``."""

    __slots__ = (
        "_body",
        "_fields_size",
        "_got",
        "_head",
        "_items",
        "_max_body",
        "_max_head",
        "_max_inflated",
        "_name",
        "_parser",
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
        self._parser = httptools.HttpResponseParser(self)
        self._head = 0  # bytes of the head so far
        self._fields_size = 0  # of its lines, as llhttp hands them on
        self._items: dict[str, str] = {}
        self._name = ""
        self._body: list[bytes] = []
        self._got = 0
        self._state = 0  # 0 head, 1 body, 2 done
        self.status = 0
        self.headers = Headers({})
        self.keep_alive = False
        self.content = b""
        self.received = 0

    # llhttp's callbacks
    def on_status(self, status: bytes) -> None:
        self._fields(len(status) + 16)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        old = self._items.get(key)
        self._items[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._items = {}
            self._fields_size = 0
            return  # an interim answer: llhttp reads the final one next
        self.status = status
        self.headers = Headers(self._items)
        if self._tunnel:
            self.keep_alive = 200 <= status < 300
            self._state = 2
            return
        self._state = 1
        length = self._items.get("content-length")
        if length is not None and "transfer-encoding" not in self._items:
            digits = length.strip().lstrip("0")
            if len(digits) > 18 or (digits.isdigit() and int(digits) > self._max_body):
                raise ProtocolError(self._over("body", self._max_body, "max_body"))

    def on_body(self, body: bytes) -> None:
        self._got += len(body)
        if self._got > self._max_body:
            raise ProtocolError(self._over("body", self._max_body, "max_body"))
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._state != 1:
            return  # an interim answer's end
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    def _fields(self, size: int) -> None:
        """Count a head's line (llhttp hands them on whole: a head that came in one piece is
        held to the cap here, one still coming in ``feed``)."""
        self._fields_size += size
        if self._fields_size > self._max_head:
            raise ProtocolError(self._over("head", self._max_head, "max_head"))

    @staticmethod
    def _over(what: str, cap: int, name: str) -> str:
        return f"an answer {what} over the {size_text(cap)} cap ({name})"

    def _finish(self) -> None:
        content = b"".join(self._body)
        encoding = self.headers.get("content-encoding")
        if encoding is not None and content:
            content = decode_body(content, encoding.strip().lower(), self._max_inflated)
        self.content = content
        self._body = []
        self._state = 2

    @property
    def complete(self) -> bool:
        return self._state == 2

    def feed(self, data: bytes) -> bool:
        if self._state == 2:
            if data:
                self.keep_alive = False
            return True
        self.received += len(data)
        if self._state == 0:
            self._head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__ or e.__cause__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(f"a malformed answer ({e})") from None
        except httptools.HttpParserUpgrade:
            if self._state == 2:  # a tunnel's 2xx: what follows is the tunnel's
                return True
            raise ProtocolError("101 Switching Protocols, never asked for") from None
        except httptools.HttpParserError as e:
            if self._state == 2 and self._tunnel:
                return True
            raise ProtocolError(f"a malformed answer ({e})") from None
        if self._state == 0 and self._head > self._max_head:
            raise ProtocolError(self._over("head", self._max_head, "max_head"))
        if self._state == 2 and self._tunnel:
            return True
        return self._state == 2

    def eof(self) -> bool:
        if self._state == 1 and not (
            "content-length" in self._items or "transfer-encoding" in self._items
        ):
            self.keep_alive = False
            self._finish()  # read until close: the close ends it
        if self._state == 2:
            self.keep_alive = False
            return True
        return False
