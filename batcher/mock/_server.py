"""Serving the mock provider over loopback: in the foreground, or on a thread inside a run."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from .._errors import UsageError
from .._limits import LimitTable, load_tiers
from ._asgi import create_app
from ._config import MockConfig
from ._faults import Faults

__all__ = ["PRESETS", "MockServer", "preset"]

PRESETS: dict[str, MockConfig] = {
    "instant": MockConfig(),
    "default": MockConfig(latency_ms=(5.0, 30.0)),
    "realistic": MockConfig(latency_ms=(20.0, 200.0)),
    "faulty": MockConfig(
        latency_ms=(5.0, 30.0),
        faults=Faults(error_500=0.05, error_503=0.03, drop=0.02, truncate=0.01),
    ),
}
"""Named mock behaviours for ``--mock PRESET``."""


def preset(name: str) -> MockConfig:
    """A named behaviour, or a tier's name: default latency and that tier's limits enforced."""
    if name in PRESETS:
        return PRESETS[name]
    tiers = load_tiers()[2]
    if name in tiers:
        return MockConfig(latency_ms=PRESETS["default"].latency_ms, limits=LimitTable(tiers[name]))
    raise UsageError(
        f"unknown mock preset {name!r}; choose one of {', '.join([*PRESETS, *tiers])}"
    ) from None


class MockServer:
    """The mock provider on ``127.0.0.1``, on a background thread; use as a context manager."""

    def __init__(self, config: MockConfig | None = None, *, port: int = 0) -> None:
        self.app = create_app(config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(
            # critical: a deliberately dropped connection must not print a traceback
            uvicorn.Config(self.app, log_level="critical", access_log=False, lifespan="off")
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base_url(self, provider: str) -> str:
        """The base URL a client of ``provider``'s wire format should use."""
        return f"{self.url}/v1beta" if provider == "gemini" else f"{self.url}/v1"

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (``batcher mock-server``)."""
        self._server.run(sockets=[self._sock])

    def start(self) -> MockServer:
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name="batcher-mock",
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock provider failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
