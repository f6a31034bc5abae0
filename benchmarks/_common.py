"""Shared by the benchmarks: a mock provider in its own process, job files, child CPU time."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def mock_process(*args: str) -> Iterator[str]:
    """``batcher mock-server`` in its own process, so its CPU is not counted; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batcher", "mock-server", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/admin/stats")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def write_jobs(path: Path, n: int, model: str = "bench-model") -> Path:
    with path.open("w") as f:
        for i in range(n):
            prompt = f"Job {i}: summarise the benefits of batching requests in one sentence."
            f.write(json.dumps({"id": f"j{i}", "prompt": prompt, "model": model}) + "\n")
    return path


def child_cpu(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (user + sys CPU seconds of it and its children, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall
