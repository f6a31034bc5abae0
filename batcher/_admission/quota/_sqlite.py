"""The local quota store: one SQLite file that every run on this machine shares.

Each call is one short write transaction (``BEGIN IMMEDIATE``), so two processes never both
read a count and both add to it; SQLite's lock and a busy timeout serialise the processes. A call
takes well under a millisecond and comes about once a second per lane, so it runs on the event
loop itself: a worker thread would cost more than it saves, and would let a virtual-time test's
clock run on while it waits. WAL mode lets ``batcher status`` read while runs write.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..._core.errors import UsageError
from ._base import Account, Spent

__all__ = ["SqliteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    account TEXT NOT NULL, model TEXT NOT NULL, holder TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (account, model, holder));
CREATE TABLE IF NOT EXISTS day (
    account TEXT NOT NULL, model TEXT NOT NULL, day TEXT NOT NULL, spent INTEGER NOT NULL,
    PRIMARY KEY (account, model, day));
CREATE TABLE IF NOT EXISTS account (id TEXT PRIMARY KEY, label TEXT NOT NULL, seen REAL);
"""


class SqliteStore:
    """Budgets in ``path``, shared by every process that opens the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._prepare(time.monotonic() + 30.0)
        except (OSError, sqlite3.Error) as e:
            raise UsageError(f"cannot open the quota store {path}: {e}") from None

    def _prepare(self, deadline: float) -> None:
        """WAL mode and the tables. Processes opening a new file at once can meet "database is
        locked" here at once, the busy timeout notwithstanding (switching to WAL and recovering a
        WAL do not wait on SQLite's busy handler): tried again until ``deadline``."""
        pause = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(account)")}
                if "seen" not in columns:  # a file written before ``seen`` was kept
                    try:
                        self._db.execute("ALTER TABLE account ADD COLUMN seen REAL")
                    except sqlite3.OperationalError as e:
                        if "duplicate column" not in str(e):  # not another process's, just now
                            raise
                return
            except sqlite3.OperationalError as e:
                busy = "locked" in str(e) or "busy" in str(e)
                if not busy or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)  # at start-up, before the run sends anything
                pause = min(pause * 2, 0.5)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one write transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    async def join(
        self, account: Account, model: str, holder: str, *, active: bool, ttl: float, now: float
    ) -> int:
        key = (account.id, model)

        def join(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM lease WHERE account=? AND model=? AND expires<?", (*key, now))
            if active:
                db.execute(
                    "INSERT INTO lease VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET "
                    "expires=excluded.expires",
                    (*key, holder, now + ttl),
                )
            else:
                db.execute(
                    "DELETE FROM lease WHERE account=? AND model=? AND holder=?", (*key, holder)
                )
            (count,) = db.execute(
                "SELECT COUNT(*) FROM lease WHERE account=? AND model=?", key
            ).fetchone()
            return int(count)

        return await self._run(join)

    async def reserve(
        self, account: Account, model: str, day: str, want: int, limit: int | None
    ) -> int:
        key = (account.id, model, day)

        def reserve(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT INTO account (id, label, seen) VALUES (?,?,?) ON CONFLICT DO UPDATE SET "
                "label=excluded.label, seen=excluded.seen",
                (account.id, account.label, time.time()),
            )
            row = db.execute(
                "SELECT spent FROM day WHERE account=? AND model=? AND day=?", key
            ).fetchone()
            spent = int(row[0]) if row else 0
            granted = want if limit is None else max(0, min(want, limit - spent))
            if granted:
                db.execute(
                    "INSERT INTO day VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET "
                    "spent=spent+excluded.spent",
                    (*key, granted),
                )
            return granted

        return await self._run(reserve)

    async def give_back(self, account: Account, model: str, day: str, n: int) -> None:
        def give_back(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE day SET spent=MAX(0, spent-?) WHERE account=? AND model=? AND day=?",
                (n, account.id, model, day),
            )

        await self._run(give_back)

    async def leave(self, holder: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM lease WHERE holder=?", (holder,)))

    async def spent(self, day: str) -> list[Spent]:
        def spent(db: sqlite3.Connection) -> list[Spent]:
            rows = db.execute(
                "SELECT COALESCE(a.label, d.account), d.model, d.spent, a.seen FROM day d "
                "LEFT JOIN account a ON a.id = d.account WHERE d.day=? ORDER BY 1, 2",
                (day,),
            ).fetchall()
            return [
                Spent(str(label), str(model), int(n), None if seen is None else float(seen))
                for label, model, n, seen in rows
            ]

        return await self._run(spent)

    async def aclose(self) -> None:
        self._db.close()
