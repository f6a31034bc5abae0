"""The requests queued behind a lane's lock that its holder may let through ahead of itself.

A lane admits first come first served: the request holding its lock waits for its turn, and the
others queue for the lock. Where a token cap holds the first back (a second's tokens are spent,
or nearly), a smaller request behind it may fit in what is left without making the first any
later: the holder lets it through (backfilling, ``Fillers.fill``), and its waiter, woken by the
cancellation of its wait for the lock, returns the admission made for it. Prompts of several
hundred tokens packed in order into a second's 1,000 leave about a tenth of every second unused
otherwise. No request is made later by one let through ahead of it, so none waits for ever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import islice
from typing import TYPE_CHECKING

import anyio

from .pace import EARLY

if TYPE_CHECKING:
    from .lane import Lane

__all__ = ["LOOKAHEAD", "Fillers", "Waiter"]

LOOKAHEAD = 16
"""How many of the requests queued behind the holder it considers, oldest first: enough to find
one that fits (a lane whose tokens bind keeps about a second's requests ready), few enough that
a holder's every wake-up stays cheap."""


class Waiter:
    """One request queued for a lane's lock: what it would be charged, when it arrived, the
    scope its holder cancels when it lets it through, and the admission made for it then."""

    __slots__ = ("arrived", "entry", "fresh", "scope", "tokens")

    def __init__(self, tokens: int, fresh: Callable[[], int] | None, arrived: float) -> None:
        self.tokens = tokens
        self.fresh = fresh
        self.arrived = arrived
        self.scope = anyio.CancelScope()
        self.entry: list[float] | None = None

    def charge(self) -> int:
        """The tokens it is charged if it leaves now (its estimate now, where it has one)."""
        return self.fresh() if self.fresh is not None else self.tokens

    def admitted_entry(self) -> list[float]:
        """The admission its holder made for it (its wait was cancelled for nothing else)."""
        if self.entry is None:
            raise RuntimeError("a lane's waiter was woken without an admission")
        return self.entry


class Fillers:
    """The requests queued for one lane's lock, oldest first (a dict: insertion order, and
    O(1) removal as each leaves)."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: dict[Waiter, None] = {}

    def join(self, tokens: int, fresh: Callable[[], int] | None, arrived: float) -> Waiter:
        """A request of ``tokens`` queues for the lock."""
        waiter = Waiter(tokens, fresh, arrived)
        self.waiting[waiter] = None
        return waiter

    async def queue(
        self,
        tokens: int,
        fresh: Callable[[], int] | None,
        arrived: float,
        turn: Callable[[Waiter], Awaitable[list[float]]],
    ) -> list[float]:
        """A request of ``tokens`` queues for the lock and waits its ``turn``, unless the holder
        lets it through first (its scope cancelled, its admission made): the admission."""
        waiter = self.join(tokens, fresh, arrived)
        try:
            with waiter.scope:
                return await turn(waiter)
            return waiter.admitted_entry()  # let through by the holder: its scope was cancelled
        finally:
            self.leave(waiter)

    def leave(self, waiter: Waiter) -> None:
        """``waiter`` got the lock, was let through, or gave up."""
        self.waiting.pop(waiter, None)

    def ahead(self) -> list[Waiter]:
        """The oldest ``LOOKAHEAD`` still queued."""
        return list(islice(self.waiting, LOOKAHEAD))

    def admitted(self, waiter: Waiter, entry: list[float]) -> None:
        """The holder let ``waiter`` through with the admission ``entry``: wake it."""
        waiter.entry = entry
        self.leave(waiter)
        waiter.scope.cancel()

    def fillable(self, lane: Lane, now: float) -> bool:
        """Whether a request queued behind ``lane``'s holder could be let through now: the caps,
        not the pace or a pause, hold the holder back, and nothing else holds every request."""
        rpd, pace = lane.limits.rpd, lane.pace
        return not (
            lane.gate is not None
            or not lane.opening.is_open
            or lane.outage.down
            or (lane.quota is not None and lane.quota.left < 2)
            or (rpd is not None and lane.daily.spent(lane.clock.time()) + 2 > rpd)
            or pace.paused_until > now
            or pace.paced(1.0) > now + EARLY  # the pace holds any request behind it as much
        )

    def fill(self, lane: Lane, now: float, tokens: int, probe_at: float, start: float) -> float:
        """Let requests queued behind ``lane``'s holder of ``tokens`` (due to leave at ``start``)
        go now where the caps and the pace let them without making it later: a second's tokens,
        packed first come first served, leave a gap too small for the next prompt that a smaller
        one behind it fills. Return when the holder may leave."""
        pace = lane.pace
        for waiter in self.ahead():
            fill = waiter.charge()
            if lane.leave_time(now, fill, probe_at) > now:
                continue
            saved = pace.r_next, pace.t_next, lane.last_left
            entry = lane.commit(now, fill, arrived=waiter.arrived, count=False)
            if lane.leave_time(now, tokens, probe_at) > start:
                lane.take_back(entry, saved)
                continue
            lane.count_admission()
            self.admitted(waiter, entry)
        return start
