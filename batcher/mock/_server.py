"""Serving the mock provider over loopback: in the foreground, or on a thread inside a run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from .._config.limits import LimitTable, load_tiers
from .._core.errors import UsageError
from ._asgi import MockApp
from ._config import MockConfig
from ._faults import Faults
from ._http import HttpServer
from ._pipeline import Pipeline

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
    """The mock provider on ``127.0.0.1``: on a background thread (``start``, or as a context
    manager) or in the foreground (``serve_forever``); its own event loop either way."""

    def __init__(self, config: MockConfig | None = None, *, port: int = 0) -> None:
        self._pipeline = Pipeline(config or MockConfig())
        self.app = MockApp(self._pipeline)
        """The same mock as an ASGI app: ``app.state`` is the counters this server keeps."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(("127.0.0.1", port))
        except (OverflowError, OSError) as e:
            self._sock.close()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UsageError(f"cannot serve on 127.0.0.1 port {port}: {reason}") from None
        self.port: int = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._http: HttpServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def uploaded(self) -> dict[str, int]:
        """Files uploaded for requests to name (not batch inputs): their bytes, by id."""
        store = self._pipeline.batches.store
        return {name: len(store.files[name]) for name in store.mimes}

    def base_url(self, provider: str) -> str:
        """The base URL a client of ``provider``'s wire format should use."""
        return f"{self.url}/v1beta" if provider == "gemini" else f"{self.url}/v1"

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted or terminated (``batcher mock-server``)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._serve(lambda: None, on_signals=True))
        self._sock.close()

    def start(self) -> MockServer:
        """Serve on a daemon thread; return once the server accepts connections."""
        started = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(started.set),),
            daemon=True,
            name="batcher-mock",
        )
        self._thread.start()
        while not started.wait(0.01):
            if not self._thread.is_alive():
                raise RuntimeError("the mock provider failed to start")
        return self

    async def _serve(self, started: Callable[[], None], *, on_signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if on_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._stopping.set)
        server = self._http = HttpServer(self._pipeline.handle)
        await server.start(self._sock)
        started()
        try:
            await self._stopping.wait()
        finally:
            await server.close()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait (from another thread) until no connection is open and no answer is being made.

        After a client process has died, every request it sent is then counted: the kernel
        already holds what it wrote, and a few turns of the server's loop take in whatever
        connections and bytes were waiting, so an idle server has seen them all. Tests wait for
        this before reading the counters that a killed run's last requests could still move.
        """
        loop, http = self._loop, self._http
        if loop is None or http is None:
            raise RuntimeError("the mock provider is not serving")

        async def idle() -> None:
            while True:
                for _ in range(5):  # each turn polls the sockets: pending accepts and reads
                    await asyncio.sleep(0)
                if not http.connections and not http.tasks:
                    return
                await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(idle(), loop).result(timeout)

    def stop(self) -> None:
        """Stop serving and close every connection; a stopped server cannot start again."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
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
