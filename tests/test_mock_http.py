"""The mock's HTTP/1.1 server over real sockets: keep-alive, bodies, bad input, drops, stopping."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from batcher.mock import Faults, MockConfig, MockServer, mock_reply
from tests.helpers import mock_stats

StartMock = Callable[[MockConfig], MockServer]

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
POST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\nauthorization: Bearer k\r\n"
    b"content-length: %d\r\n\r\n" % len(BODY)
) + BODY
_BEARER = {"authorization": "Bearer k"}


def _connect(server: MockServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _read_answer(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
    """(head, body) of the next answer on ``sock``; what follows it stays in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    head = bytes(buffer[:end]).lower()
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buffer) < end + 4 + length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    body = bytes(buffer[end + 4 : end + 4 + length])
    del buffer[: end + 4 + length]
    return head, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_answers_pipelined_requests_in_order(mock_server: MockServer) -> None:
    with _connect(mock_server) as sock:
        sock.sendall(POST * 3)
        buffer = bytearray()
        ids = []
        for _ in range(3):
            head, body = _read_answer(sock, buffer)
            assert head.startswith(b"http/1.1 200 ok") and b"connection: close" not in head
            ids.append(json.loads(body)["id"])
        assert ids == sorted(ids) and len(set(ids)) == 3
    with httpx.Client(base_url=mock_server.url) as client:  # one pooled connection
        for _ in range(3):
            response = client.post("/v1/chat/completions", content=BODY, headers=_BEARER)
            assert response.status_code == 200
    assert mock_stats(mock_server)["accepted"] == 6


def test_a_chunked_body_is_read_whole(mock_server: MockServer) -> None:
    def pieces() -> Iterator[bytes]:
        yield BODY[:10]
        yield BODY[10:]

    response = httpx.post(
        mock_server.base_url("openai") + "/chat/completions", content=pieces(), headers=_BEARER
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.json()["choices"][0]["message"]["content"] == mock_reply("m", "hi")


def test_connection_close_is_honoured(mock_server: MockServer) -> None:
    with _connect(mock_server) as sock:
        sock.sendall(POST.replace(b"host: mock\r\n", b"host: mock\r\nconnection: close\r\n"))
        head, _ = _read_answer(sock, bytearray())
        assert b"connection: close" in head
        assert _closed(sock)


def test_a_half_closed_connection_still_gets_its_answer(mock_server: MockServer) -> None:
    with _connect(mock_server) as sock:
        sock.sendall(POST)
        sock.shutdown(socket.SHUT_WR)
        head, body = _read_answer(sock, bytearray())
        assert head.startswith(b"http/1.1 200") and json.loads(body)["object"]
        assert _closed(sock)


def test_an_expecting_client_is_told_to_continue(mock_server: MockServer) -> None:
    head, _, body = POST.partition(b"\r\n\r\n")
    with _connect(mock_server) as sock:
        sock.sendall(head + b"\r\nexpect: 100-continue\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer, _ = _read_answer(sock, bytearray())
        assert answer.startswith(b"http/1.1 200")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"HEAD /admin/stats HTTP/1.1\r\n\r\n", b"501"),
        (b"POST /v1/chat/completions HTTP/2.0\r\n\r\n", b"505"),
        (b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: x\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", b"400"),
        (b"POST / HTTP/1.1\r\ncontent-length: 999999999999\r\n\r\n", b"413"),
        (b"GET / HTTP/1.1\r\nx-big: " + b"a" * 70_000, b"431"),
    ],
)
def test_malformed_input_gets_an_error_and_a_closed_connection(
    mock_server: MockServer, request_bytes: bytes, status: bytes
) -> None:
    with _connect(mock_server) as sock:
        sock.sendall(request_bytes)
        head, _ = _read_answer(sock, bytearray())
        assert head.split(b" ")[1] == status and b"connection: close" in head
        assert _closed(sock)


def test_a_drop_breaks_the_connection_for_httpx(start_mock: StartMock) -> None:
    server = start_mock(MockConfig(faults=Faults(drop=1.0)))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{server.url}/v1/chat/completions", content=BODY, headers=_BEARER)
    assert mock_stats(server)["dropped"] == 1


def test_a_truncated_answer_is_a_200_with_half_its_json(start_mock: StartMock) -> None:
    whole = httpx.post(
        f"{start_mock(MockConfig()).url}/v1/chat/completions", content=BODY, headers=_BEARER
    )
    server = start_mock(MockConfig(faults=Faults(truncate=1.0)))
    cut = httpx.post(f"{server.url}/v1/chat/completions", content=BODY, headers=_BEARER)
    assert cut.status_code == 200 and len(cut.content) == len(whole.content) // 2
    with pytest.raises(json.JSONDecodeError):
        cut.json()


def test_aiohttp_gets_answers_and_sees_drops(start_mock: StartMock) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    good = start_mock(MockConfig())
    dropping = start_mock(MockConfig(faults=Faults(drop=1.0)))

    async def go() -> None:
        async with aiohttp.ClientSession(headers=_BEARER) as session:
            async with session.post(f"{good.url}/v1/chat/completions", data=BODY) as r:
                assert r.status == 200
                assert (await r.json())["choices"][0]["message"]["content"] == mock_reply("m", "hi")
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.post(f"{dropping.url}/v1/chat/completions", data=BODY) as r:
                    await r.read()

    asyncio.run(go())


def test_stop_closes_idle_connections() -> None:
    server = MockServer().start()
    sock = _connect(server)
    try:
        sock.sendall(POST)
        _read_answer(sock, bytearray())
        server.stop()
        assert _closed(sock)
    finally:
        sock.close()
    with pytest.raises(OSError):
        _connect(server)


def test_serve_forever_stops_cleanly_on_a_signal() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"from batcher.mock import MockServer; MockServer(port={port}).serve_forever()"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
