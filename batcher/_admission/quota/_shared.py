"""A lane's view of its shared budget: its share of the per-minute limits, and a block of the
day's requests reserved ahead and spent locally, so the store is asked about once a second, not
once a request.

A store that cannot be reached (a Redis server lost mid-run) is waited for, never guessed at: the
lane spends what is left of the block it reserved, then holds its admissions while the store is
asked again at growing intervals; it goes on when the store answers, and after ``max_outage``
raises ``StoreOutage`` (exit 75, finished jobs kept). Renewing the lease meanwhile is skipped (the
share stays as it was); a block that cannot be given back at the end stays counted (the count
errs high, never low).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..._core.clock import Clock, next_reset, quota_day
from ..._core.errors import StoreOutage
from ._base import Account, QuotaStore, StoreUnreachable

__all__ = ["LEASE_TTL", "SharedQuota"]

log = logging.getLogger("batcher")

T = TypeVar("T")

LEASE_TTL = 5.0
"""Seconds a lease lives unless renewed: how long a dead process keeps a share."""
BLOCK_SECONDS = 2.0
"""A block of the day's requests is about this many seconds of the lane's rate."""
MAX_BLOCK = 256
UNLIMITED_RATE = 50.0
"""Requests per second assumed when sizing blocks for a lane without an RPM."""
FIRST_RETRY = 0.25
"""Seconds before the store is asked again after it could not be reached; doubled each time."""
LONGEST_RETRY = 5.0


class SharedQuota:
    """One (account, model) budget as one process's lane sees it.

    ``share`` is the part of the per-minute limits this process may use: one over the processes
    with demand (``beat`` renews this process's lease and reads how many hold one). ``left`` is
    what remains of the block of today's requests reserved in the store; ``ensure`` reserves the
    next block when it runs out, never past the daily limit.
    """

    def __init__(
        self,
        store: QuotaStore,
        account: Account,
        model: str,
        clock: Clock,
        holder: str,
        *,
        max_outage: float = 1800.0,
    ) -> None:
        self.store = store
        self.account = account
        self.model = model
        self.clock = clock
        self.holder = holder
        self.share = 1.0
        self.left = 0
        self._day: str | None = None
        self._day_ends = float("-inf")  # when ``_day`` ends (the next reset), wall clock
        self._joined = False
        self.max_outage = max_outage
        self.down_since: float | None = None
        """Since when (monotonic) the store has not been reachable, if it is not."""
        self.failures = 0
        """Calls in a row that could not reach the store."""

    async def beat(self, *, active: bool) -> None:
        """Renew (or drop, when idle) this process's lease and update its share; while the store
        cannot be reached, the share stays as it was."""
        try:
            holders = await self.store.join(
                self.account,
                self.model,
                self.holder,
                active=active,
                ttl=LEASE_TTL,
                now=self.clock.time(),
            )
        except StoreUnreachable as e:
            self._lost(e)
            return
        self._reached()
        self._joined = True
        self.share = 1.0 / max(1, holders if active else holders + 1)

    async def ensure(self, rpm: int | None, rpd: int | None) -> bool:
        """Whether one more request may be counted today (reserving a block if need be)."""
        wall = self.clock.time()
        if wall >= self._day_ends:
            today = quota_day(wall).isoformat()
            if today != self._day:
                self._day, self.left = today, 0  # a block of yesterday's requests is no use today
            self._day_ends = next_reset(wall)
        day = self._day
        assert day is not None
        if self.left > 0:
            return True
        if not self._joined:
            await self.beat(active=True)
        want = self._block(rpm, rpd)
        self.left = await self._ask(
            lambda: self.store.reserve(self.account, self.model, day, want, rpd)
        )
        return self.left > 0

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call``'s answer, asking again with backoff while the store cannot be reached (the
        lane's admissions wait meanwhile); ``StoreOutage`` once it has not been for longer than
        ``max_outage``."""
        wait = FIRST_RETRY
        while True:
            try:
                result = await call()
            except StoreUnreachable as e:
                self._lost(e)
                assert self.down_since is not None
                lasted = self.clock.monotonic() - self.down_since
                if lasted > self.max_outage:
                    raise StoreOutage(self.store.where, lasted, str(e)) from None
                await self.clock.sleep(min(wait, self.max_outage - lasted + 0.01))
                wait = min(LONGEST_RETRY, wait * 2)
                continue
            self._reached()
            return result

    def _lost(self, error: StoreUnreachable) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = self.clock.monotonic()
            log.warning(
                "the quota store at %s is unreachable (%s); %s holds its requests beyond those "
                "already reserved, and asks again until it is back (at most --max-outage)",
                self.store.where,
                error,
                self.model,
            )

    def _reached(self) -> None:
        if self.down_since is not None:
            log.warning(
                "the quota store at %s answers again after %.0f s; %s goes on",
                self.store.where,
                self.clock.monotonic() - self.down_since,
                self.model,
            )
        self.down_since = None
        self.failures = 0

    def _block(self, rpm: int | None, rpd: int | None) -> int:
        rate = rpm * self.share / 60 if rpm else UNLIMITED_RATE
        block = max(1, min(MAX_BLOCK, int(rate * BLOCK_SECONDS)))
        if rpd is not None:
            block = min(block, max(1, rpd // 100))  # a dead process strands at most 1% of a day
        return block

    def spend(self) -> None:
        """Count one request admitted (after ``ensure`` said yes)."""
        self.left -= 1

    async def close(self) -> None:
        """Give back what is left of the block; if the store cannot be reached, it stays
        counted (high, never low), and the run still ends as it would."""
        if self.left > 0 and self._day is not None:
            try:
                await self.store.give_back(self.account, self.model, self._day, self.left)
            except StoreUnreachable as e:
                log.warning(
                    "could not give back %d unsent requests of %s to the quota store at %s (%s): "
                    "they stay counted today",
                    self.left,
                    self.model,
                    self.store.where,
                    e,
                )
            self.left = 0
