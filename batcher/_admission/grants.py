"""One budget per model shared by many processes: capacity granted in chunks, paced locally.

``Budget`` holds, for each model, the pacing a lone lane would do (``Pacer``: a request's and a
token's theoretical arrival times, the quota day's count, a 429's pause) and hands out *grants*:
a run of consecutive request slots, ``interval`` seconds apart from ``start`` (wall time). Slots
given to different workers never overlap, so the cluster as a whole is paced as one lane would
be, and a worker whose chunk is used up asks again. A slot is good only from its time until
``LATE`` seconds after it: a worker that could not use it in time skips it, so that no window of
a minute ever holds more requests than the pacing allowed (at most ``(60 + LATE) / 60`` of the
paced rate, under the limit at the 0.99 margin). A 429 anywhere pushes every later slot past
its delay and slows the pacing, as it would in one lane.

The worker's side is ``_admission.budget_gate.Gate``: a lane's gate drawing slots from its
grants. The budget is reached through one async callable (``Ask``), so the same gate serves a
Ray actor (``batcher.ray``) or, later, any store that can grant the same way. The budget also
keeps each model's images of the last minute (``--ipm``) for the workers'
``ipm.SharedImageGate``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from .._config.limits import Limits, LimitTable
from .ipm import ImageWindow
from .ledger import DailyCount
from .pace import WINDOW, Pace

__all__ = ["LATE", "Ask", "Budget", "GiveBack", "Grant", "Pacer", "Tell"]

LATE = 0.1
"""Seconds after its time that a granted slot may still be used."""
DEFAULT = "default"
"""The endpoint of a run without ``--pool`` (the name a pool's endpoint has otherwise)."""
CHUNK_SECONDS = 0.5
"""A grant covers at most this much of a lane's paced rate (and at least one request)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """``count`` request slots at ``start + i * interval`` (wall time), or why none: the day's
    quota is spent (``stopped``: the reason, and when it resets)."""

    start: float
    interval: float
    count: int
    stopped: tuple[str, float] | None = None


@dataclass(frozen=True, slots=True)
class GiveBack:
    """Slots of a grant a worker did not use: ``count`` in all (gone stale, or never reached),
    the time of the first it never reached (``unreached``) and when the grant ends (``end``)."""

    count: int
    unreached: float
    end: float


class Pacer:
    """One model's pacing for a whole cluster: a lane's ``Pace``, granting slots in runs, and
    the quota day's count of each endpoint drawing on it (their sum is the account's)."""

    def __init__(self, limits: Limits, *, per_second: bool = False, rolling: bool = False) -> None:
        self.pace = Pace(limits, per_second=per_second)
        self.rolling = rolling
        self.keep_times = limits.rpd is not None
        self.days: dict[str, DailyCount] = {}
        """Each endpoint's requests in the quota day: counted when granted, and uncounted when
        a worker gives back slots it did not use, so that what stays counted was sent."""
        self.granted: dict[str, int] = {}
        """Slots granted per endpoint, less those given back: requests sent (or in flight)."""
        self.pauses = 0

    @property
    def limits(self) -> Limits:
        return self.pace.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.pace.limits = limits

    @property
    def margin(self) -> float:
        return self.pace.margin

    def count(self, endpoint: str = DEFAULT) -> DailyCount:
        """``endpoint``'s count of the quota day (made on first use)."""
        count = self.days.get(endpoint)
        if count is None:
            count = self.days[endpoint] = DailyCount(
                rolling=self.rolling, keep_times=self.keep_times
            )
        return count

    def spent(self, now: float) -> int:
        """The account's requests in the quota day: every endpoint's."""
        return sum(count.spent(now) for count in self.days.values())

    def chunk(self) -> int:
        """The most slots one grant holds: ``CHUNK_SECONDS`` of the paced rate, at least one."""
        rpm = self.limits.rpm
        if not rpm:
            return 64
        return max(1, int(rpm * self.margin * CHUNK_SECONDS / WINDOW))

    def grant(self, now: float, want: int, tokens: float, endpoint: str = DEFAULT) -> Grant:
        """Up to ``want`` slots for requests of about ``tokens`` each, from ``now`` (wall time),
        counted in ``endpoint``'s day."""
        want = max(1, min(want, self.chunk()))
        count = self.count(endpoint)
        rpd = self.limits.rpd
        if rpd is not None:
            left = rpd - self.spent(now)
            if left <= 0:
                why = (
                    "no daily quota (RPD 0)"
                    if rpd == 0
                    else f"the day's {rpd:,} requests are spent"
                )
                resets = [c.resets_at(now) for c in self.days.values() if c.spent(now)]
                return Grant(now, 0.0, 0, (why, min(resets, default=count.resets_at(now))))
            want = min(want, left)
        start, interval = self.pace.grant(now, want, tokens)
        for _ in range(want):
            count.add(now)
        self.granted[endpoint] = self.granted.get(endpoint, 0) + want
        return Grant(start, interval, want)

    def give_back(self, now: float, back: GiveBack, endpoint: str = DEFAULT) -> None:
        """A worker did not use ``back.count`` slots of ``endpoint``'s grant: they are not
        counted in the day; and if no slot was granted after them, the pace goes back to the
        first it never reached, so the next grant starts there."""
        if back.count <= 0:
            return
        self.count(endpoint).take_back(now, back.count)
        self.granted[endpoint] = max(0, self.granted.get(endpoint, 0) - back.count)
        if back.unreached < back.end and self.pace.r_next == back.end:
            self.pace.r_next = max(now, back.unreached)

    def settle(self, tokens: float) -> None:
        """Answers said their requests cost ``tokens`` more (or fewer) than was charged."""
        self.pace.settle(tokens)

    def pause(self, now: float, delay: float) -> None:
        """A 429 with this delay: no slot before it, and the pacing a little slower."""
        self.pauses += 1
        self.pace.pause(now + delay)


class Budget:
    """The budgets of one project (an endpoint and key): a ``Pacer`` per model, made on first
    use. Endpoints that share the project (a pool's, on one project) draw on the same pacers,
    each its own count of the day (``endpoint``: the name it keeps its ledger under). Its methods
    are async so that it runs as a Ray async actor as it is; none of them awaits anything, so
    each runs whole."""

    def __init__(
        self, limits: LimitTable, *, per_second: bool = False, rolling: bool = False
    ) -> None:
        self.limits = limits
        self.per_second = per_second
        self.rolling = rolling
        self.pacers: dict[str, Pacer] = {}
        self.images_windows: dict[str, ImageWindow] = {}
        """Each model's images of the last minute (``--ipm``), on wall time."""
        self.failures: dict[str, tuple[BaseException, str | None]] = {}

    def _pacer(self, model: str) -> Pacer:
        pacer = self.pacers.get(model)
        if pacer is None:
            limits = self.limits.for_model(model)
            pacer = self.pacers[model] = Pacer(
                limits, per_second=self.per_second, rolling=self.rolling
            )
        return pacer

    async def configure(
        self, limits: LimitTable, days: dict[str, dict[str, Any]], endpoint: str = DEFAULT
    ) -> None:
        """Take a run's limits (the latest run's win) and, for models ``endpoint`` has not yet
        counted here, the day's counts its ledger holds."""
        self.limits = limits
        for model, pacer in self.pacers.items():
            pacer.limits = limits.for_model(model)
        for model, saved in days.items():
            pacer = self._pacer(model)
            if endpoint not in pacer.days:
                pacer.count(endpoint).restore(saved)

    async def grant(
        self,
        model: str,
        now: float,
        want: int,
        tokens: float,
        settle: float,
        back: GiveBack | None = None,
        endpoint: str = DEFAULT,
    ) -> Grant:
        """Up to ``want`` slots of ``model`` for ``endpoint`` (none if ``want`` is 0), after
        taking back the slots of its last grant a worker did not use (``back``) and the
        tokens its answers cost more or less than charged (``settle``)."""
        pacer = self._pacer(model)
        if back is not None:
            pacer.give_back(now, back, endpoint)
        if settle:
            pacer.settle(settle)
        if want <= 0:
            return Grant(now, 0.0, 0)
        return pacer.grant(now, want, tokens, endpoint)

    async def pause(self, model: str, now: float, delay: float) -> None:
        self._pacer(model).pause(now, delay)

    async def count_sent(self, model: str, now: float, n: int, endpoint: str = DEFAULT) -> None:
        """``endpoint``'s workers sent ``n`` requests of ``model`` admitted by a quota store,
        not by this budget: counted in its day all the same, for the run's ledger."""
        count = self._pacer(model).count(endpoint)
        for _ in range(n):
            count.add(now)

    async def images(self, model: str, now: float, n: int, ipm: int) -> float:
        """Take ``n`` images of ``model``'s ``ipm`` at ``now`` (wall time): 0 if taken, else
        the seconds to wait before asking again (``ipm.SharedImageGate``; the latest cap wins)."""
        window = self.images_windows.get(model)
        if window is None:
            window = self.images_windows[model] = ImageWindow(ipm)
        window.ipm = ipm
        return window.take(now, n)

    async def days(self, endpoint: str = DEFAULT) -> dict[str, dict[str, Any]]:
        """Each model's quota-day count of ``endpoint``, as the ledger saves it."""
        return {
            m: p.days[endpoint].snapshot() for m, p in self.pacers.items() if endpoint in p.days
        }

    async def fail(self, run: str, error: BaseException, model: str | None) -> None:
        """A worker of run ``run`` stopped on ``error`` (a fatal answer for ``model``, an outage);
        the first one is kept for that run's driver, since Ray passes on only its text."""
        self.failures.setdefault(run, (error, model))

    async def failure(self, run: str) -> tuple[BaseException, str | None] | None:
        return self.failures.pop(run, None)

    async def counters(self, endpoint: str = DEFAULT) -> dict[str, tuple[int, int]]:
        """Each model's slots granted to ``endpoint`` and not given back (its requests sent),
        and the 429 pauses, so far."""
        return {m: (p.granted.get(endpoint, 0), p.pauses) for m, p in self.pacers.items()}


Ask: TypeAlias = Callable[[str, float, int, float, float, GiveBack | None], Awaitable[Grant]]
"""``ask(model, now, want, tokens, settle, back)``: a grant from the budget (``Budget.grant``)."""
Tell: TypeAlias = Callable[[str, float, float], None]
"""``tell(model, now, delay)``: pass a 429's pause on to the budget, without waiting."""
