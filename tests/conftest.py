"""Shared fixtures: the mock provider on a free loopback port, and helpers to write job files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from batcher.mock import MockConfig, MockServer
from tests.redis_server import flush, redis_server

# The machine running the suite is shared and noisy: a property's example is never failed for
# taking long (hypothesis' default 200 ms deadline failed a least-squares property under load);
# what a property asserts is its invariant, never its speed (benchmarks measure speed).
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_session: str) -> str:
    """A running redis-server's URL, its database emptied for this test."""
    flush(redis_session)
    return redis_session


@pytest.fixture(autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own quota store (runs share budgets through it, across tests otherwise)."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("BATCHER_STATE_DIR", str(path))
    return path


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh mock provider per test, on 127.0.0.1 and a free port."""
    with MockServer() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    """batcher runs anyio on the asyncio backend."""
    return "asyncio"


@pytest.fixture
def start_mock() -> Iterator[Callable[..., MockServer]]:
    """Start mock providers with a given config; all are stopped after the test."""
    servers: list[MockServer] = []

    def start(config: MockConfig) -> MockServer:
        server = MockServer(config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys for both providers in the environment, as a user would have them."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("GEMINI_API_KEY", "g-test")
