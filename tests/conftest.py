"""Shared fixtures: the mock provider on a free loopback port, and helpers to write job files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batcher.mock import MockServer


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh mock provider per test, on 127.0.0.1 and a free port."""
    with MockServer() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    """batcher runs anyio on asyncio (aiolimiter needs it)."""
    return "asyncio"
