"""Hostile answers: a small asyncio server that answers each request with what a broken or
malicious server might send. Each must end as a retryable error naming what was wrong (a cap by
its name), never as an internal error (exit 70) or a request held forever: on the lean client
(``http1``) and on aiohttp (``AiohttpTransport``, which carries the batch APIs' calls) alike."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batcher
from batcher import RetryableError
from batcher._core.errors import TimedOut
from batcher._wire.answer_caps import ProtocolError
from batcher._wire.http1 import Http1Transport
from batcher._wire.http1_parser import ResponseParser
from batcher._wire.transport import AiohttpTransport, Transport

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _hostile(answer: Answer) -> AsyncIterator[str]:
    """A server that reads each request's head and body, then runs ``answer``; yields its URL."""
    tasks: list[asyncio.Task[None]] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await r.readuntil(b"\r\n\r\n")
            _, sized, rest = head.lower().partition(b"content-length: ")  # none on a GET
            await r.readexactly(int(rest.split(b"\r\n")[0]) if sized else 0)
            await answer(w)
            await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await server.wait_closed()


def _sends(data: bytes) -> Answer:
    async def answer(w: asyncio.StreamWriter) -> None:
        w.write(data)

    return answer


@pytest.fixture(params=["http1", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which transport: each one batcher ships must hold a hostile server to the same caps."""
    return str(request.param)


def _client(kind: str, url: str, **kw: object) -> Transport:
    options: dict[str, object] = {"max_connections": 1, "timeout": 5, "connect_timeout": 5, **kw}
    make = Http1Transport if kind == "http1" else AiohttpTransport
    return make(url, {"authorization": "Bearer k"}, **options)  # type: ignore[arg-type]


async def _post(url: str, kind: str = "http1", /, **kw: object) -> Exception:
    """The error a POST to ``url`` ends in (it must end in one)."""
    client = _client(kind, url, **kw)
    try:
        await client.post("chat/completions", b"{}")
    except Exception as e:
        return e
    finally:
        await client.aclose()
    raise AssertionError("the POST succeeded")


DIGITS = b"9" * 5000  # int() refuses more than 4,300 digits: ValueError, were it asked


def test_a_content_length_of_thousands_of_digits_is_a_protocol_error() -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match=r"content-length of 5,000 digits.*64 MiB cap"):
        parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: " + DIGITS + b"\r\n\r\n")
    # leading zeros are not size: 0...01 is one byte
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: " + b"0" * 5000 + b"1\r\n\r\nx")
    assert parser.content == b"x"


@pytest.mark.anyio
async def test_a_content_length_of_thousands_of_digits_is_retried_not_a_crash(
    tmp_path: Path,
) -> None:
    wire = b"HTTP/1.1 200 OK\r\ncontent-length: " + DIGITS + b"\r\n\r\n{}"
    async with _hostile(_sends(wire)) as url:
        error = await _post(url)
        assert isinstance(error, RetryableError), repr(error)
        assert "5,000 digits" in str(error)
        # and a whole run: the job ends in a retryable error (exit 1), not an internal one (70)
        summary = await batcher.run(
            [{"id": "a", "prompt": "x"}],
            tmp_path,
            base_url=url,
            api_key="k",
            model="m",
            max_attempts=1,
        )
    assert (summary.errors, summary.exit_code) == (1, 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("wire", "caps", "named"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 2000 + b"\r\ncontent-length: 2\r\n\r\n{}",
            {"max_head": 1024},
            "head over the 1 KiB cap (max_head)",
            id="head",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 2000,  # and no end of the head in sight
            {"max_head": 1024},
            "head over the 1 KiB cap (max_head)",
            id="head-unended",
        ),
    ],
)
async def test_a_head_over_its_cap_is_a_retryable_error_naming_it(
    wire: bytes, caps: dict[str, int], named: str
) -> None:
    """The lean client's own parser; aiohttp's (llhttp) has limits of its own (8 KiB a line)."""
    async with _hostile(_sends(wire)) as url:
        error = await _post(url, **caps)
    assert isinstance(error, RetryableError), repr(error)
    assert named in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("wire", "caps", "named"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2048\r\n\r\n",  # refused before a byte of it
            {"max_body": 1024},
            "body over the 1 KiB cap (max_body)",
            id="content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            + (b"200\r\n" + b"x" * 512 + b"\r\n") * 3,  # 512-byte chunks: the third passes 1 KiB
            {"max_body": 1024},
            "body over the 1 KiB cap (max_body)",
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * 2048,  # until close
            {"max_body": 1024},
            "body over the 1 KiB cap (max_body)",
            id="until-close",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ncontent-length: %d\r\n\r\n%b"
            % (len(zlib.compress(b"\0" * (2 << 20))), zlib.compress(b"\0" * (2 << 20))),
            {"max_inflated": 1 << 20},  # 2 KiB on the wire, 2 MiB inflated
            "body over the 1 MiB cap once inflated (max_inflated)",
            id="inflated",
        ),
    ],
)
async def test_each_body_cap_is_a_retryable_error_naming_it(
    kind: str, wire: bytes, caps: dict[str, int], named: str
) -> None:
    async with _hostile(_sends(wire)) as url:
        error = await _post(url, kind, **caps)
    assert isinstance(error, RetryableError), repr(error)
    assert named in str(error)


@pytest.mark.anyio
async def test_a_gzip_bomb_meets_the_default_64_mib_cap(kind: str) -> None:
    bomb = gzip.compress(b"\0" * (65 << 20), compresslevel=1)  # 65 MiB in about 300 KiB
    wire = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb)
    async with _hostile(_sends(wire + bomb)) as url:
        error = await _post(url, kind)
    assert isinstance(error, RetryableError), repr(error)
    assert "over the 64 MiB cap once inflated (max_inflated)" in str(error)


@pytest.mark.anyio
async def test_a_gzip_body_cut_short_is_an_error_and_every_member_is_read(kind: str) -> None:
    """aiohttp alone hands on what inflated of a gzip body cut short, as a 200: each client
    undoes the coding with the lean parser's ``decode_body``, which reads every member too."""
    cut = gzip.compress(b'{"answer": 1}')[:-6]  # the trailer's size and part of its CRC gone
    wire = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(cut)
    async with _hostile(_sends(wire + cut)) as url:
        error = await _post(url, kind)
    assert isinstance(error, RetryableError), repr(error)
    assert "gzip body that does not decode" in str(error)
    whole = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    wire = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(whole)
    async with _hostile(_sends(wire + whole)) as url:
        client = _client(kind, url)
        try:
            assert (await client.post("chat/completions", b"{}")).content == b'{"a": 1}'
        finally:
            await client.aclose()


def _trickle(every: float) -> Answer:
    """A head, then a chunked body a byte at a time, one per ``every`` seconds, forever: never
    silent for the read timeout, never done."""

    async def answer(w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            w.write(b"1\r\nx\r\n")
            await w.drain()
            await asyncio.sleep(every)

    return answer


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kw", "deadline"),
    [({"timeout": 0.3, "deadline": 0.8}, 0.8), ({"timeout": 0.3}, 0.6)],
    ids=["given", "default-twice-the-timeout"],
)
async def test_a_server_trickling_bytes_meets_the_request_deadline(
    kind: str, kw: dict[str, float], deadline: float
) -> None:
    async with _hostile(_trickle(0.05)) as url:
        client = _client(kind, url, **kw)
        started = time.monotonic()
        try:
            with pytest.raises(TimedOut, match=f"within the {deadline:g} s request deadline"):
                await client.post("chat/completions", b"{}")
        finally:
            await client.aclose()
    # not before the deadline (the message says it was the deadline; no upper margin: the
    # machine may be slow)
    assert time.monotonic() - started >= deadline


# --- a batch API's call (aiohttp's ``request``): its answer may be a whole results file ------


async def _get(url: str, **kw: object) -> bytes | Exception:
    """What a batch API's GET of ``url`` ends in: the body, or the error."""
    client = _client("aiohttp", url, **kw)
    try:
        return (await client.request("GET", "files/f/content")).content
    except Exception as e:
        return e
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_a_batch_file_is_held_to_the_file_cap_not_a_posts() -> None:
    lines = b'{"custom_id": "a"}\n' * 200  # 3,800 bytes, over a POST's cap of 1 KiB
    wire = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(lines), lines)
    async with _hostile(_sends(wire)) as url:
        assert await _get(url, max_body=1024) == lines
        error = await _get(url, max_file=2048)
    assert isinstance(error, RetryableError), repr(error)
    assert "body over the 2 KiB cap (max_file)" in str(error)
    bomb = gzip.compress(b"\0" * (4 << 20))  # 4 MiB inflated
    wire = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb)
    async with _hostile(_sends(wire + bomb)) as url:
        error = await _get(url, max_file=1 << 20)
    assert isinstance(error, RetryableError), repr(error)
    assert "body over the 1 MiB cap once inflated (max_file)" in str(error)


@pytest.mark.anyio
async def test_a_trickled_batch_file_meets_the_deadline() -> None:
    """A second more per 64 KiB received: a byte at a time earns nothing that shows."""
    async with _hostile(_trickle(0.05)) as url:
        started = time.monotonic()
        error = await _get(url, timeout=0.3, deadline=0.8)
    assert isinstance(error, TimedOut), repr(error)
    assert "within the 0.8 s request deadline" in str(error)
    assert time.monotonic() - started >= 0.8  # the message says it was the deadline


@pytest.mark.anyio
async def test_an_address_that_drops_connections_is_passed_over_for_the_next(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Happy eyeballs: a host whose first address swallows connects silently (as a dual-stack
    host whose IPv6 is dropped does) is reached on its next address after 250 ms, not after the
    connect timeout. The first address here is 127.0.0.2 with its accept queue full (the kernel
    drops the SYNs), the second 127.0.0.1, where the server is."""
    import socket

    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
    async with _hostile(_sends(answer)) as url:
        port = int(url.split(":")[2].split("/")[0])
        hole = socket.socket()
        hole.bind(("127.0.0.2", port))
        hole.listen(0)
        held = socket.create_connection(("127.0.0.2", port))  # the queue is now full
        real = socket.getaddrinfo

        def resolve(host: Any, *args: Any, **kw: Any) -> Any:
            if host != "dual.test":
                return real(host, *args, **kw)
            first = real("127.0.0.2", *args, **kw)
            return first + real("127.0.0.1", *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        client = _client(kind, f"http://dual.test:{port}/v1", connect_timeout=3)
        try:
            reply = await client.post("chat/completions", b"{}")
        finally:
            await client.aclose()
            held.close()
            hole.close()
    assert reply.status_code == 200


def test_a_gzip_body_of_several_members_is_read_whole() -> None:
    """RFC 1952: a gzip file may be several members end to end; each is inflated, not only the
    first (zero padding after the last is allowed, as gzip(1) allows it)."""
    body = gzip.compress(b'{"a": ') + gzip.compress(b"1}") + b"\0\0"
    parser = ResponseParser()
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
    assert parser.feed(head + body)
    assert parser.content == b'{"a": 1}'


@pytest.mark.parametrize("coding", ["br", "zstd", "compress"])
def test_a_content_coding_never_asked_for_is_a_protocol_error(coding: str) -> None:
    parser = ResponseParser()
    head = f"HTTP/1.1 200 OK\r\ncontent-encoding: {coding}\r\ncontent-length: 2\r\n\r\n"
    with pytest.raises(ProtocolError, match=f"'{coding}' content coding, which was not asked"):
        parser.feed(head.encode() + b"{}")


_PIECES = [
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 X\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
    b"content-length: 2\r\n", b"content-length: -1\r\n", b"content-length: 1e9\r\n",
    b"content-length: " + b"9" * 40 + b"\r\n", b"transfer-encoding: chunked\r\n",
    b"transfer-encoding: gzip, chunked\r\n", b"content-encoding: gzip\r\n",
    b"content-encoding: br\r\n", b"connection: close\r\n", b"x: \x00\xff\r\n", b"bad line\r\n",
    b"\r\n", b"{}", b"0\r\n\r\n", b"ffffffffffffffffffff\r\n", b"2;ext\r\n{}\r\n", b"\r",
    b"\n", gzip.compress(b"{}"), gzip.compress(b"{}")[:7], b"\x00" * 9,
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=24)), max_size=14),
    cuts=st.lists(st.integers(0, 1000), max_size=6),
)
def test_any_bytes_parse_or_are_a_protocol_error_never_a_crash(
    parts: list[bytes], cuts: list[int]
) -> None:
    """Hostile framing of every kind (CL and TE together, huge or negative sizes, bombs cut
    short, stray bytes, NULs), fed in any split: the parser completes, waits for more, or raises
    ``ProtocolError`` (retried by the transport), and ends at EOF the same way; never another
    exception, which would end a run as an internal error."""
    wire = b"".join(parts)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    parser = ResponseParser(max_head=4096, max_body=1 << 16, max_inflated=1 << 16)
    try:
        for piece in pieces:
            if parser.feed(piece):
                break
        else:
            parser.eof()
    except ProtocolError:
        pass
