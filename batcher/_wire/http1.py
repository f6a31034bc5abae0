"""A lean HTTP/1.1 client for the hot path: POST a JSON body, read the answer, keep the socket.

A run spends most of its client CPU in the HTTP client: aiohttp costs about 2.5x what a bare
``asyncio.Protocol`` loop does per request here (``benchmarks/bare_clients.py``, ``http1`` against
``aiohttp``). This client does only what a run's POSTs need: a request head precomputed per path,
written with the body in one ``write``; an incremental answer parser (content-length, chunked,
or until the server closes; gzip/deflate decoded should a server send them unasked); a LIFO pool
of keep-alive connections bounded by ``max_connections`` with FIFO waiters; one re-arming timer
per request for both the read timeout and the request's deadline. Everything else (the batch
APIs' GETs, uploads, downloads) goes over aiohttp through ``Http1Transport.request``.

A hostile or broken server cannot take more than it is given: the head, the body and the body
once inflated are capped (``max_head``, ``max_body``, ``max_inflated``), and a server trickling a
byte per read timeout meets the deadline. Each is a ``ProtocolError`` (retryable), never a crash.
Through a proxy (``proxy.Proxies``), plain HTTP is sent in absolute form (RFC 9112 3.2.2) and
HTTPS through a ``CONNECT`` tunnel (RFC 9110 9.3.6) before TLS to the origin.

Wire rules followed are RFC 9112 (HTTP/1.1 message syntax, https://www.rfc-editor.org/rfc/rfc9112):
framing in section 6.3, chunked coding in 7.1, obs-fold in 5.2, persistence in 9.3.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TypeVar, overload
from urllib.parse import quote, urlsplit

from .._core.errors import TimedOut, UsageError
from .proxy import Proxies
from .transport import AiohttpTransport, Reply, _no_answer, _timed_out

__all__ = ["Headers", "Http1Transport", "ProtocolError", "ResponseParser"]

MAX_HEAD = 64 * 1024  # the largest answer head (status line, headers; or a trailer section)
MAX_BODY = 64 * 2**20  # the largest body, as sent and once inflated: room for images in base64
_MAX_DIGITS = 18  # a content-length longer than this is no size (and int() refuses 4,300 digits)
_MAX_CHUNK_LINE = 4096  # the longest chunk-size line (size and extensions)
_JOINED = 64 * 1024  # a body up to this size goes out joined to its head, in one write
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_DIGITS = re.compile(r"[0-9]+")
_T = TypeVar("_T")
_FORBIDDEN = re.compile(r"[\r\n\0]")

# The parser's states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


class ProtocolError(Exception):
    """An answer that breaks HTTP/1.1's syntax or framing."""


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


def _size(n: int) -> str:
    """A cap in words, for messages: ``64 MiB``, ``64 KiB``, ``100 bytes``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


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
                if not self._chunk_size():
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
        return f"an answer {what} over the {_size(cap)} cap ({name})"

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
                    f"{_size(self._max_body)} cap (max_body)"
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

    def _chunk_size(self) -> bool:
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
            content = _decode(content, encoding.strip().lower(), self._max_inflated)
        self.content = content
        self._state = _DONE
        self._body = []
        if self._pos != len(self._buf):
            self.keep_alive = False  # bytes after the answer: the connection cannot be trusted
        return True


def _decode(content: bytes, encoding: str, cap: int = MAX_BODY) -> bytes:
    """Undo a content coding the server applied though it was not asked to; at most ``cap``
    bytes come out (a kilobyte of zeros deflated inflates a thousandfold: a "zip bomb")."""
    try:
        if encoding in ("gzip", "x-gzip"):
            return _inflate(content, 31, cap)
        if encoding == "deflate":  # zlib-wrapped per RFC 9110 8.4.1.2; some servers send it raw
            try:
                return _inflate(content, 15, cap)
            except zlib.error:
                return _inflate(content, -15, cap)
    except zlib.error as e:
        raise ProtocolError(f"a {encoding} body that does not decode ({e})") from None
    return content  # identity, or a coding left for the caller to see in the headers


def _inflate(content: bytes, wbits: int, cap: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(content, cap + 1)
    if len(out) > cap:
        raise ProtocolError(
            f"an answer body over the {_size(cap)} cap once inflated (max_inflated)"
        )
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return out


class _Stale(Exception):
    """The server closed the connection before sending a byte of the answer."""


class _Silence(Exception):
    """No progress (a byte of the answer, or of the request leaving) for the read timeout."""


class _Deadline(Exception):
    """The answer was not complete by the request's deadline, however steadily it came."""


class _Connection(asyncio.Protocol):
    """One socket and the request on it, if any. ``holds_slot``: it counts toward the pool's
    limit (cleared once, when the slot is given back)."""

    def __init__(self, pool: Http1Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[ResponseParser] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout = 0.0
        self.deadline = 0.0  # loop time by which the answer must be complete
        self.last = 0.0  # loop time of the latest progress: a piece of the answer came
        self.unsent = 0  # bytes of the request still in the write buffer at the last check
        self.closed = False
        self.holds_slot = True
        self.idle_since = 0.0  # time.monotonic() when it last went back to the pool idle
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # nothing asked: a server talking out of turn
            self.abort()
            return
        self.last = self.loop.time()
        try:
            done = parser.feed(data)
        except ProtocolError as e:
            self._fail(e)
            return
        if done:
            self._resolve(parser)

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self.parser
        if parser is not None:
            try:
                complete = parser.eof()
            except ProtocolError as e:
                self._fail(e)
            else:
                if complete:
                    self._resolve(parser)
                elif not parser.received:
                    self._fail(_Stale(exc or "closed before answering"))
                else:
                    self._fail(exc or ConnectionError("closed before the answer was complete"))
        self.pool._lost(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(
        self, data: tuple[bytes, ...], silence: float, deadline: float, parser: ResponseParser
    ) -> ResponseParser:
        """Write one request (its pieces in order), wait for its whole answer: ``silence`` is
        the read timeout, ``deadline`` the most the whole answer may take."""
        assert self.transport is not None
        self.parser = parser
        waiter: asyncio.Future[ResponseParser] = self.loop.create_future()
        self.waiter = waiter
        self.timeout = silence
        self.last = self.loop.time()
        self.deadline = self.last + deadline
        self.timer = self.loop.call_at(min(self.last + silence, self.deadline), self._check)
        for piece in data:
            self.transport.write(piece)
        self.unsent = self.transport.get_write_buffer_size()  # 0 unless the body is large
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # seen: a cancellation raced its failure
            raise
        finally:
            self.timer.cancel()
            self.parser = self.waiter = None
            if not (parser.complete and parser.keep_alive):
                self.abort()

    def _check(self) -> None:
        """The read timeout's and deadline's timer: fail after ``timeout`` of silence or at the
        deadline, else wait for the nearer one. A large body still leaving (less of it buffered
        than at the last check) is progress too."""
        now = self.loop.time()
        if now >= self.deadline - 0.001:  # timers may fire a hair early
            self._fail(_Deadline())
            return
        if self.unsent and self.transport is not None:
            unsent = self.transport.get_write_buffer_size()
            if unsent < self.unsent:
                self.last = max(self.last, now)
            self.unsent = unsent
        deadline = self.last + self.timeout
        if now >= deadline - 0.001:
            self._fail(_Silence())
        else:
            self.timer = self.loop.call_at(min(deadline, self.deadline), self._check)

    def _resolve(self, parser: ResponseParser) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(parser)

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)


class Http1Transport:
    """POSTs over the lean HTTP/1.1 client; ``request`` (rare: the batch APIs) over aiohttp."""

    # An idle connection older than this is closed rather than reused (aiohttp's default too):
    # servers close theirs after 5-75 s, and a request sent as they do must be sent again.
    keepalive_expiry = 15.0

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        timeout: float,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Proxies | None = None,
        deadline: float | None = None,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        max_inflated: int = MAX_BODY,
    ) -> None:
        """``deadline``: the most one request may take from its first byte sent to its answer's
        last, however steadily the answer comes (default twice ``timeout``, see
        ``RequestOptions.request_deadline``); ``max_head``, ``max_body``, ``max_inflated``: the caps
        on an answer's head, body, and body once gzip/deflate is undone."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"the base URL {base_url!r} is not an http:// or https:// URL")
        for name, value in headers.items():
            if _FORBIDDEN.search(name) or _FORBIDDEN.search(value):
                raise UsageError(
                    f"the {name!r} header holds a line break or NUL (a key pasted with one?)"
                )
        self._other = AiohttpTransport(
            base_url,
            headers,
            max_connections=max_connections,
            timeout=timeout,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
            proxies=proxies,
        )
        self._tls = parts.scheme == "https"
        self._host = parts.hostname  # without an IPv6 literal's brackets
        self._port = parts.port or (443 if self._tls else 80)
        self._ssl = ssl_context
        authority = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None and self._port != (443 if self._tls else 80):
            authority += f":{self._port}"
        self._prefix = parts.path.rstrip("/") + "/"
        self._proxy = proxies.for_url(base_url) if proxies else None
        lines = [f"host: {authority}"]
        if self._proxy is not None and not self._tls:
            # Plain HTTP through a proxy: the target in absolute form (RFC 9112 3.2.2), the
            # proxy's credentials on each request (RFC 9110 11.7.2). Through a tunnel they go
            # on the CONNECT only: the origin never sees them.
            self._prefix = f"http://{authority}{self._prefix}"
            if self._proxy.authorization:
                lines.append(f"proxy-authorization: {self._proxy.authorization}")
        names = {name.lower() for name in headers}
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "host"]
        if "content-type" not in names:
            lines.append("content-type: application/json")
        if "user-agent" not in names:
            lines.append(f"user-agent: batcher/{_version()}")
        self._fields = "".join(f"{line}\r\n" for line in lines)
        self._heads: dict[str, bytes] = {}
        self._limit = max_connections
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._deadline = deadline if deadline is not None else 2 * timeout
        self._caps = (max_head, max_body, max_inflated)
        # The pool: idle connections (the last one back is the first out), how many connections
        # hold a slot (open, opening, or handed over), and the callers waiting for one, in order.
        # A waiter's future gets a connection to reuse, or None: a slot to open a new one with.
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._all: set[_Connection] = set()

    def _head(self, path: str) -> bytes:
        target = self._prefix + quote(path, safe="/:@!$&'()*+,;=~-._?%")
        try:
            head = f"POST {target} HTTP/1.1\r\n{self._fields}content-length: ".encode("latin-1")
        except UnicodeEncodeError:
            raise UsageError("a request header holds characters outside Latin-1") from None
        self._heads[path] = head
        return head

    async def post(self, path: str, body: bytes) -> Reply:
        head = self._heads.get(path) or self._head(path)
        if len(body) <= _JOINED:
            data: tuple[bytes, ...] = (b"%b%d\r\n\r\n%b" % (head, len(body), body),)
        else:  # a large body (images) is not copied to join it: 32 in flight add up
            data = (b"%b%d\r\n\r\n" % (head, len(body)), body)
        resent = False
        while True:
            conn = await self._take()
            if conn is not None and conn.closed:
                continue  # handed over as the server closed it: its slot is already passed on
            reused = conn is not None
            if conn is not None and resent:  # a resend goes over a new connection
                conn.holds_slot = False  # its slot passes to the new one
                conn.abort()
                conn = None
            if conn is None:
                try:
                    conn = await self._connect()
                except TimeoutError:
                    raise _timed_out("connect") from None
                except (OSError, ssl.SSLError) as e:
                    raise _no_answer(e) from None
            try:
                parser = await conn.exchange(
                    data, self._timeout, self._deadline, ResponseParser(*self._caps)
                )
            except _Stale as e:
                if reused and not resent:  # the server closed an idle connection as we sent
                    resent = True
                    continue
                raise _no_answer(ConnectionError(f"closed before answering ({e})")) from None
            except _Silence:
                raise _timed_out("read") from None
            except _Deadline:
                raise TimedOut(
                    f"request timed out (the answer was not complete within the "
                    f"{self._deadline:g} s request deadline)"
                ) from None
            except (OSError, ProtocolError, ssl.SSLError, EOFError) as e:
                raise _no_answer(e) from None
            if parser.keep_alive and not conn.closed:
                self._give(conn)
            return Reply(parser.status, parser.headers, parser.content)

    async def _take(self) -> _Connection | None:
        """An idle connection to reuse, or None with a slot to open one (waiting for either)."""
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if now - conn.idle_since < self.keepalive_expiry:
                    return conn
                # The freshest idle connection is too old to trust, so are the rest: close
                # them (their slots come back as they close) and open a new one in its slot.
                conn.holds_slot = False
                conn.abort()
                for old in idle:
                    old.abort()
                idle.clear()
                return None
        if self._open < self._limit:
            self._open += 1
            return None
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed one as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def _give(self, conn: _Connection | None) -> None:
        """Hand a connection (or, for None, a slot) to the first waiter, else keep it idle (or
        free the slot)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._open -= 1
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        """A connection closed: forget it and pass its slot on."""
        self._all.discard(conn)
        if conn.holds_slot:
            conn.holds_slot = False
            if conn in self._idle:
                self._idle.remove(conn)
            self._give(None)

    async def _connect(self) -> _Connection:
        """A new connection, using a slot ``_take`` gave; the slot is given back on failure."""
        loop = asyncio.get_running_loop()
        made: list[_Connection] = []

        def factory() -> _Connection:
            conn = _Connection(self, loop)
            made.append(conn)
            return conn

        context = None
        if self._tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        proxy = self._proxy
        direct = context if proxy is None else None  # through a proxy, TLS after the CONNECT
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    factory,
                    proxy.host if proxy else self._host,
                    proxy.port if proxy else self._port,
                    ssl=direct,
                    server_hostname=self._host if direct else None,
                    ssl_handshake_timeout=self._connect_timeout if direct else None,
                )
                if proxy is not None and context is not None:
                    await self._tunnel(made[0], context)
        except BaseException:
            if made:
                made[0].abort()
            if not made or made[0].holds_slot:
                if made:
                    made[0].holds_slot = False
                self._give(None)
            raise
        conn = made[0]
        if conn.closed:
            raise ConnectionError("closed as soon as opened")
        self._all.add(conn)
        return conn

    async def _tunnel(self, conn: _Connection, context: ssl.SSLContext) -> None:
        """Open a ``CONNECT`` tunnel to the origin through the proxy ``conn`` is connected to,
        then TLS to the origin over it (RFC 9110 9.3.6). A refusal is a ``ConnectionError``
        naming the proxy by its URL without credentials, and the status it answered."""
        assert self._proxy is not None and conn.transport is not None
        where = f"[{self._host}]" if ":" in self._host else self._host
        where += f":{self._port}"
        head = f"CONNECT {where} HTTP/1.1\r\nhost: {where}\r\n"
        if self._proxy.authorization:
            head += f"proxy-authorization: {self._proxy.authorization}\r\n"
        wait = self._connect_timeout
        try:
            parser = await conn.exchange(
                (f"{head}\r\n".encode("latin-1"),), wait, wait, ResponseParser(tunnel=True)
            )
        except (_Stale, _Silence, _Deadline, ProtocolError) as e:
            raise ConnectionError(f"the proxy {self._proxy.url} gave no tunnel ({e!r})") from None
        if not 200 <= parser.status < 300:
            raise ConnectionError(
                f"the proxy {self._proxy.url} refused a tunnel to {where}: {parser.status}"
            )
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(
            conn.transport,
            conn,
            context,
            server_hostname=self._host,
            ssl_handshake_timeout=self._connect_timeout,
        )
        if tls is None:
            raise ConnectionError("closed as TLS began")
        conn.transport = tls

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return await self._other.request(method, path, body, content_type, headers)

    async def aclose(self) -> None:
        conns = list(self._all)
        for conn in conns:
            conn.abort()
        self._idle.clear()
        for conn in conns:
            await conn.lost  # the sockets are closed once connection_lost has run
        await self._other.aclose()


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batcher")
    except PackageNotFoundError:
        return "0"
