"""A small HTTP/1.1 server on asyncio's ``Protocol`` API that feeds requests to the pipeline.

It does what the mock's clients need and no more: keep-alive and pipelined requests,
``Content-Length`` and chunked request bodies, ``Expect: 100-continue``, ``Connection: close``,
a 4xx and a closed connection for malformed input, and breaking a connection half-way through
an answer (the ``drop`` fault). It exists because a framework stack served a few hundred requests
a second, so no benchmark could see past the mock (figures in ``benchmarks/mock_server.py``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from ._wire import Request, Response, text_response

__all__ = ["Handler", "HttpServer"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_log = logging.getLogger("batcher.mock")

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_FAILED = text_response(500, "Internal Server Error")
"""The answer when the pipeline itself fails: a bug, but the client should not hang."""
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Malformed(Exception):
    """The request cannot be read: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(method, target, version, headers) of a request head; header names lower-case."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise _Malformed(400, "a malformed request line")
    if parts[0] not in _METHODS:  # HEAD too: every answer here has a body
        raise _Malformed(501, f"the method {parts[0]} is not served here")
    if parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Malformed(505, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t" or line[0] in " \t":
            raise _Malformed(400, "a malformed header line")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return parts[0], parts[1], parts[2], headers


def _chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, end) of a chunked body starting at ``start``; None until all of it is here."""
    chunks = []
    size_total = 0
    at = start
    while True:
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            if len(buffer) - at > 1024:
                raise _Malformed(400, "a malformed chunk size")
            return None
        size_text = bytes(buffer[at:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _Malformed(400, "a malformed chunk size") from None
        if size < 0 or size_total + size > MAX_BODY:
            raise _Malformed(413, "the request body is too large")
        at = eol + 2
        if size == 0:
            break
        if len(buffer) < at + size + 2:
            return None
        if buffer[at + size : at + size + 2] != b"\r\n":
            raise _Malformed(400, "a chunk without its line end")
        chunks.append(bytes(buffer[at : at + size]))
        size_total += size
        at += size + 2
    while True:  # trailer fields, up to the empty line
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            return None
        if eol == at:
            return b"".join(chunks), eol + 2
        at = eol + 2


def _encode(response: Response, keep_alive: bool, http10: bool) -> bytes:
    """The status line and headers (and body) of ``response``, ready to write."""
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}"]
    lines.extend(f"{k}: {v}" for k, v in response.headers)
    if not response.drop:
        lines.append(f"content-length: {len(response.body)}")
    if not keep_alive:
        lines.append("connection: close")
    elif http10:
        lines.append("connection: keep-alive")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + response.body


class _Connection(asyncio.Protocol):
    """One client connection: reads requests in order and answers each before the next."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy: asyncio.Task[Response] | None = None
        self.keep_alive = True
        self.http10 = False
        self.continued = False  # whether "100 Continue" went out for the request being read
        self.half_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # a request being answered goes on (it is counted), but nothing more is read
        self.server.connections.discard(self)
        self.buffer.clear()

    def eof_received(self) -> bool:
        # the client sends no more: answer what it asked (keeping the transport open), then close
        self.half_closed = True
        return self.busy is not None

    def pause_writing(self) -> None:
        # a client that does not read its answers gets no more of them read either
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        """Start answering the next whole request in the buffer, unless one is being answered."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.busy is not None:
            return
        try:
            request = self._read()
        except _Malformed as bad:
            self.keep_alive = False
            self._send(text_response(bad.status, f"{_REASONS[bad.status]}: {bad}"))
            return
        if request is not None:
            self.busy = asyncio.ensure_future(self.server.handler(request))
            self.busy.add_done_callback(self._answered)
            self.server.tasks.add(self.busy)

    def _answered(self, task: asyncio.Task[Response]) -> None:
        self.server.tasks.discard(task)
        self.busy = None
        if task.cancelled():
            return
        if error := task.exception():
            _log.error("the mock provider failed to answer", exc_info=error)
            self._send(_FAILED)
        else:
            self._send(task.result())
        self._serve()  # a pipelined request may be waiting

    def _read(self) -> Request | None:
        """The next whole request in the buffer (taken out of it), or None."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise _Malformed(431, "the request head is too large")
            return None
        method, target, version, headers = _head(bytes(buffer[:end]))
        start = end + 4
        if "transfer-encoding" in headers:
            if "content-length" in headers or headers["transfer-encoding"].lower() != "chunked":
                raise _Malformed(400, "only a chunked transfer-encoding, without a length")
            found = _chunked(buffer, start)
            if found is None:
                self._continue(headers)
                return None
            body, stop = found
        else:
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit():
                raise _Malformed(400, "a malformed content-length")
            length = int(length_text)
            if length > MAX_BODY:
                raise _Malformed(413, "the request body is too large")
            stop = start + length
            if len(buffer) < stop:
                self._continue(headers)
                return None
            body = bytes(buffer[start:stop])
        del buffer[:stop]
        self.continued = False
        connection = headers.get("connection", "").lower()
        self.http10 = version == "HTTP/1.0"
        self.keep_alive = "keep-alive" in connection if self.http10 else "close" not in connection
        path, _, query = target.partition("?")
        return Request(
            method=method,
            path=unquote(path) if "%" in path else path,
            headers=headers,
            query=dict(parse_qsl(query)) if query else {},
            body=body,
        )

    def _continue(self, headers: dict[str, str]) -> None:
        """Tell a client that waits for it to send the body it announced."""
        if not self.continued and headers.get("expect", "").lower() == "100-continue":
            self.continued = True
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _send(self, response: Response) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_encode(response, self.keep_alive, self.http10))
        if response.drop or not self.keep_alive or self.half_closed:
            # after what was written; a drop's answer announced more than it sent, unannounced
            transport.close()


class HttpServer:
    """Serves ``handler`` on a listening socket until ``close``; owns its connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[Response]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        """Start accepting connections on ``sock`` (bound, not yet listening)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=512)

    async def close(self) -> None:
        """Stop listening, close every connection and cancel the answers still being made."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
