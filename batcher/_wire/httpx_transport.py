"""``HttpxTransport``: the ``Transport`` interface over an ``httpx.AsyncClient``, for an httpx
transport a caller passes in (``httpx.MockTransport`` in tests, a proxy's transport) and for
``bench``; httpx's exceptions become a ``RetryableError`` here, as ``transport``'s do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .answer_caps import ProtocolError
from .bodies import FileBody
from .codings import Inflater
from .transport import MAX_FILE, Reply, _no_answer, _timed_out

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpxTransport"]


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
        except (httpx.TransportError, ProtocolError) as e:
            raise _no_answer(e) from None
        return Reply(response.status_code, response.headers, response.content)

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
        import httpx

        extra = {**(headers or {}), **({"content-type": content_type} if content_type else {})}
        url = self.client.base_url.join(path) if path.startswith("/") else path
        content: Any = body
        if isinstance(body, FileBody):  # its length said, so it is not sent chunked
            content, extra = body.pieces(), {**extra, "content-length": str(body.size)}
        request = self.client.build_request(method, url, content=content, headers=extra)
        try:
            response = await self.client.send(request, stream=True)
            try:
                if sink is not None and response.is_success:
                    # inflated as the other transports do (every gzip member, a cut body an error)
                    coding = response.headers.get("content-encoding", "").strip().lower()
                    inflater = Inflater(coding, MAX_FILE)
                    with sink.open("wb") as f:
                        async for piece in response.aiter_raw():
                            f.write(inflater.feed(piece))
                    inflater.end()
                    return Reply(response.status_code, response.headers, b"")
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as e:
            raise _timed_out(type(e).__name__) from None
        except (httpx.TransportError, ProtocolError) as e:
            raise _no_answer(e) from None
        return Reply(response.status_code, response.headers, response.content)

    async def download(self, path: str, dest: Path) -> Reply:
        return await self.request("GET", path, sink=dest)

    async def aclose(self) -> None:
        await self.client.aclose()
