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

``Gate`` is the worker's side: a lane's ``Gate`` (the protocol in ``_admission.gate``) drawing
slots from its grants. The budget is reached through one async callable (``Ask``), so the same
gate serves a Ray actor (``batcher.ray``) or, later, any store that can grant the same way. The
budget also keeps each model's images of the last minute (``--ipm``) for the workers'
``ipm.SharedImageGate``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from .._config.limits import Limits, LimitTable
from .._core.clock import Clock
from .._core.errors import QuotaExhausted
from .ipm import ImageWindow
from .ledger import DailyCount
from .pace import WINDOW, Pace

__all__ = ["LATE", "Ask", "Budget", "Gate", "Grant", "Pacer"]

LATE = 0.1
"""Seconds after its time that a granted slot may still be used."""
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


class Pacer:
    """One model's pacing for a whole cluster: a lane's ``Pace``, granting slots in runs, and
    the quota day's count."""

    def __init__(
        self, limits: Limits, daily: DailyCount | None = None, *, per_second: bool = False
    ) -> None:
        self.pace = Pace(limits, per_second=per_second)
        self.daily = daily or DailyCount()
        self.granted = 0
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

    def chunk(self) -> int:
        """The most slots one grant holds: ``CHUNK_SECONDS`` of the paced rate, at least one."""
        rpm = self.limits.rpm
        if not rpm:
            return 64
        return max(1, int(rpm * self.margin * CHUNK_SECONDS / WINDOW))

    def grant(self, now: float, want: int, tokens: float) -> Grant:
        """Up to ``want`` slots for requests of about ``tokens`` each, from ``now`` (wall time)."""
        want = max(1, min(want, self.chunk()))
        rpd = self.limits.rpd
        if rpd is not None:
            left = rpd - self.daily.spent(now)
            if left <= 0:
                why = (
                    "no daily quota (RPD 0)"
                    if rpd == 0
                    else f"the day's {rpd:,} requests are spent"
                )
                return Grant(now, 0.0, 0, (why, self.daily.resets_at(now)))
            want = min(want, left)
        start, interval = self.pace.grant(now, want, tokens)
        for _ in range(want):
            self.daily.add(now)
        self.granted += want
        return Grant(start, interval, want)

    def settle(self, tokens: float) -> None:
        """Answers said their requests cost ``tokens`` more (or fewer) than was charged."""
        self.pace.settle(tokens)

    def pause(self, now: float, delay: float) -> None:
        """A 429 with this delay: no slot before it, and the pacing a little slower."""
        self.pauses += 1
        self.pace.pause(now + delay)


class Budget:
    """The budgets of one project (an endpoint and key): a ``Pacer`` per model, made on first
    use. Its methods are async so that it runs as a Ray async actor as it is; none of them awaits
    anything, so each runs whole."""

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
            daily = DailyCount(rolling=self.rolling, keep_times=limits.rpd is not None)
            pacer = self.pacers[model] = Pacer(limits, daily, per_second=self.per_second)
        return pacer

    async def configure(self, limits: LimitTable, days: dict[str, dict[str, Any]]) -> None:
        """Take a run's limits (the latest run's win) and, for models not yet counted here, the
        day's counts its ledger holds."""
        self.limits = limits
        for model, pacer in self.pacers.items():
            pacer.limits = limits.for_model(model)
        for model, saved in days.items():
            if model not in self.pacers:
                self._pacer(model).daily.restore(saved)

    async def grant(self, model: str, now: float, want: int, tokens: float, settle: float) -> Grant:
        pacer = self._pacer(model)
        if settle:
            pacer.settle(settle)
        return pacer.grant(now, want, tokens)

    async def pause(self, model: str, now: float, delay: float) -> None:
        self._pacer(model).pause(now, delay)

    async def images(self, model: str, now: float, n: int, ipm: int) -> float:
        """Take ``n`` images of ``model``'s ``ipm`` at ``now`` (wall time): 0 if taken, else
        the seconds to wait before asking again (``ipm.SharedImageGate``; the latest cap wins)."""
        window = self.images_windows.get(model)
        if window is None:
            window = self.images_windows[model] = ImageWindow(ipm)
        window.ipm = ipm
        return window.take(now, n)

    async def days(self) -> dict[str, dict[str, Any]]:
        """Each model's quota-day count, as the ledger saves it."""
        return {m: p.daily.snapshot() for m, p in self.pacers.items()}

    async def fail(self, run: str, error: BaseException, model: str | None) -> None:
        """A worker of run ``run`` stopped on ``error`` (a fatal answer for ``model``, an outage);
        the first one is kept for that run's driver, since Ray passes on only its text."""
        self.failures.setdefault(run, (error, model))

    async def failure(self, run: str) -> tuple[BaseException, str | None] | None:
        return self.failures.pop(run, None)

    async def counters(self) -> dict[str, tuple[int, int]]:
        """Each model's slots granted and 429 pauses so far."""
        return {m: (p.granted, p.pauses) for m, p in self.pacers.items()}


Ask: TypeAlias = Callable[[str, float, int, float, float], Awaitable[Grant]]
"""``ask(model, now, want, tokens, settle)``: a grant from the budget (``Budget.grant``)."""
Tell: TypeAlias = Callable[[str, float, float], None]
"""``tell(model, now, delay)``: pass a 429's pause on to the budget, without waiting."""


class Gate:
    """A worker lane's side of the budget: takes slots from its grants, asking for more when
    they run out, and passes on pauses and token corrections."""

    def __init__(self, model: str, ask: Ask, tell: Tell, clock: Clock) -> None:
        self.model = model
        self._ask = ask
        self._tell = tell
        self._clock = clock
        self._grant = Grant(0.0, 0.0, 0)
        self._next = 0  # the next unused slot of the grant
        self._settle = 0.0  # token corrections not yet sent

    async def admit(self, tokens: int, waiting: int) -> None:
        while True:
            now = self._clock.time()
            g = self._grant
            i = self._next
            if g.interval > 0 and now - LATE > g.start + i * g.interval:
                i = math.ceil((now - LATE - g.start) / g.interval)  # skip slots gone stale
            if i < g.count and (g.interval > 0 or now - LATE <= g.start):
                self._next = i + 1
                at = g.start + i * g.interval
                if at > now:
                    await self._clock.sleep(at - now)
                return
            settle, self._settle = self._settle, 0.0
            grant = await self._ask(self.model, now, waiting, float(tokens), settle)
            if grant.stopped is not None:
                why, resets_at = grant.stopped
                raise QuotaExhausted(self.model, why, resets_at)
            self._grant, self._next = grant, 0

    def paused(self, delay: float) -> None:
        self._tell(self.model, self._clock.time(), delay)

    def settle(self, charged: float, actual: float) -> None:
        self._settle += actual - charged
