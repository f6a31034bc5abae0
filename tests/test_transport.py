"""The transports (aiohttp, httpx, the lean HTTP/1.1 client) over real loopback sockets: every
way an answer can fail is a RetryableError."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from batcher import RetryableError
from batcher._wire.bodies import FileBody
from batcher._wire.http1 import Http1Transport
from batcher._wire.httpx_transport import HttpxTransport
from batcher._wire.transport import AiohttpTransport, Transport

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    """A raw HTTP server on loopback; every connection it took is closed when it stops."""
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        await handler(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)


def _make(kind: str, url: str, timeout: float = 5.0) -> Transport:
    options = {"max_connections": 2, "timeout": timeout, "connect_timeout": timeout}
    if kind == "aiohttp":
        return AiohttpTransport(url, {"authorization": "Bearer k"}, **options)  # type: ignore[arg-type]
    if kind == "http1":
        return Http1Transport(url, {"authorization": "Bearer k"}, **options)  # type: ignore[arg-type]
    return HttpxTransport(url, {"authorization": "Bearer k"}, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["aiohttp", "httpx", "http1"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_an_answer_comes_back_with_its_status_headers_and_body(kind: str) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        await reader.readexactly(7)
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
            b"Retry-After: 3\r\ncontent-length: 2\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    async with _server(handler) as url:
        transport = _make(kind, url)
        try:
            reply = await transport.post("chat/completions", b'{"a":1}')
        finally:
            await transport.aclose()
    assert (reply.status_code, reply.content, reply.headers.get("retry-after")) == (429, b"{}", "3")
    head = seen[0].lower()
    assert head.startswith(b"post /v1/chat/completions http/1.1")
    assert b"authorization: bearer k" in head and b"content-type: application/json" in head


async def test_a_refused_connection_is_retryable(kind: str) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = _make(kind, f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(RetryableError, match="connection failed"):
            await transport.post("chat/completions", b"{}")
    finally:
        await transport.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"id": "cut',  # body cut short
        b"NOT HTTP AT ALL\r\n\r\n",  # not an HTTP answer
    ],
    ids=["cut-short", "malformed"],
)
async def test_a_broken_answer_is_retryable(kind: str, answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with _server(handler) as url:
        transport = _make(kind, url)
        try:
            with pytest.raises(RetryableError, match="connection failed"):
                await transport.post("chat/completions", b"{}")
        finally:
            await transport.aclose()


async def test_a_server_that_never_answers_times_out(kind: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async with _server(handler) as url:
        transport = _make(kind, url, timeout=0.2)
        try:
            with pytest.raises(RetryableError, match="timed out"):
                await transport.post("chat/completions", b"{}")
        finally:
            await transport.aclose()


async def test_a_file_goes_up_from_disk_with_its_length_and_an_answer_down_to_disk(
    kind: str, tmp_path: Path
) -> None:
    """A batch input file is sent as it is read (a length said, not chunked) between its
    envelope's head and tail; a results file is written to disk as it arrives, an error's body
    kept in the reply."""
    data = bytes(range(256)) * 9000  # over two of FileBody's pieces
    source = tmp_path / "input.jsonl"
    source.write_bytes(data)
    got: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed the connection
                return
            lengths = [h for h in head.lower().split(b"\r\n") if h.startswith(b"content-length")]
            body = await reader.readexactly(int(lengths[0].split(b":")[1])) if lengths else b""
            got.append((head.lower(), body))
            if head.startswith(b"POST"):
                answer, status = b'{"id":"file-1"}', b"200 OK"
            elif b"/missing" in head:
                answer, status = b'{"error":"gone"}', b"404 Not Found"
            else:
                answer, status = data, b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(answer))
            writer.write(answer)
            await writer.drain()

    async with _server(handler) as url:
        transport = _make(kind, url)
        try:
            body = FileBody(source, b"HEAD", b"TAIL")
            reply = await transport.request("POST", "files", body, "multipart/form-data")
            dest = tmp_path / "out.jsonl"
            down = await transport.download("files/file-1/content", dest)
            missing = await transport.download("files/missing/content", tmp_path / "no.jsonl")
        finally:
            await transport.aclose()
    assert reply.content == b'{"id":"file-1"}'
    head, sent = got[0]
    assert sent == b"HEAD" + data + b"TAIL" and b"transfer-encoding" not in head
    assert (down.status_code, down.content, dest.read_bytes()) == (200, b"", data)
    assert (missing.status_code, missing.content) == (404, b'{"error":"gone"}')
    assert not (tmp_path / "no.jsonl").exists()


@pytest.mark.parametrize("cut", [False, True])
async def test_a_gzip_results_file_is_inflated_on_its_way_to_disk(
    kind: str, tmp_path: Path, cut: bool
) -> None:
    """A results file sent gzip-coded (in two members, as a server concatenating parts may) is
    written to disk inflated, a piece at a time; one cut short is a retryable error, not a file
    that silently lacks its end."""
    import gzip

    data = b"".join(b'{"custom_id":"j%d","n":%d}\n' % (i, i) for i in range(40_000))
    coded = gzip.compress(data[:300_000]) + gzip.compress(data[300_000:])
    if cut:
        coded = coded[: len(coded) - 20]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(coded)
        )
        writer.write(coded)
        await writer.drain()
        writer.close()

    dest = tmp_path / "out.jsonl"
    async with _server(handler) as url:
        transport = _make(kind, url)
        try:
            if cut:
                with pytest.raises(RetryableError):
                    await transport.download("files/file-1/content", dest)
                return
            down = await transport.download("files/file-1/content", dest)
        finally:
            await transport.aclose()
    assert (down.status_code, dest.read_bytes()) == (200, data)
