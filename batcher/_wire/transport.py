"""How requests travel: one small interface over the HTTP clients, errors translated there only.

A run's POSTs go over ``http1.Http1Transport``, batcher's own lean HTTP/1.1 client: about a
third of aiohttp's CPU per request here (``benchmarks/http_clients.py``), itself about a quarter
of httpx's default pool's (httpcore rescans every connection on every event;
``benchmarks/overhead.py``), which is what lets one process serve the highest tiers and
self-hosted servers. ``AiohttpTransport`` carries everything else (the batch APIs' GETs, uploads,
downloads, with redirects and large bodies). ``HttpxTransport`` wraps an ``httpx.AsyncClient``:
for an ``httpx`` transport a caller passes in (``httpx.MockTransport`` in tests, a proxy's
transport), and for ``bench``. Either way the rest of batcher sees a ``Reply`` or a
``RetryableError``, never a client's own exceptions. (``HttpxTransport`` is in
``httpx_transport``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from .._core.errors import RetryableError, TimedOut
from .answer_caps import MAX_BODY, ProtocolError, size_text
from .bodies import FileBody
from .codings import Inflater
from .proxy import proxy_refused, untrusted_certificate

if TYPE_CHECKING:
    import ssl

    from .proxy import Proxies, Proxy

__all__ = ["MAX_FILE", "AiohttpTransport", "Reply", "Transport"]

MAX_FILE = 4 * 2**30
"""The largest answer to a batch API's call, as sent and once inflated: a results file (Gemini
takes input files up to 2 GB, OpenAI 200 MB; the answers are larger than the questions)."""

_FLOOR_RATE = 64 * 1024
"""Bytes a second a batch API's call moves at least: its deadline grows by a second for each
64 KiB of body sent or received, so a large file is not cut while a trickle still is."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, whichever client fetched it: status, headers (case-insensitive), body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    resent: bool = False
    """The request went out twice: the server closed the kept-alive connection as it left, so
    it was sent again on a new one (the first may have reached the server, and counts)."""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Transport(Protocol):
    """POSTs JSON bodies to paths under one base URL with the endpoint's auth headers."""

    async def post(self, path: str, body: bytes) -> Reply:
        """Send ``body`` (JSON) to ``path``; a failure to get an answer is ``RetryableError``, a
        proxy that refuses us ``ProxyRefused``."""
        ...

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | FileBody | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Any other call (the batch APIs' GETs, uploads and downloads): ``path`` under the base
        URL, or under its host when it starts with ``/``; ``body`` sent as ``content_type`` (JSON
        unless said; a ``FileBody`` read from disk as it is sent), with ``headers`` besides the
        endpoint's; failures as for ``post``."""
        ...

    async def download(self, path: str, dest: Path) -> Reply:
        """``GET path`` (as ``request``) with a 2xx answer's body written to ``dest`` as it
        arrives (the ``Reply`` then has none); any other answer's body in the ``Reply``."""
        ...

    async def aclose(self) -> None: ...


def _timed_out(kind: str) -> RetryableError:
    """A timeout; ``TimedOut`` (may have been billed) unless it was in connecting or waiting for
    a connection, when nothing was sent."""
    message = f"request timed out ({kind})"
    if "connect" in kind.lower() or "pool" in kind.lower():
        return RetryableError(message)
    return TimedOut(message)


def _no_answer(error: BaseException) -> RetryableError:
    return RetryableError(f"connection failed ({type(error).__name__}: {error})")


class AiohttpTransport:
    """aiohttp's client session, made on first use (it must be made inside the running loop).

    Its proxy is chosen per request by ``proxies`` (the lean client's rules, not aiohttp's own
    ``trust_env``, which reads no ``ALL_PROXY`` and no CIDR in ``NO_PROXY``), its credentials
    as ``proxy_headers``; ``ssl_context`` (``--ca-bundle``) verifies servers. A proxy that
    refuses us (a 407, or a 4xx to ``CONNECT``) is ``ProxyRefused``, a certificate no trusted CA
    signed ``UntrustedCertificate``, not a retryable failure.

    A hostile server gets no more than from the lean client (``http1``): a POST's answer is
    capped at ``max_body``, and at ``max_inflated`` once gzip/deflate is undone, and must be
    whole within ``deadline``, each a retryable error with the lean client's words. A batch
    API's call (``request``), whose answer may be a whole results file, is capped at
    ``max_file`` instead, its deadline longer by a second per 64 KiB it moves."""

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
        max_body: int | None = None,
        max_inflated: int | None = None,
        max_file: int = MAX_FILE,
    ) -> None:
        """``deadline``: the most one request may take from the call to its answer's last byte
        (default twice ``timeout``, see ``RequestOptions.request_deadline``); ``max_body``,
        ``max_inflated``: the lean client's caps (default ``http1.MAX_BODY``, 64 MiB)."""

        self._base = base_url.rstrip("/") + "/"
        # the codings decode_body undoes, and no others (aiohttp would add br with brotli)
        self._headers = {
            "accept-encoding": "gzip, deflate",
            **headers,
            "content-type": "application/json",
        }
        self._limit = max_connections
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._proxies = proxies
        self._deadline = deadline if deadline is not None else 2 * timeout
        self._post_caps = _Caps(
            MAX_BODY if max_body is None else max_body,
            "max_body",
            MAX_BODY if max_inflated is None else max_inflated,
            "max_inflated",
        )
        self._file_caps = _Caps(max_file, "max_file", max_file, "max_file")
        self._session: Any = None
        self._urls: dict[str, Any] = {}

    def _open(self) -> Any:
        import aiohttp

        # No default headers: aiohttp copies a session's into a proxy's CONNECT (the key would
        # reach the proxy, an Authorization even as its Proxy-Authorization); each request
        # carries them instead, which stay inside the tunnel.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit,
                ssl=self._ssl if self._ssl is not None else True,
            ),
            # sock_read bounds the wait for each piece of the answer, as httpx's read timeout
            # does; total is unbounded so a long generation is not cut while it streams in (the
            # request's deadline bounds the whole, see _exchange).
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=self._timeout
            ),
            # decoded by decode_body, as the lean client's are: a gzip body cut short is an
            # error (aiohttp hands on what inflated of it), every member of one is read
            auto_decompress=False,
        )
        return self._session

    def _url(self, path: str) -> Any:
        url = self._urls.get(path)
        if url is None:
            from yarl import URL

            url = self._urls[path] = URL(self._base + path, encoded=False)
        return url

    def _via(self, url: Any) -> dict[str, Any]:
        """The proxy keywords for a request to ``url`` (none when it goes direct)."""
        proxy = self._proxy(url)
        if proxy is None:
            return {}
        # On the CONNECT when tunnelling, else on the request (aiohttp's BasicAuth is deprecated)
        auth = {"proxy-authorization": proxy.authorization} if proxy.authorization else None
        return {"proxy": proxy.url, "proxy_headers": auth}

    def _proxy(self, url: Any) -> Proxy | None:
        return self._proxies.for_url(str(url)) if self._proxies else None

    async def post(self, path: str, body: bytes) -> Reply:
        return await self._exchange(
            "POST", self._url(path), body, self._headers, self._deadline, self._post_caps
        )

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | FileBody | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        sink: Path | None = None,
    ) -> Reply:
        from yarl import URL

        extra = {**(headers or {}), **({"content-type": content_type} if content_type else {})}
        given = {name.lower() for name in extra}
        extra = {**{k: v for k, v in self._headers.items() if k.lower() not in given}, **extra}
        url = URL(self._base).join(URL(path)) if path.startswith("/") else self._url(path)
        data: Any = body
        if isinstance(body, FileBody):  # its length said, so it is not sent chunked
            size = body.size
            data, extra = body.pieces(), {**extra, "content-length": str(size)}
        else:
            size = len(body or b"")
        deadline = self._deadline + size / _FLOOR_RATE
        return await self._exchange(
            method, url, data, extra, deadline, self._file_caps, grows=True, sink=sink
        )

    async def download(self, path: str, dest: Path) -> Reply:
        return await self.request("GET", path, sink=dest)

    async def _exchange(
        self,
        method: str,
        url: Any,
        body: Any,
        headers: Mapping[str, str],
        deadline: float,
        caps: _Caps,
        *,
        grows: bool = False,
        sink: Path | None = None,
    ) -> Reply:
        """One request and its whole answer within ``deadline`` seconds of the call (a second
        more per 64 KiB received if it ``grows``), its body within ``caps`` (a 2xx answer's
        written to ``sink`` if given); every failure as a ``RetryableError`` (``TimedOut`` once
        the request may have been read), but a proxy's refusal (a 407, a 4xx to ``CONNECT``),
        which is ``ProxyRefused``."""
        import aiohttp

        session = self._session or self._open()
        loop = asyncio.get_running_loop()
        start = loop.time()
        timer = asyncio.timeout_at(start + deadline)
        try:
            async with (
                timer,
                session.request(
                    method, url, data=body, headers=headers, **self._via(url)
                ) as response,
            ):
                if sink is not None and 200 <= response.status < 300:
                    with sink.open("wb") as f:
                        await _read(response, caps, timer if grows else None, f)
                    return Reply(response.status, response.headers, b"")
                content = await _read(response, caps, timer if grows else None)
                if response.status == 407:  # only a proxy says 407 (RFC 9110 15.5.8)
                    raise proxy_refused(self._proxy(url), 407, url.host)
                return Reply(response.status, response.headers, content)
        except aiohttp.ClientHttpProxyError as e:  # the CONNECT was answered with no tunnel
            if 400 <= e.status < 500:  # a refusal; a 5xx says the way on is down: retried
                raise proxy_refused(self._proxy(url), e.status, f"{url.host}:{url.port}") from None
            raise _no_answer(e) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            if timer.expired():
                lasted = (timer.when() or start) - start
                raise TimedOut(
                    f"request timed out (the answer was not complete within the "
                    f"{round(lasted, 1):g} s request deadline)"
                ) from None
            raise _timed_out(type(e).__name__) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise untrusted_certificate(url.host, url.port, e.certificate_error) from None
        except aiohttp.ClientError as e:
            raise _no_answer(e) from None
        except OSError as e:  # a socket error aiohttp did not wrap
            raise _no_answer(e) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class _Caps:
    """The most an answer's body may be as sent and once inflated, and the caps' names for
    messages."""

    body: int
    body_name: str
    inflated: int
    inflated_name: str


async def _read(
    response: Any, caps: _Caps, timer: asyncio.Timeout | None, sink: BinaryIO | None = None
) -> bytes:
    """An aiohttp answer's body, within ``caps`` (a ``RetryableError`` naming the cap past, as
    the lean client's), or written to ``sink`` as it arrives (then b""); ``timer`` is pushed
    back a second per 64 KiB received. The body is read as sent (aiohttp decodes nothing), up to
    the body's cap, its content coding undone by ``codings.Inflater`` up to the
    inflated cap, so a bomb stops at the cap and a gzip body cut short is an error."""
    if response.content_length is not None and response.content_length > caps.body:
        response.close()
        raise _over(f"body over the {{}} cap ({caps.body_name})", caps.body)
    coding = response.headers.get("content-encoding", "").strip().lower()
    try:
        inflater = Inflater(coding, caps.inflated)
        pieces: list[bytes] = []
        got = 0
        async for piece in response.content.iter_any():
            got += len(piece)
            if got > caps.body:
                response.close()
                raise _over(f"body over the {{}} cap ({caps.body_name})", caps.body)
            if sink is None:
                pieces.append(piece)
            else:
                sink.write(inflater.feed(piece))
            if timer is not None:
                timer.reschedule((timer.when() or 0.0) + len(piece) / _FLOOR_RATE)
        content = inflater.feed(b"".join(pieces)) if pieces else b""
        inflater.end()
    except ProtocolError as e:
        said = str(e).replace("(max_inflated)", f"({caps.inflated_name})")
        raise _no_answer(ProtocolError(said)) from None
    return content


def _over(what: str, cap: int) -> RetryableError:
    """The lean client's error for an answer past a cap: ``what`` with the cap's size in it."""

    return _no_answer(ProtocolError("an answer " + what.format(size_text(cap))))
