"""How requests travel: one small interface over the HTTP clients, errors translated there only.

A run's POSTs go over ``http1.Http1Transport``, batcher's own lean HTTP/1.1 client: about a
third of aiohttp's CPU per request here (``benchmarks/http_clients.py``), itself about a quarter
of httpx's default pool's (httpcore rescans every connection on every event;
``benchmarks/overhead.py``), which is what lets one process serve the highest tiers and
self-hosted servers. ``AiohttpTransport`` carries everything else (the batch APIs' GETs, uploads,
downloads, with redirects and large bodies). ``HttpxTransport`` wraps an ``httpx.AsyncClient``:
for an ``httpx`` transport a caller passes in (``httpx.MockTransport`` in tests, a proxy's
transport), and for ``bench``. Either way the rest of batcher sees a ``Reply`` or a
``RetryableError``, never a client's own exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._core.errors import RetryableError, TimedOut

if TYPE_CHECKING:
    import ssl

    import httpx

    from .proxy import Proxies

__all__ = ["AiohttpTransport", "HttpxTransport", "Reply", "Transport"]


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, whichever client fetched it: status, headers (case-insensitive), body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Transport(Protocol):
    """POSTs JSON bodies to paths under one base URL with the endpoint's auth headers."""

    async def post(self, path: str, body: bytes) -> Reply:
        """Send ``body`` (JSON) to ``path``; a failure to get an answer is ``RetryableError``."""
        ...

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Any other call (the batch APIs' GETs, uploads and downloads): ``path`` under the base
        URL, or under its host when it starts with ``/``; ``body`` sent as ``content_type`` (JSON
        unless said), with ``headers`` besides the endpoint's; failures as for ``post``."""
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
    as ``proxy_headers``; ``ssl_context`` (``--ca-bundle``) verifies servers."""

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
    ) -> None:
        self._base = base_url.rstrip("/") + "/"
        self._headers = {**headers, "content-type": "application/json"}
        self._limit = max_connections
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._proxies = proxies
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
            # does; total is unbounded so a long generation is not cut while it streams in.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=self._timeout
            ),
            auto_decompress=True,
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
        proxy = self._proxies.for_url(str(url)) if self._proxies else None
        if proxy is None:
            return {}
        # On the CONNECT when tunnelling, else on the request (aiohttp's BasicAuth is deprecated)
        auth = {"proxy-authorization": proxy.authorization} if proxy.authorization else None
        return {"proxy": proxy.url, "proxy_headers": auth}

    async def post(self, path: str, body: bytes) -> Reply:
        import aiohttp

        session = self._session or self._open()
        try:
            url = self._url(path)
            async with session.post(
                url, data=body, headers=self._headers, **self._via(url)
            ) as response:
                content = await response.read()
                return Reply(response.status, response.headers, content)
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise _timed_out(type(e).__name__) from None
        except aiohttp.ClientError as e:
            raise _no_answer(e) from None
        except OSError as e:  # a socket error aiohttp did not wrap
            raise _no_answer(e) from None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        import aiohttp
        from yarl import URL

        session = self._session or self._open()
        extra = {**(headers or {}), **({"content-type": content_type} if content_type else {})}
        given = {name.lower() for name in extra}
        extra = {**{k: v for k, v in self._headers.items() if k.lower() not in given}, **extra}
        url = URL(self._base).join(URL(path)) if path.startswith("/") else self._url(path)
        try:
            async with session.request(
                method, url, data=body, headers=extra, **self._via(url)
            ) as response:
                content = await response.read()
                return Reply(response.status, response.headers, content)
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise _timed_out(type(e).__name__) from None
        except aiohttp.ClientError as e:
            raise _no_answer(e) from None
        except OSError as e:
            raise _no_answer(e) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxTransport:
    """An ``httpx.AsyncClient``, for an httpx transport given by the caller."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        timeout: float,
        connect_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx  # not imported by runs that do not use it (a seventh of a second)

        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={**headers, "content-type": "application/json"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def post(self, path: str, body: bytes) -> Reply:
        import httpx

        try:
            response = await self.client.post(path, content=body)
        except httpx.TimeoutException as e:
            raise _timed_out(type(e).__name__) from None
        except httpx.TransportError as e:
            raise _no_answer(e) from None
        return Reply(response.status_code, response.headers, response.content)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        import httpx

        extra = {**(headers or {}), **({"content-type": content_type} if content_type else {})}
        url = self.client.base_url.join(path) if path.startswith("/") else path
        try:
            response = await self.client.request(method, url, content=body, headers=extra)
        except httpx.TimeoutException as e:
            raise _timed_out(type(e).__name__) from None
        except httpx.TransportError as e:
            raise _no_answer(e) from None
        return Reply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        await self.client.aclose()
