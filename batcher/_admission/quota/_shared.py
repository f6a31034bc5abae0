"""A lane's view of its shared budget: its share of the per-minute limits, and a block of the
day's requests reserved ahead and spent locally, so the store is asked about once a second, not
once a request."""

from __future__ import annotations

from ..._core.clock import Clock, next_reset, quota_day
from ._base import Account, QuotaStore

__all__ = ["LEASE_TTL", "SharedQuota"]

LEASE_TTL = 5.0
"""Seconds a lease lives unless renewed: how long a dead process keeps a share."""
BLOCK_SECONDS = 2.0
"""A block of the day's requests is about this many seconds of the lane's rate."""
MAX_BLOCK = 256
UNLIMITED_RATE = 50.0
"""Requests per second assumed when sizing blocks for a lane without an RPM."""


class SharedQuota:
    """One (account, model) budget as one process's lane sees it.

    ``share`` is the part of the per-minute limits this process may use: one over the processes
    with demand (``beat`` renews this process's lease and reads how many hold one). ``left`` is
    what remains of the block of today's requests reserved in the store; ``ensure`` reserves the
    next block when it runs out, never past the daily limit.
    """

    def __init__(
        self, store: QuotaStore, account: Account, model: str, clock: Clock, holder: str
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

    async def beat(self, *, active: bool) -> None:
        """Renew (or drop, when idle) this process's lease and update its share."""
        holders = await self.store.join(
            self.account,
            self.model,
            self.holder,
            active=active,
            ttl=LEASE_TTL,
            now=self.clock.time(),
        )
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
        self.left = await self.store.reserve(
            self.account, self.model, day, self._block(rpm, rpd), rpd
        )
        return self.left > 0

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
        """Give back what is left of the block."""
        if self.left > 0 and self._day is not None:
            await self.store.give_back(self.account, self.model, self._day, self.left)
            self.left = 0
