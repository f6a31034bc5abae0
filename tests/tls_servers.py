"""TLS pieces for the network tests, built from asyncio and ``trustme``: a TLS front for the
plain mock (a server whose certificate a private CA signed), and a TLS-inspecting proxy (a
man in the middle, as a company's proxy is) that answers each ``CONNECT`` by presenting a
certificate its own CA issued for the requested host, reads the requests in clear, and sends
them on to the origin over a TLS connection of its own."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import trustme

__all__ = ["Inspector", "in_background", "tls_front", "tls_inspecting_proxy"]

T = TypeVar("T")


@contextlib.contextmanager
def in_background(make: Callable[[], AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """The async context ``make`` gives, entered on an event loop of its own in a thread: for a
    test whose code under test runs its own loop in the main thread (the CLI's ``main``, which
    installs signal handlers, only possible there)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()
    try:
        yield asyncio.run_coroutine_threadsafe(stack.enter_async_context(make()), loop).result()
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _pipe(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, seen: list[str] | None = None
) -> None:
    """Copy ``r`` to ``w`` until either side closes; the request lines of what passes noted in
    ``seen`` (a piece that starts with a method: each request's head is written at once)."""
    with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
        while data := await r.read(65536):
            if seen is not None and data[:4] in (b"POST", b"GET ", b"PUT ", b"DELE"):
                seen.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
            w.write(data)
            await w.drain()
    w.close()


@asynccontextmanager
async def tls_front(port: int, authority: trustme.CA) -> AsyncIterator[int]:
    """TLS in front of the plain mock on ``port``: a forwarder with a certificate the private CA
    issued for 127.0.0.1. Yields its own port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    writers: list[asyncio.StreamWriter] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        writers.extend((w, w2))
        await asyncio.gather(_pipe(r, w2), _pipe(r2, w), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


@dataclass
class Inspector:
    """A running TLS-inspecting proxy: its URL, the tunnels it was asked for (``host:port``),
    the request lines it read in clear inside them, and the handshakes clients refused (a
    client that does not trust its CA hangs up during the handshake)."""

    url: str
    tunnels: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@asynccontextmanager
async def tls_inspecting_proxy(
    authority: trustme.CA, upstream: ssl.SSLContext
) -> AsyncIterator[Inspector]:
    """An HTTP proxy on 127.0.0.1 that takes each ``CONNECT host:port``, answers 200, then
    speaks TLS to the client itself with a leaf ``authority`` issues for ``host``, and to the
    origin with ``upstream`` (which trusts the origin's CA): every request passes it in clear."""
    leaves: dict[str, ssl.SSLContext] = {}
    writers: list[asyncio.StreamWriter] = []
    handlers: set[asyncio.Task[None]] = set()  # each connection's, awaited before the end

    def leaf(host: str) -> ssl.SSLContext:
        if host not in leaves:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            authority.issue_cert(host).configure_cert(context)
            leaves[host] = context
        return leaves[host]

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.append(w)
        try:
            await _inspect(r, w)
        finally:
            handlers.discard(task)

    async def _inspect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, OSError):
            w.close()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if method != "CONNECT":
            w.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            w.close()
            return
        inspector.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        host = host.strip("[]")
        w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await w.drain()
        plain = w.transport
        try:
            await w.start_tls(leaf(host))
            why = "" if w.transport is not None else "closed during the handshake"
        except (OSError, ssl.SSLError) as e:  # the client did not trust us
            why = repr(e)
        except AttributeError:  # 3.11's start_tls, when the client hangs up mid-handshake
            why = "closed during the handshake"
        if why:
            inspector.refused.append(f"{target}: {why}")
            w._transport = plain  # type: ignore[attr-defined]  # not None: close() must work
            plain.abort()
            return
        r2, w2 = await asyncio.open_connection(host, int(port), ssl=upstream, server_hostname=host)
        writers.append(w2)
        await asyncio.gather(_pipe(r, w2, inspector.seen), _pipe(r2, w), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    inspector = Inspector(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield inspector
    finally:
        server.close()
        for w in writers:
            if w.transport is not None:
                w.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
