"""Quotas shared across lanes, processes and machines, behind one small interface.

``QuotaStore`` (see ``_base``) keeps, per account (a project, or a key) and model, the leases of
the processes sending and the day's request count. ``open_store`` picks the store a run names:
the local SQLite file by default (every run on this machine), ``memory`` (this process only), or
``redis://HOST:PORT/DB`` (every machine using that database). A lane talks to it through its
``SharedQuota``.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from ..._core.errors import UsageError
from ._base import Account, QuotaStore, Spent, StoreUnreachable
from ._memory import MemoryStore
from ._shared import LEASE_TTL, SharedQuota
from ._sqlite import SqliteStore

__all__ = [
    "LEASE_TTL",
    "Account",
    "MemoryStore",
    "QuotaStore",
    "SharedQuota",
    "Spent",
    "SqliteStore",
    "StoreUnreachable",
    "new_holder",
    "open_store",
    "spent_today",
    "state_dir",
]

STATE_FILE = "quota.sqlite3"


def state_dir() -> Path:
    """Where the local store lives: ``$BATCHER_STATE_DIR``, else the user's cache directory."""
    if env := os.environ.get("BATCHER_STATE_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "batcher"


async def open_store(spec: str | None) -> QuotaStore:
    """The store ``spec`` names: None or ``local`` (SQLite in ``state_dir()``), ``memory``, or a
    ``redis://`` URL (checked reachable). Raises ``UsageError`` for anything else."""
    if spec is None or spec == "local":
        return SqliteStore(state_dir() / STATE_FILE)
    if spec == "memory":
        return MemoryStore()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from ._redis import RedisStore

        store = RedisStore(spec)
        await store.check()
        return store
    raise UsageError(
        f"--quota-store {spec!r}: use local (the default), memory, or redis://HOST:PORT/DB"
    )


SEEN_WITHIN = 86_400.0
"""``batcher status`` lists the accounts a run has reserved on in this many seconds."""


async def spent_today(spec: str | None, wall: float) -> list[Spent]:
    """What all runs sharing the store ``spec`` names counted in the quota day of ``wall``, for
    the accounts a run reserved on in the last day. Runs against the embedded mock never write
    here; rows of a store written before ``seen`` was kept (mock ports among them) are left out
    rather than shown under labels that cannot tell two keys apart."""
    from ..._core.clock import quota_day

    store = await open_store(spec)
    try:
        rows = await store.spent(quota_day(wall).isoformat())
    finally:
        await store.aclose()
    return [r for r in rows if r.seen is not None and r.seen >= wall - SEEN_WITHIN]


def new_holder() -> str:
    """A name for this process's leases, unique across machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
