"""A lean HTTP/1.1 client for the hot path: POST a JSON body, read the answer, keep the socket.

A run spends most of its client CPU in the HTTP client: aiohttp costs about 2.5x what a bare
``asyncio.Protocol`` loop does per request here (``benchmarks/bare_clients.py``, ``http1`` against
``aiohttp``). This client does only what a run's POSTs need: a request head precomputed per path,
written with the body in one ``write``; an incremental answer parser (``http1_parser``:
content-length, chunked, or until the server closes; gzip/deflate decoded should a server send
them unasked); a LIFO pool of keep-alive connections bounded by ``max_connections`` with FIFO
waiters, and one re-arming timer per request for both the read timeout and the request's deadline
(``http1_pool``). Everything else (the batch APIs' GETs, uploads, downloads) goes over aiohttp
through ``Http1Transport.request``.

A hostile or broken server cannot take more than it is given: the head, the body and the body
once inflated are capped (``max_head``, ``max_body``, ``max_inflated``), and a server trickling a
byte per read timeout meets the deadline. Each is a ``ProtocolError`` (retryable), never a crash.
Through a proxy (``proxy.Proxies``), plain HTTP is sent in absolute form (RFC 9112 3.2.2) and
HTTPS through a ``CONNECT`` tunnel (RFC 9110 9.3.6) before TLS to the origin.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

from .._core.errors import TimedOut, UsageError
from .answer_caps import MAX_BODY, MAX_HEAD, ProtocolError
from .bodies import FileBody
from .http1_parser import ResponseParser
from .http1_pool import Connection, ConnectionPool, _Deadline, _Silence, _Stale
from .proxy import Proxies, proxy_refused, untrusted_certificate
from .transport import AiohttpTransport, Reply, _no_answer, _timed_out

__all__ = ["Http1Transport"]

HAPPY_EYEBALLS = 0.25
"""Seconds before the next address of a host is tried while a connect is pending (RFC 8305's
recommended Connection Attempt Delay; aiohttp's default too)."""
_JOINED = 64 * 1024  # a body up to this size goes out joined to its head, in one write
_FORBIDDEN = re.compile(r"[\r\n\0]")


class Http1Transport:
    """POSTs over the lean HTTP/1.1 client; ``request`` (rare: the batch APIs) over aiohttp."""

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
            deadline=deadline,
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
        if "accept-encoding" not in names:  # the codings the parser undoes, and no others
            lines.append("accept-encoding: gzip, deflate")
        self._fields = "".join(f"{line}\r\n" for line in lines)
        self._heads: dict[str, bytes] = {}
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._deadline = deadline if deadline is not None else 2 * timeout
        self._caps = (max_head, max_body, max_inflated)
        self.pool = ConnectionPool(max_connections)  # the keep-alive connections

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
            conn = await self.pool.take()
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
                except ssl.SSLCertVerificationError as e:  # the origin's (through a tunnel too)
                    raise untrusted_certificate(self._host, self._port, e) from None
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
                self.pool.give(conn)
            return Reply(parser.status, parser.headers, parser.content, resent)

    async def _connect(self) -> Connection:
        """A new connection, using a slot ``pool.take`` gave; the slot is given back on failure."""
        loop = asyncio.get_running_loop()
        made: list[Connection] = []

        def factory() -> Connection:
            conn = Connection(self.pool, loop)
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
                    # a host with several addresses (IPv6 and IPv4) is tried on each in turn,
                    # the next 250 ms after the last began (RFC 8305), not after a timeout
                    happy_eyeballs_delay=HAPPY_EYEBALLS,
                    interleave=1,
                )
                if proxy is not None and context is not None:
                    await self._tunnel(made[0], context)
        except BaseException:
            if made:
                made[0].abort()
            if not made or made[0].holds_slot:
                if made:
                    made[0].holds_slot = False
                self.pool.give(None)
            raise
        conn = made[0]
        if conn.closed:
            raise ConnectionError("closed as soon as opened")
        self.pool.add(conn)
        return conn

    async def _tunnel(self, conn: Connection, context: ssl.SSLContext) -> None:
        """Open a ``CONNECT`` tunnel to the origin through the proxy ``conn`` is connected to,
        then TLS to the origin over it (RFC 9110 9.3.6). A 4xx is the proxy refusing the run
        (``ProxyRefused``, exit 78); another refusal a ``ConnectionError`` (retried); both name
        the proxy by its URL without credentials, and the status it answered."""
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
        if 400 <= parser.status < 500:  # the proxy refuses us: never the endpoint's key
            raise proxy_refused(self._proxy, parser.status, where)
        if not 200 <= parser.status < 300:  # it cannot reach the endpoint now: retried
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
        body: bytes | FileBody | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return await self._other.request(method, path, body, content_type, headers)

    async def download(self, path: str, dest: Path) -> Reply:
        return await self._other.download(path, dest)

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self._other.aclose()


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batcher")
    except PackageNotFoundError:
        return "0"
