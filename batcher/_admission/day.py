"""A lane's quota day: whether it sends nothing until the daily quota resets, and why.

A lane stops for the day when its own count (``DailyCount``, kept in the run's ledger) reaches
its RPD, when the runs sharing the account's limits have spent the day's requests between them
(``SharedQuota``, which counts them in blocks reserved from the shared store), or when the server
says the daily quota is spent (a per-day 429); once the day resets, it sends again.
"""

from __future__ import annotations

from .._config.limits import Limits
from .._core.clock import Clock, next_reset
from .._core.errors import QuotaExhausted
from .ledger import DailyCount
from .quota import SharedQuota

__all__ = ["QuotaDay"]


class QuotaDay:
    """One lane's count of the day's requests (its own, and the shared one if several processes
    share the account's limits) and why it stopped, if it did (``stopped``)."""

    def __init__(
        self, model: str, clock: Clock, daily: DailyCount, quota: SharedQuota | None
    ) -> None:
        self.model = model
        self.clock = clock
        self.daily = daily
        self.quota = quota
        self.stopped: QuotaExhausted | None = None

    def blocked(self, rpd: int | None) -> QuotaExhausted | None:
        """Why the lane sends nothing until a quota reset (at ``rpd`` requests a day), or None
        if it may send."""
        wall = self.clock.time()
        if self.stopped is not None and wall >= self.stopped.resets_at:
            self.stopped = None
        if self.stopped is None and rpd is not None and self.daily.spent(wall) >= rpd:
            why = (
                "no daily quota on this tier (RPD 0)"
                if rpd == 0
                else f"the day's {rpd:,} requests are spent"
            )
            self.stopped = QuotaExhausted(self.model, why, self.daily.resets_at(wall))
        return self.stopped

    def check(self, rpd: int | None) -> None:
        """Raise ``QuotaExhausted`` if the lane sends nothing until a quota reset."""
        self.blocked(rpd)
        if self.stopped is not None:
            raise self.stopped

    async def ensure(self, limits: Limits) -> None:
        """Raise ``QuotaExhausted`` unless one more request may be counted today: by this lane's
        own count first (its message says so plainly), then by the shared one."""
        self.check(limits.rpd)
        if self.quota is not None and not await self.quota.ensure(limits.rpm, limits.rpd):
            self.stopped = QuotaExhausted(
                self.model,
                f"the day's {limits.rpd:,} requests are spent (counted across the runs "
                f"sharing {self.quota.account.label} in {self.quota.store.where})",
                next_reset(self.clock.time()),
            )
            raise self.stopped

    def add(self) -> None:
        """Count a request admitted now."""
        self.daily.add(self.clock.time())
        if self.quota is not None:
            self.quota.spend()

    def server_says_spent(self, quota: str | None) -> None:
        """A per-day 429: the server says its daily quota (named ``quota``) is spent."""
        self.stopped = QuotaExhausted(
            self.model,
            f"the server says the daily quota is spent ({quota})",
            self.daily.resets_at(self.clock.time()),
        )
