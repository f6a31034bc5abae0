"""The lanes of one endpoint: one per model, made on first use with its limits, today's count of
requests from the ledger, the endpoint's outage watch and its account's share of the quota store;
or, on a cluster's worker, each lane gated by the cluster's budget of the endpoint's account,
which counts the day for the whole cluster (no ledger on the worker)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace

from .._config.limits import LimitTable
from .._core.clock import Clock
from .gate import Gate
from .lane import Lane
from .ledger import DailyCount, Ledger
from .outage import OutageWatch
from .quota import Account, QuotaStore, SharedQuota, StoreUnreachable, new_holder

__all__ = ["Lanes"]


class Lanes:
    """The lanes of a run's endpoint, one per model, made on first use with its limits and
    today's quota; with a quota store, each shares its account's budget with other runs. With
    ``gate`` (a model's gate on the cluster's budget, ``_admission.budget_gate.Gate``) and no
    ledger, each lane draws on that budget, which counts the day's requests."""

    def __init__(
        self,
        limits: LimitTable,
        ledger: Ledger | None,
        clock: Clock,
        *,
        per_second: bool,
        rolling: bool,
        where: str = "",
        max_outage: float = 1800.0,
        store: QuotaStore | None = None,
        account: Account | None = None,
        ledger_prefix: str = "",
        gate: Callable[[str], Gate] | None = None,
    ) -> None:
        self.limits = limits
        self.ledger_prefix = ledger_prefix
        """Put before each model's name in the ledger: a pool's endpoint name and a slash."""
        self.max_outage = max_outage
        self.outage = OutageWatch(clock, max_outage=max_outage, where=where)
        """One endpoint, one outage: every model's lane shares the watch."""
        self.ledger = ledger
        self.clock = clock
        self.per_second = per_second
        self.rolling = rolling
        self.by_model: dict[str, Lane] = {}
        self.store = store
        self.account = account
        self.holder = new_holder()
        self.gate = gate

    def __getitem__(self, model: str) -> Lane:
        lane = self.by_model.get(model)
        if lane is None and self.gate is not None:
            lane = self.by_model[model] = Lane(
                model,
                replace(self.limits.for_model(model), rpd=None),  # the budget counts the day
                self.clock,
                per_second=self.per_second,
                outage=self.outage,
                gate=self.gate(model),
            )
        if lane is None:
            limits = self.limits.for_model(model)
            daily = DailyCount(rolling=self.rolling, keep_times=limits.rpd is not None)
            if self.ledger is not None:
                self.ledger.restore(self.ledger_prefix + model, daily)
            quota = None
            if self.store is not None and self.account is not None:
                quota = SharedQuota(
                    self.store,
                    self.account,
                    model,
                    self.clock,
                    self.holder,
                    max_outage=self.max_outage,
                )
            lane = Lane(
                model,
                limits,
                self.clock,
                per_second=self.per_second,
                daily=daily,
                outage=self.outage,
                quota=quota,
            )
            self.by_model[model] = lane
        return lane

    def every_lane(self) -> Iterator[Lane]:
        """The lanes made so far."""
        return iter(list(self.by_model.values()))

    def worked(self, besides: str) -> list[str]:
        """Models that have had a successful answer, other than ``besides``."""
        return sorted(m for m, lane in self.by_model.items() if lane.succeeded and m != besides)

    def save(self) -> None:
        """Write every lane's quota-day count to the ledger (if the lanes keep one)."""
        if self.ledger is None:
            return
        prefix = self.ledger_prefix
        self.ledger.save({prefix + m: lane.daily for m, lane in self.by_model.items()})

    async def beat(self) -> None:
        """Renew the leases of the lanes with demand (and drop the idle ones'), so each lane's
        share follows how many processes are sending."""
        for lane in list(self.by_model.values()):
            if lane.quota is not None:
                await lane.quota.beat(active=lane.has_demand())

    async def close(self) -> None:
        """Give back the unspent blocks of today's requests and drop this run's leases."""
        if self.store is None:
            return
        for lane in self.by_model.values():
            if lane.quota is not None:
                await lane.quota.close()
        with contextlib.suppress(StoreUnreachable):  # the leases lapse within LEASE_TTL anyway
            await self.store.leave(self.holder)
