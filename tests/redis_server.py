"""A real ``redis-server`` (Debian's package) on a free loopback port, for the Redis quota store.

Without the program the tests skip, except under CI (``CI`` set), where they fail: ``.ci/run``
installs it, so a missing server there is a broken install, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must have redis-server (.ci/run installs it)")
    pytest.skip(f"{why} (apt-get install redis-server)")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up, if locked
    except OSError:
        return False


class RedisProcess:
    """A ``redis-server`` on one port, that a test may stop and start again on that port (a
    store lost and back mid-run); ``password`` makes the server require one."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            _unavailable("redis-server is not installed")
        assert exe is not None
        self.exe, self.folder, self.password = exe, folder, password
        self.port = _free_port()
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = proc = subprocess.Popen(
            args, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                _unavailable(f"redis-server did not start (exit {proc.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server at once: its clients' next calls find the port closed."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Start ``redis-server`` with no persistence; yield its URL (database 0)."""
    server = RedisProcess(folder)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def flush(url: str) -> None:
    """Empty the database at ``url``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
