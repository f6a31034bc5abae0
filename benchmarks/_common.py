"""Shared by the benchmarks: a mock provider in its own process, job files, child CPU time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Mock:
    """A running ``batcher mock-server``: its URL (loopback) and process id."""

    url: str
    pid: int

    def cpu(self) -> float:
        """The server process's user + system CPU seconds so far."""
        return process_cpu(self.pid)

    def stats(self) -> dict[str, Any]:
        """The mock's counters (``GET /admin/stats``)."""
        stats: dict[str, Any] = httpx.get(f"{self.url}/admin/stats").json()
        return stats


@contextmanager
def mock_server(*args: str) -> Iterator[Mock]:
    """``batcher mock-server`` on a free loopback port in its own process, so its CPU is not
    counted as a client's; yields it once it answers."""
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
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield Mock(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # a mock holding a million batch lines exits slowly
            proc.kill()
            proc.wait()


@contextmanager
def mock_process(*args: str) -> Iterator[str]:
    """``batcher mock-server`` in its own process, so its CPU is not counted; yields its URL."""
    with mock_server(*args) as mock:
        yield mock.url


def write_jobs(path: Path, n: int, model: str = "bench-model") -> Path:
    with path.open("w") as f:
        for i in range(n):
            prompt = f"Job {i}: summarise the benefits of batching requests in one sentence."
            f.write(json.dumps({"id": f"j{i}", "prompt": prompt, "model": model}) + "\n")
    return path


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ChildRun:
    """One finished child process: its own CPU (user, system seconds, with any children it
    waited for), its wall time from start to exit, its exit code and what it printed."""

    user: float
    system: float
    wall: float
    returncode: int
    stdout: str

    @property
    def cpu(self) -> float:
        return self.user + self.system


def run_child(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``cmd`` to its end (killed after ``timeout`` s) and measure it with ``os.wait4``: the
    rusage of that child alone, whatever else (a mock server) this process has started."""
    with open(os.devnull, "rb") as stdin, tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode == -9:
        raise TimeoutError(f"{cmd[:4]} ... did not finish in {timeout:.0f} s")
    return ChildRun(usage.ru_utime, usage.ru_stime, wall, proc.returncode, text)
