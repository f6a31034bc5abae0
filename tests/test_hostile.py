"""Hostile answers: a small asyncio server that answers each request with what a broken or
malicious server might send. Each must end as a retryable error naming what was wrong (a cap by
its name), never as an internal error (exit 70) or a request held forever."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import batcher
from batcher import RetryableError
from batcher._core.errors import TimedOut
from batcher._wire.http1 import Http1Transport
from batcher._wire.http1_parser import ProtocolError, ResponseParser

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _hostile(answer: Answer) -> AsyncIterator[str]:
    """A server that reads each request's head and body, then runs ``answer``; yields its URL."""
    tasks: list[asyncio.Task[None]] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await r.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await r.readexactly(length)
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


async def _post(url: str, **kw: object) -> Exception:
    """The error a POST to ``url`` ends in (it must end in one)."""
    client = Http1Transport(
        url,
        {"authorization": "Bearer k"},
        max_connections=1,
        timeout=5,
        connect_timeout=5,
        **kw,  # type: ignore[arg-type]
    )
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
async def test_each_cap_is_a_retryable_error_naming_it(
    wire: bytes, caps: dict[str, int], named: str
) -> None:
    async with _hostile(_sends(wire)) as url:
        error = await _post(url, **caps)
    assert isinstance(error, RetryableError), repr(error)
    assert named in str(error)


@pytest.mark.anyio
async def test_a_gzip_bomb_meets_the_default_64_mib_cap() -> None:
    bomb = gzip.compress(b"\0" * (65 << 20), compresslevel=1)  # 65 MiB in about 300 KiB
    wire = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb)
    async with _hostile(_sends(wire + bomb)) as url:
        error = await _post(url)
    assert isinstance(error, RetryableError), repr(error)
    assert "over the 64 MiB cap once inflated (max_inflated)" in str(error)


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
    kw: dict[str, float], deadline: float
) -> None:
    async with _hostile(_trickle(0.05)) as url:
        client = Http1Transport(
            url,
            {},
            max_connections=1,
            connect_timeout=5,
            **kw,  # type: ignore[arg-type]
        )
        started = time.monotonic()
        try:
            with pytest.raises(TimedOut, match=f"within the {deadline:g} s request deadline"):
                await client.post("chat/completions", b"{}")
        finally:
            await client.aclose()
    assert deadline <= time.monotonic() - started < deadline + 1.0
