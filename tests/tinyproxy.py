"""A real ``tinyproxy`` (Debian's package) on a free loopback port, for the proxy tests.

A test that needs it and cannot start it fails, never skips (on a developer machine too): a
proxy test skipped is a route nobody checked. ``.ci/run`` installs it. Its log (level
Connect: one line per request, ``Request (file descriptor N): POST http://...`` or ``CONNECT
host:port``) is how a test sees what went through it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_server import _free_port


@dataclass
class Tinyproxy:
    port: int
    log: Path
    url: str  # with the credentials, if it takes any

    def requests(self) -> list[str]:
        """The request lines the proxy was sent, in order (``POST http://...``, ``CONNECT ...``)."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split("): ", 1)[1] for line in text.splitlines() if "Request (file" in line]


@contextmanager
def tinyproxy(folder: Path, auth: tuple[str, str] | None = None) -> Iterator[Tinyproxy]:
    """A tinyproxy on 127.0.0.1, taking ``auth`` (user, password) as BasicAuth if given; every
    port may be tunnelled to (no ``ConnectPort`` line: tinyproxy's documented default)."""
    exe = shutil.which("tinyproxy")
    if exe is None:
        pytest.fail("tinyproxy is not installed (apt-get install tinyproxy; .ci/run installs it)")
    port = _free_port()
    log = folder / "tinyproxy.log"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        f'LogFile "{log}"',
        "LogLevel Connect",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if auth is not None:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")
    conf = folder / "tinyproxy.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() else ""
                    pytest.fail(f"tinyproxy did not start on port {port}: {err.strip()[:300]}")
                time.sleep(0.05)
        creds = f"{auth[0]}:{auth[1]}@" if auth else ""
        yield Tinyproxy(port, log, f"http://{creds}127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
