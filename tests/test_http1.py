"""The lean HTTP/1.1 client: its parser over any split of any answer, and its pool, timeouts,
resends and TLS against real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import socket
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import batcher
from batcher import RetryableError, UntrustedCertificate, UsageError
from batcher._wire.answer_caps import ProtocolError
from batcher._wire.http1 import Http1Transport
from batcher._wire.http1_parser import ResponseParser
from batcher._wire.providers._base import rate_hints

try:
    import uvloop  # noqa: F401  (not a dependency: the loop tests run on it when installed)

    _LOOPS = [
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
except ImportError:
    _LOOPS = [pytest.param(("asyncio", {}), id="asyncio")]


@pytest.fixture(params=_LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


# --- the parser, without sockets ---------------------------------------------------------------

_names = st.text("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=12).filter(
    lambda n: (
        n.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
    )
)
_values = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=20
).map(lambda v: v.replace(",", ";"))


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _parse(pieces: list[bytes]) -> ResponseParser:
    parser = ResponseParser()
    done = False
    for piece in pieces:
        done = parser.feed(piece)
    if not done:
        assert parser.eof(), "the answer did not complete"
    return parser


@st.composite
def _answers(draw: st.DrawFn) -> tuple[bytes, int, dict[str, str], bytes]:
    """An answer on the wire, and the status, headers and body it must parse to."""
    status = draw(st.sampled_from([200, 201, 400, 429, 500, 503]))
    body = draw(st.binary(max_size=3000))
    fields = draw(st.lists(st.tuples(_names, _values), max_size=6))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    coding = draw(st.sampled_from([None, "gzip", "deflate"]))
    sent = body
    if coding == "gzip":
        sent = gzip.compress(body)
        fields.append(("Content-Encoding", "gzip"))
    elif coding == "deflate":
        sent = zlib.compress(body)
        fields.append(("Content-Encoding", "deflate"))
    if framing == "length":
        fields.append(("Content-Length", str(len(sent))))
        payload = sent
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", "chunked"))
        sizes = draw(st.lists(st.integers(1, 700), max_size=8))
        chunks, at = [], 0
        for size in sizes:
            if at < len(sent):
                part = sent[at : at + size]
                ext = draw(st.sampled_from(["", ";a=b", ';x="y" ; z']))
                chunks.append(b"%x%s\r\n%s\r\n" % (len(part), ext.encode(), part))
                at += size
        if at < len(sent):
            chunks.append(b"%X\r\n%s\r\n" % (len(sent) - at, sent[at:]))
        trailers = draw(st.lists(st.tuples(_names, _values), max_size=2))
        tail = "".join(f"{n}: {v}\r\n" for n, v in trailers).encode()
        payload = b"".join(chunks) + b"0\r\n" + tail + b"\r\n"
    else:
        fields.append(("Connection", "close"))
        payload = sent
    interim = draw(st.booleans())
    head = "".join(f"{n}: {v}\r\n" for n, v in fields)
    wire = (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"") + (
        f"HTTP/1.1 {status} Whatever Reason\r\n{head}\r\n".encode() + payload
    )
    expected: dict[str, str] = {}
    for n, v in fields:
        key = n.lower()
        expected[key] = v if key not in expected else f"{expected[key]}, {v}"
    return wire, status, expected, body


@given(_answers(), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_answer_in_any_split_parses_the_same(
    answer: tuple[bytes, int, dict[str, str], bytes], cuts: list[int]
) -> None:
    wire, status, headers, body = answer
    parser = _parse(_split(wire, cuts))
    assert parser.status == status
    assert dict(parser.headers) == headers
    assert parser.content == body
    for name, value in headers.items():
        assert parser.headers[name.upper()] == value


_BAD = {
    "not-http": b"NOT HTTP AT ALL\r\n\r\n",
    "bad-status": b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
    "header-no-colon": b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\n{}",
    "bad-length": b"HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\n{}",
    "two-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunk-without-crlf": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n"
    ),
    "unknown-coding": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n{}",
    "bad-gzip": b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\nnope",
    "huge-head": b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("wire", list(_BAD.values()), ids=list(_BAD))
@given(cuts=st.lists(st.integers(0, 100_000), max_size=6))
def test_bad_framing_is_an_error_in_any_split(wire: bytes, cuts: list[int]) -> None:
    with pytest.raises(ProtocolError):
        _parse(_split(wire, cuts))


def test_an_answer_cut_short_is_incomplete_at_eof() -> None:
    for wire in (
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-le",
    ):
        parser = ResponseParser()
        assert not parser.feed(wire)
        assert not parser.eof()


def test_keep_alive_follows_the_version_and_connection_header() -> None:
    cases = {
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n": True,
        b"HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n": False,
        b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n": False,
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n": True,
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nextra": False,
    }
    for wire, keep in cases.items():
        parser = ResponseParser()
        assert parser.feed(wire)
        assert parser.keep_alive is keep, wire


def test_headers_serve_the_providers_readers() -> None:
    parser = _parse(
        [
            b"HTTP/1.1 429 Too Many\r\nX-RateLimit-Limit-Requests: 500\r\n"
            b"x-ratelimit-remaining-requests: 7\r\nRetry-After: 3\r\ncontent-length: 0\r\n\r\n"
        ]
    )
    hints = rate_hints(parser.headers)
    assert (hints.limit_requests, hints.remaining_requests) == (500, 7)
    assert parser.headers.get("RETRY-AFTER") == "3" and "retry-after" in parser.headers
    assert parser.headers.get("absent") is None


# --- real loopback servers ---------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    url: str
    connections: int = 0  # accepted so far
    open: int = 0  # open now
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)  # the heads received, in order


@asynccontextmanager
async def _serve(
    handler: Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    name: str = "127.0.0.1",
) -> AsyncIterator[Server]:
    """A raw HTTP server counting its connections; every one is closed when it stops."""
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []
    state = Server("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        state.connections += 1
        state.open += 1
        state.most_open = max(state.most_open, state.open)
        try:
            await handler(state, reader, writer)
        finally:
            state.open -= 1

    server = await asyncio.start_server(serve, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    state.url = f"{'https' if tls else 'http'}://{name}:{port}/v1/"
    try:
        yield state
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
        await server.wait_closed()


async def _request(state: Server, reader: asyncio.StreamReader) -> bool:
    """Read one request (head and body); False at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    state.requests.append(head)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return True


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
_CHAT = (
    b'{"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],'
    b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "model": "m"}'
)
CHAT_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
    len(_CHAT),
    _CHAT,
)


async def _keep_alive(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while await _request(state, reader):
        await asyncio.sleep(0.01)
        w.write(OK)
        await w.drain()


@contextlib.asynccontextmanager
async def _client(
    url: str,
    *,
    connections: int = 2,
    timeout: float = 5.0,  # noqa: ASYNC109 (the client's read timeout, not this call's)
    **kw: object,
) -> AsyncIterator[Http1Transport]:
    """A client of ``url``, closed (every socket) at the end of the block."""
    client = Http1Transport(
        url,
        {"authorization": "Bearer k"},
        max_connections=connections,
        timeout=timeout,
        connect_timeout=timeout,
        **kw,  # type: ignore[arg-type]
    )
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_sequential_posts_share_one_kept_alive_connection() -> None:
    async with _serve(_keep_alive) as server, _client(server.url) as client:
        replies = [await client.post("chat/completions", b"{}") for _ in range(5)]
    assert [r.content for r in replies] == [b"{}"] * 5
    assert (server.connections, len(server.requests)) == (1, 5)
    head = server.requests[0].lower()
    assert head.startswith(b"post /v1/chat/completions http/1.1\r\n")
    assert f"host: 127.0.0.1:{server.url.split(':')[2].split('/')[0]}".encode() in head
    assert b"user-agent: batcher/" in head
    assert b"\r\naccept-encoding: gzip, deflate\r\n" in head  # what the parser undoes, no more


@pytest.mark.anyio
async def test_an_idle_connection_past_its_expiry_is_closed_not_reused() -> None:
    async with _serve(_keep_alive) as server, _client(server.url) as client:
        client.pool.keepalive_expiry = 0.2
        await client.post("x", b"{}")
        await client.post("x", b"{}")  # reused: fresh enough
        await anyio.sleep(0.3)
        await client.post("x", b"{}")  # the idle one expired: a new connection
        assert server.open == 1  # the expired one was closed
    assert (server.connections, len(server.requests)) == (2, 3)


@pytest.mark.anyio
async def test_connection_close_is_honoured() -> None:
    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await _request(state, reader):  # would take a second request if sent one
            w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}")
            await w.drain()

    async with _serve(handler) as server, _client(server.url) as client:
        for _ in range(3):
            assert (await client.post("x", b"{}")).status_code == 200
    assert (server.connections, len(server.requests)) == (3, 3)


@pytest.mark.anyio
async def test_never_more_connections_than_the_limit() -> None:
    replies: list[int] = []
    async with (
        _serve(_keep_alive) as server,
        _client(server.url, connections=3) as client,
        anyio.create_task_group() as tg,
    ):

        async def one() -> None:
            replies.append((await client.post("x", b"{}")).status_code)

        for _ in range(20):
            tg.start_soon(one)
    assert replies == [200] * 20
    assert server.most_open <= 3 and server.connections <= 3 and len(server.requests) == 20


@pytest.mark.anyio
async def test_a_reused_connection_closed_unanswered_is_resent_once_on_a_new_one() -> None:
    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first = state.connections == 1
        while await _request(state, reader):
            if first and len(state.requests) == 2:  # the idle-close race: gone, nothing said
                w.close()
                return
            w.write(OK)
            await w.drain()

    async with _serve(handler) as server, _client(server.url) as client:
        assert (await client.post("x", b"{}")).status_code == 200
        assert (await client.post("x", b"{}")).status_code == 200
    assert (server.connections, len(server.requests)) == (2, 3)


@pytest.mark.anyio
async def test_a_fresh_connection_closed_unanswered_is_not_resent() -> None:
    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(state, reader)
        w.close()

    async with _serve(handler) as server, _client(server.url) as client:
        with pytest.raises(RetryableError, match="connection failed"):
            await client.post("x", b"{}")
    assert (server.connections, len(server.requests)) == (1, 1)


@pytest.mark.anyio
async def test_the_timeout_is_silence_not_the_whole_answer() -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 6 + b"0\r\n\r\n"
    )

    async def trickle(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(state, reader)
        pieces = [wire[:48], *(wire[48 + 6 * i : 54 + 6 * i] for i in range(6)), wire[84:]]
        for piece in pieces:  # every 0.1 s, 0.8 s in all: longer than the 0.3 s timeout
            w.write(piece)
            await w.drain()
            await asyncio.sleep(0.1)

    async def stall(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(state, reader)
        w.write(wire[:60])
        await asyncio.sleep(5)

    # (the deadline, twice the timeout by default, is set apart: it has tests of its own)
    async with _serve(trickle) as server, _client(server.url, timeout=0.3, deadline=5) as client:
        assert (await client.post("x", b"{}")).content == b"x" * 6
    async with _serve(stall) as server, _client(server.url, timeout=0.2) as client:
        with pytest.raises(RetryableError, match="timed out"):
            await client.post("x", b"{}")


@pytest.mark.anyio
async def test_a_large_body_still_leaving_is_not_silence() -> None:
    body = b"x" * (24 << 20)

    async def slow_reader(state: Server, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        state.requests.append(head)
        got = 0
        for _ in range(8):  # 1 MiB each 0.1 s: 0.8 s, longer than the 0.3 s timeout
            got += len(await r.readexactly(1 << 20))
            await asyncio.sleep(0.1)
        await r.readexactly(len(body) - got)
        w.write(OK)
        await w.drain()

    async with (
        _serve(slow_reader) as server,
        _client(server.url, timeout=0.3, deadline=5) as client,
    ):
        assert (await client.post("x", body)).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 64 * 1024 + 1, 3 << 20])
async def test_a_body_of_any_size_arrives_byte_for_byte(size: int) -> None:
    """Small bodies leave joined to their head, large ones after it (not copied): both whole."""
    body = bytes(i * 7 % 251 for i in range(size))
    bodies: list[bytes] = []

    async def echo_length(state: Server, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            bodies.append(await r.readexactly(length))
            w.write(OK)
            await w.drain()

    async with _serve(echo_length) as server, _client(server.url) as client:
        for _ in range(2):  # and the connection is fit for the next request
            assert (await client.post("x", body)).status_code == 200
    assert bodies == [body, body]


@pytest.mark.anyio
async def test_a_stalled_tls_handshake_is_a_connect_timeout() -> None:
    async def mute(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)  # takes the TCP connection, never answers the TLS hello

    async with (
        _serve(mute) as server,
        _client(server.url.replace("http://", "https://"), timeout=0.2) as client,
    ):
        with pytest.raises(RetryableError, match="timed out"):
            await client.post("x", b"{}")


@pytest.mark.anyio
async def test_waiters_are_served_in_order_and_a_cancelled_one_passes_its_turn() -> None:
    release = asyncio.Event()

    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await _request(state, reader):
            if len(state.requests) == 1:
                await release.wait()
            w.write(OK)
            await w.drain()

    done: list[str] = []
    async with _serve(handler) as server, _client(server.url, connections=1) as client:

        async def post(name: str) -> None:
            await client.post(name, b"{}")
            done.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(post, "a")
            await anyio.sleep(0.05)
            with anyio.CancelScope() as b_scope:
                async with anyio.create_task_group() as b_group:
                    b_group.start_soon(post, "b")
                    await anyio.sleep(0.05)
                    for name in ("c", "d", "e"):
                        tg.start_soon(post, name)
                        await anyio.sleep(0.02)
                    b_scope.cancel()  # b gives up while waiting for the one connection
            release.set()
    assert done == ["a", "c", "d", "e"]
    assert server.connections == 1
    assert [h.split(b" ")[1] for h in server.requests] == [b"/v1/a", b"/v1/c", b"/v1/d", b"/v1/e"]


@pytest.mark.anyio
async def test_a_cancelled_post_closes_its_socket_and_frees_its_slot() -> None:
    asked = asyncio.Event()
    closed = asyncio.Event()

    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if state.connections > 1:
            await _keep_alive(state, reader, w)
            return
        await _request(state, reader)
        asked.set()
        assert await reader.read() == b""  # EOF: the client closed this connection
        closed.set()

    async with _serve(handler) as server, _client(server.url, connections=1) as client:
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.post, "x", b"{}")
                await asyncio.wait_for(asked.wait(), 5)
                tg.cancel_scope.cancel()
            await asyncio.wait_for(closed.wait(), 5)
        assert not scope.cancelled_caught
        assert (await client.post("x", b"{}")).status_code == 200  # the one slot is free
    assert server.connections == 2


@pytest.mark.anyio
async def test_chunked_gzip_and_interim_answers_over_the_wire() -> None:
    body = b'{"text": "' + os.urandom(3000).hex().encode() + b'"}'  # gzip leaves it > 100 bytes
    packed = gzip.compress(body)
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\nX-Twice: a\r\nx-twice: b\r\n\r\n"
        + b"%x;ext=1\r\n%s\r\n" % (100, packed[:100])
        + b"%x\r\n%s\r\n" % (len(packed) - 100, packed[100:])
        + b"0\r\nx-trailer: t\r\n\r\n"
    )

    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await _request(state, reader):
            for i in range(0, len(wire), 37):
                w.write(wire[i : i + 37])
                await w.drain()

    async with _serve(handler) as server, _client(server.url) as client:
        replies = [await client.post("x", b"{}") for _ in range(2)]
    assert [r.content for r in replies] == [body, body]
    assert replies[0].headers["x-twice"] == "a, b"
    assert server.connections == 1


@pytest.mark.anyio
async def test_an_answer_read_until_the_server_closes() -> None:
    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(state, reader)
        w.write(b"HTTP/1.0 200 OK\r\n\r\n")
        w.write(b'{"until": "close"}')
        await w.drain()
        w.close()

    async with _serve(handler) as server, _client(server.url) as client:
        assert (await client.post("x", b"{}")).content == b'{"until": "close"}'


@pytest.mark.anyio
async def test_an_ipv6_literal_base_url() -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with _serve(_keep_alive, host="::1", name="[::1]") as server, _client(server.url) as c:
        assert (await c.post("x", b"{}")).status_code == 200
    assert b"host: [::1]:" in server.requests[0]


def test_a_header_with_a_line_break_is_refused_at_construction() -> None:
    with pytest.raises(UsageError, match="authorization"):
        Http1Transport(
            "http://127.0.0.1:1/v1",
            {"authorization": "Bearer k\r\nx-evil: 1"},
            max_connections=1,
            timeout=1,
            connect_timeout=1,
        )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made now with the openssl CLI."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("the openssl CLI is needed (CI is set)")
        pytest.skip("no openssl CLI")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.anyio
async def test_https_on_loopback_verified_against_a_trusted_certificate(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    async with _serve(_keep_alive, tls=server_side, name="localhost") as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with _client(server.url, ssl_context=trusting) as client:
            replies = [await client.post("x", b"{}") for _ in range(3)]
        async with _client(server.url) as untrusting:  # the default context does not trust it
            with pytest.raises(UntrustedCertificate, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.post("x", b"{}")
    assert [r.content for r in replies] == [b"{}"] * 3
    # one connection handshaken (the refused one never reached the handler), reused three times
    assert (server.connections, len(server.requests)) == (1, 3)
    assert b"host: localhost:" in server.requests[0]


@pytest.mark.anyio
async def test_a_resend_counts_as_a_request_in_the_run_the_day_and_the_attempt_log(
    tmp_path: Path,
) -> None:
    """The idle-close resend may have reached the server: the run's requests, the day's count
    (RPD, in the ledger) and the attempt log each count it, the log with a row saying so."""
    import json

    import pyarrow.parquet as pq

    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first = state.connections == 1
        while await _request(state, reader):
            if first and len(state.requests) == 2:  # the idle-close race: gone, nothing said
                w.close()
                return
            w.write(CHAT_OK)
            await w.drain()

    jobs = [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}]
    async with _serve(handler) as server:
        summary = await batcher.run(
            jobs, tmp_path, api_key="k", base_url=server.url, model="m", rpd=100,
            max_concurrency=1,
        )  # fmt: skip
    assert len(server.requests) == 3 and summary.ok == 2
    assert summary.requests == 3
    ledger = json.loads((tmp_path / "ledger.json").read_text())["models"]["m"]
    assert ledger["count"] == 3
    attempts = pq.read_table(tmp_path / "attempts").to_pylist()
    assert len(attempts) == 3
    resent = [a for a in attempts if a["error"] and "sent again" in a["error"]]
    assert len(resent) == 1 and resent[0]["job_id"] == "b"


@pytest.mark.anyio
async def test_an_answer_before_the_body_has_left_retires_the_connection() -> None:
    """A server may answer (a 413, a 401) while a large body is still leaving; the rest of that
    body would reach it as the start of the next request, so the connection is not reused."""
    first: list[bool] = []

    async def handler(state: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not first:
            first.append(True)
            state.requests.append(await reader.readuntil(b"\r\n\r\n"))
            w.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\n{}")
            await w.drain()
            await asyncio.sleep(3600)  # reads no more: the body stays in the client's buffer
        await _keep_alive(state, reader, w)

    async with _serve(handler) as server, _client(server.url) as client:
        big = b'{"x": "' + b"a" * (32 << 20) + b'"}'  # more than the socket buffers hold
        assert (await client.post("x", big)).status_code == 413
        assert (await client.post("x", b"{}")).status_code == 200
    assert server.connections == 2
