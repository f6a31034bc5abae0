"""The mock provider as an ASGI app, for in-process clients such as ``httpx.ASGITransport``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from ._config import MockConfig
from ._pipeline import Pipeline
from ._state import MockState
from ._wire import Request, Response

__all__ = ["MockApp", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class MockApp:
    """An ASGI app in front of a ``Pipeline``; ``state`` is its live counters."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @property
    def state(self) -> MockState:
        """What the mock has seen so far (``POST /admin/reset`` starts a new one)."""
        return self.pipeline.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"the mock provider speaks HTTP only, not {scope['type']!r}")
        response = await self.pipeline.handle(await _request(scope, receive))
        await _send(response, send)


async def _request(scope: Scope, receive: Receive) -> Request:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    query = scope.get("query_string", b"").decode("latin-1")
    return Request(
        method=scope["method"],
        path=scope["path"],
        headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        query=dict(parse_qsl(query)) if query else {},
        body=b"".join(chunks),
    )


async def _send(response: Response, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if not response.drop:
        headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": response.drop})
    if response.drop:
        # an ASGI app has no other way to break the connection: the server aborts it
        raise ConnectionAbortedError("mock provider: dropped the connection on purpose")


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: acknowledge the server's lifespan messages."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    config: MockConfig | None = None, *, clock: Callable[[], float] = time.time
) -> MockApp:
    """The mock provider as an ASGI app with its own counters, read as ``app.state``.

    ``clock`` is the wall clock its limits are counted by (minutes, seconds, quota days).
    """
    return MockApp(Pipeline(config or MockConfig(), clock))
