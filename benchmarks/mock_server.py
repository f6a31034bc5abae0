"""Requests per second the mock provider answers in its own process (no latency, no limits).

The server is ``python -m batcher mock-server`` on a free loopback port; the load comes from
another process over 32 keep-alive HTTP/1.1 connections, each POSTing a small chat body and
waiting for the answer before sending the next: ``wrk`` if it is installed (Debian's ``wrk``),
else a raw-socket asyncio client in a child process. Besides requests per second it prints the
server's CPU time per request, which a busy machine disturbs less.

    python benchmarks/mock_server.py [--requests 50000] [--connections 32] [--client wrk|python]
        [--server batcher|uvicorn-httptools|uvicorn-h11]

``--server uvicorn-*`` serves the same pipeline as a bare ASGI app under uvicorn instead (uvicorn
and, for httptools, httptools must be installed): the alternative this server was measured against.

Figures on the project's 2-core machine, wrk, 32 connections, runs interleaved (the machine is
shared, so one run varies by a third from the next): the asyncio server 5,000-10,400 requests/s,
median about 7,400 (96-200 us of server CPU a request); uvicorn with httptools 3,100-5,300,
median about 4,200 (186-275 us); uvicorn with h11 1,800-2,200 (450-550 us). The Starlette app it
replaced answered about 700 (480-600 us).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PATH = "/v1/chat/completions"
BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [
            {"role": "user", "content": "Job 1: summarise the benefits of batching in a sentence."}
        ],
    }
).encode()
MAX_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command(kind: str, port: int) -> list[str]:
    if kind == "batcher":
        return [sys.executable, "-m", "batcher", "mock-server", "--port", str(port)]
    http = kind.removeprefix("uvicorn-")
    return [
        *(sys.executable, "-m", "uvicorn", "--factory", "batcher.mock:create_app"),
        *("--host", "127.0.0.1", "--port", str(port), "--http", http, "--loop", "asyncio"),
        *("--log-level", "critical", "--no-access-log", "--lifespan", "off"),
    ]


@contextmanager
def server(kind: str) -> Iterator[tuple[int, int]]:
    """The server in its own process; yields (its pid, its port) once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen(server_command(kind, port), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_WRK_LUA = """wrk.method = "POST"
wrk.body = [=[{body}]=]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
"""


def drive_wrk(port: int, requests: int, connections: int, rate_guess: float) -> tuple[int, int]:
    """(requests answered, non-2xx answers) from ``wrk`` running for about ``requests``."""
    seconds = max(2, min(MAX_SECONDS, round(requests / rate_guess)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_LUA.format(body=BODY.decode()))
        script.flush()
        out = subprocess.run(
            [
                *("wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name),
                f"http://127.0.0.1:{port}{PATH}",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    done = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        print(f"  wrk: socket errors: {errors.group(1)}")
    return int(done.group(1)) if done else 0, int(bad.group(1)) if bad else 0


class _Client(asyncio.Protocol):
    """One keep-alive connection: sends the request, reads the whole answer, sends again."""

    def __init__(self, request: bytes, shared: dict[str, int], finished: asyncio.Future[None]):
        self.request = request
        self.shared = shared
        self.finished = finished
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if self.shared["left"] <= 0:
            assert self.transport is not None
            self.transport.close()
            return
        self.shared["left"] -= 1
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        length = int(re.search(rb"content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        if len(self.buffer) < end + 4 + length:
            return
        if not head.startswith(b"http/1.1 200"):
            self.shared["bad"] += 1
        self.shared["done"] += 1
        self.buffer = self.buffer[end + 4 + length :]
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared["open"] -= 1
        if self.shared["open"] == 0 and not self.finished.done():
            self.finished.set_result(None)


async def _python_load(port: int, requests: int, connections: int) -> tuple[int, int]:
    request = (
        f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer bench\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    shared = {"left": requests, "done": 0, "bad": 0, "open": connections}
    for _ in range(connections):
        await loop.create_connection(lambda: _Client(request, shared, finished), "127.0.0.1", port)
    try:
        await asyncio.wait_for(finished, MAX_SECONDS)
    except TimeoutError:
        print(f"  stopped after {MAX_SECONDS:.0f} s")
    return shared["done"], shared["bad"]


def drive_python(port: int, requests: int, connections: int) -> tuple[int, int]:
    """(requests answered, non-200 answers) from the asyncio client in a child process."""
    out = subprocess.run(
        [sys.executable, __file__, "--load-only", str(port), str(requests), str(connections)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    done, bad = out.split()
    return int(done), int(bad)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000, help="how many to send (about)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--client", choices=["wrk", "python"], default=None)
    ap.add_argument(
        "--server", choices=["batcher", "uvicorn-httptools", "uvicorn-h11"], default="batcher"
    )
    ap.add_argument("--load-only", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_only:
        done, bad = asyncio.run(_python_load(*args.load_only))
        print(done, bad)
        return
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    with server(args.server) as (pid, port):
        drive_python(port, 500, 4)  # warm up
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        if client == "wrk":
            done, bad = drive_wrk(port, args.requests, args.connections, rate_guess=5_000)
        else:
            done, bad = drive_python(port, args.requests, args.connections)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    print(f"server={args.server} client={client} connections={args.connections}")
    print(f"  {done:,} requests in {wall:.2f} s: {done / wall:,.0f} requests/s")
    print(f"  server CPU {cpu / max(done, 1) * 1e6:.0f} us/request ({done / cpu:,.0f} per CPU s)")
    if bad:
        print(f"  {bad:,} answers were not 200")


if __name__ == "__main__":
    main()
