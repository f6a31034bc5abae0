"""The in-process quota store: budgets shared only by the lanes of one process."""

from __future__ import annotations

import time
from collections import defaultdict

from ._base import Account, Spent

__all__ = ["MemoryStore"]


class MemoryStore:
    """Leases and day counts in dictionaries; what a run without a shared store uses."""

    where = "memory"

    def __init__(self) -> None:
        self._leases: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._days: dict[tuple[str, str, str], int] = defaultdict(int)  # (id, model, day)
        self._labels: dict[str, str] = {}
        self._seen: dict[str, float] = {}

    async def join(
        self, account: Account, model: str, holder: str, *, active: bool, ttl: float, now: float
    ) -> int:
        leases = self._leases[(account.id, model)]
        for h in [h for h, expires in leases.items() if expires < now]:
            del leases[h]
        if active:
            leases[holder] = now + ttl
        else:
            leases.pop(holder, None)
        return len(leases)

    async def reserve(
        self, account: Account, model: str, day: str, want: int, limit: int | None
    ) -> int:
        self._labels[account.id] = account.label
        self._seen[account.id] = time.time()
        key = (account.id, model, day)
        granted = want if limit is None else max(0, min(want, limit - self._days[key]))
        self._days[key] += granted
        return granted

    async def give_back(self, account: Account, model: str, day: str, n: int) -> None:
        key = (account.id, model, day)
        self._days[key] = max(0, self._days[key] - n)

    async def leave(self, holder: str) -> None:
        for leases in self._leases.values():
            leases.pop(holder, None)

    async def spent(self, day: str) -> list[Spent]:
        return [
            Spent(self._labels.get(a, a), m, n, self._seen.get(a))
            for (a, m, d), n in sorted(self._days.items())
            if d == day
        ]

    async def aclose(self) -> None:
        pass
