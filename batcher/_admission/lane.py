"""A lane: admission for one model of one account (a project, or a key), paced to sit just under
its limits.

Two mechanisms hold each limit. Pacing (``Pace``, in ``_admission.pace``, the arithmetic shared
with a cluster's budget: GCRA on requests, and on tokens with a second's tolerance) spreads
admissions evenly, never in bursts beyond ``EARLY``'s worth and the lateness a waiting request
keeps as credit, so per-second enforcement is not tripped and the event loop's lag is not lost
rate. The cap (``MinuteCap``, in ``_admission.caps``) keeps the last minute's admissions: a request
never makes them exceed the limit, whatever pacing allowed, and tokens are capped over any 10 s
too. A request is charged its estimate and the estimator's doubt until its answer says what it
cost: a slow start on tokens while the estimator learns the tokenizer, and after a token 429.

Admission is serialised by a FIFO lock, and the holder re-reads the lane's state after every
sleep, so a 429 that pauses the lane holds back even a request that was already waiting. Where a
token cap holds the holder back, a smaller request queued behind it that fits goes first if that
makes the holder no later (backfilling, ``Fillers`` in ``_admission.fill``). A lane
starts with one request and admits more once it is answered or a few seconds after it left
(``Opening``, in ``_admission.opening``).

A lane also says how many requests it needs in flight to hold its pace (``wanted``): its rate
times how long answers take (Little's law, ``InFlight`` in ``_admission.flight``). The scheduler
keeps that many workers.

A job's attempt goes through one protocol, ``async with lane.request(x) as slot`` (``Slot``, in
``_admission.slot``): it waits for admission (``admit``), and what the answer says teaches the lane
(``observe``, ``settle``, ``on_rate_limited``).

Several processes may share the account's limits (``SharedQuota``, from ``_admission.quota``): each
lane then paces at its share of the per-minute limits (one over the processes sending), and counts
the day's requests in blocks reserved from the shared store, so together they stay under the limits
and count one RPD. A lane whose day's requests are spent stops until the reset (``QuotaDay``, in
``_admission.day``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from functools import partial

import anyio
import anyio.lowlevel

from .._config.limits import Limits
from .._core.clock import Clock
from .._core.errors import FatalProviderError, PermanentJobError, QuotaExhausted, RateLimitError
from .._wire.providers import RateHints
from .caps import MinuteCap
from .day import QuotaDay
from .estimate import Features, TokenEstimator
from .fill import Fillers, Waiter
from .flight import InFlight
from .gate import Gate
from .ledger import DailyCount
from .opening import Opening
from .outage import OutageWatch
from .pace import EARLY, JITTER, WINDOW, Pace
from .quota import SharedQuota
from .slot import Slot

__all__ = ["Lane"]


class Lane:
    """Admission control for one model.

    ``margin`` is the share of each limit the lane aims at: 0.99 unless given. ``per_second``
    says the provider may enforce its per-minute limits per second (OpenAI's are quantized; a
    compatible server's may not be): the lane still starts at 0.99, and narrows to 0.965 on the
    first 429, the evidence that they are, since jitter then tips some seconds over.
    """

    def __init__(
        self,
        model: str,
        limits: Limits,
        clock: Clock,
        *,
        per_second: bool = False,
        margin: float | None = None,
        rng: random.Random | None = None,
        daily: DailyCount | None = None,
        outage: OutageWatch | None = None,
        gate: Gate | None = None,
        quota: SharedQuota | None = None,
    ) -> None:
        self.model = model
        self.gate = gate
        self.pace = Pace(limits, per_second=per_second, margin=margin)
        self._quantized = per_second
        """The provider may enforce per-minute limits per clock second (OpenAI's are quantized:
        500 RPM is 8 requests in any second, not 8.33): see ``Pace.whole``."""
        self._sends: deque[float] = deque()
        """Where quantized, when requests left in the last second and ``JITTER``."""
        self.clock = clock
        self._per_second = False
        """Evidence (a 429) that limits are enforced per second: tokens are then capped per
        sliding second too (the cap, not the pace: pacing still lets a second's tokens ahead,
        which the cap bounds, so lateness is not lost rate)."""
        self.estimator = TokenEstimator()
        self._rng = rng or random.Random()
        self._lock = anyio.Lock()
        self._held = False
        """A request holds the lock and is inside it: every other one then queues behind it."""
        self._strikes = 0
        self.cap = MinuteCap()
        self.daily = daily or DailyCount()
        self.outage = outage or OutageWatch(clock, where=model)
        self.quota = quota
        self.day = QuotaDay(model, clock, self.daily, quota)
        self.refused: FatalProviderError | None = None
        """The provider refused this lane's key or model: every later attempt fails the same way
        without being sent (a pool then moves the job to another endpoint)."""
        self.fillers = Fillers()
        """Requests queued for the lock on a lane with a TPM, that its holder may let through."""
        self._demand_mark = 0
        self.waiting = 0
        """Attempts waiting for admission: with ``admitted``, whether the lane has demand."""
        self.opening = Opening(clock)
        self.flight = InFlight(clock)
        self.last_left = float("-inf")
        self.admitted = 0
        self.rate_limited = 0
        self.succeeded = 0

    def request(self, x: Features | int, *, output: int = 0) -> Slot:
        """One attempt's way through the lane: ``async with lane.request(x) as slot: ...``.

        ``x`` is the prompt's features (estimated, then learned from the answer) or a known
        token count; ``output`` is charged on top where the provider charges ``max_tokens`` at
        admission. Entering raises ``PermanentJobError`` for a job that can never fit and
        ``QuotaExhausted`` when the day's quota is spent.
        """
        return Slot(self, x, output)

    # --- pacing ----------------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """The limits the lane paces by: as given, or as headers and 429s revealed them."""
        return self.pace.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.pace.limits = limits

    @property
    def margin(self) -> float:
        """The share of each limit the lane aims at."""
        return self.pace.margin

    @property
    def share(self) -> float:
        """The part of the account's per-minute limits this lane may use."""
        return self.quota.share if self.quota is not None else 1.0

    def check_size(self, tokens: int) -> None:
        """A job that can never fit in a minute's token budget is an error for that job."""
        tpm = self.limits.tpm
        if tpm is not None and tokens > tpm * self.margin:
            raise PermanentJobError(
                f"this job needs about {tokens:,} tokens, more than {self.model}'s budget of "
                f"{tpm:,} tokens per minute; it can never be sent"
            )

    def leave_time(self, now: float, tokens: int, probe_at: float) -> float:
        """When pacing, the caps and any pause let a request of ``tokens`` leave."""
        self.day.check(self.limits.rpd)
        t_tolerance = 1.0 if self.limits.tpm else 0.0
        cap = self.cap.wait(now, tokens, self.limits, self.share, per_second=self._per_second)
        held = max(probe_at, self.pace.paused_until, cap)
        if self._quantized and 0 < (whole := self.pace.whole(self.share)) <= len(self._sends):
            held = max(held, self._sends[-whole] + 1.0 + JITTER)  # k in any second at most
        paced = self.pace.paced(t_tolerance)
        if held <= now and paced <= now + EARLY:
            return now  # at most EARLY before its pace: not worth a sleep
        return max(held, paced)

    async def _wait_turn(self, tokens: int) -> float:
        """Sleep until pacing, the cap and any pause let ``tokens`` go; return the time.
        Meanwhile, requests queued behind that fit without delaying it go ahead (``Fillers.fill``),
        and where the caps hold it, it wakes as each admission leaves a window to try again."""
        while True:
            if self.refused is not None:
                raise self.refused
            await self.day.ensure(self.limits)
            probe_at = await self.outage.wait_for_probe()
            now = self.clock.monotonic()
            start = self.leave_time(now, tokens, probe_at)
            if start <= now:
                # a request whose job was cancelled while it waited (the run is halting) must
                # not leave: some clients write the request before their first suspension
                await anyio.lowlevel.checkpoint_if_cancelled()
                return now
            wake = start
            if self.fillers.waiting and probe_at <= now and self.fillers.fillable(self, now):
                start = self.fillers.fill(self, now, tokens, probe_at, start)
                wake = min(start, self.cap.next_room(now))
            await self.clock.sleep(max(wake - now, 1e-6))

    async def admit(self, tokens: int, fresh: Callable[[], int] | None = None) -> list[float]:
        """Wait until a request of ``tokens`` may leave; return its entry in the window.
        ``fresh`` estimates the tokens again once the request's turn has come: a request that
        queued while answers taught the estimator is charged what it now estimates, not what
        the estimator said when it joined the queue (hundreds may queue at a run's start).

        Raises ``QuotaExhausted`` when the day's quota is spent, ``Outage`` when the endpoint has
        been down for longer than the run waits. A request that may leave at once, while nobody
        is held back inside the lock (sleeping for its turn, waiting for the first answer), does
        so without the lock: each handover of a lock costs a turn of the event loop, and at high
        rates requests queued only for handovers would keep every later one queuing behind them.
        Those queued still go in order; one that gets the lock and finds its turn taken sleeps."""
        gate = self.gate
        if (
            gate is None
            and not self._held
            and self.opening.is_open
            and not self.outage.down
            and (self.quota is None or self.quota.left > 0)
            and self.refused is None
        ):
            now = self.clock.monotonic()
            if self.leave_time(now, tokens, float("-inf")) <= now:
                return self.commit(now, tokens, arrived=now)
        arrived = self.clock.monotonic()
        if not self.limits.tpm:
            return await self._admit_in_turn(tokens, fresh, arrived)
        # requests of varied tokens: one queued may be let through by the holder (``Fillers.fill``)
        turn = partial(self._admit_in_turn, tokens, fresh, arrived)
        return await self.fillers.queue(tokens, fresh, arrived, turn)

    async def _admit_in_turn(
        self,
        tokens: int,
        fresh: Callable[[], int] | None,
        arrived: float,
        waiter: Waiter | None = None,
    ) -> list[float]:
        """Queue for the lock, then wait for the turn of a request of ``tokens``."""
        gate = self.gate
        async with self._lock:
            if waiter is not None:
                if waiter.entry is not None:  # let through as the lock came: nothing to wait for
                    return waiter.entry
                self.fillers.leave(waiter)
            if fresh is not None:
                tokens = fresh()
            self._held = True
            probe = False
            try:
                probe = await self.opening.enter()
                now = await self._wait_turn(tokens)
                if gate is not None:
                    await gate.admit(tokens, self._lock.statistics().tasks_waiting + 1)
                    now = await self._wait_turn(tokens)  # a pause heard meanwhile holds
            except BaseException:
                if probe:
                    self.opening.probe_failed()
                raise
            finally:
                self._held = False
            if probe:
                self.opening.probe_left(now)
            return self.commit(now, tokens, arrived=arrived)

    # --- how many in flight ----------------------------------------------------------------------

    def wanted(self, unpaced: int) -> int:
        """Requests this lane needs in flight (or ready) to hold its pace: rate x answer time
        with headroom (Little's law); ``unpaced`` where no limit paces the lane."""
        if self.refused is not None or self.day.stopped is not None:
            return 0
        if self.limits.tpm and self.cap.per_request() is None:
            return unpaced  # what a request costs is unknown until some have been admitted
        rate = self.pace.rate(self.share, self.cap.per_request())
        if rate is None:
            return unpaced
        limits = self.limits
        tokens_bind = bool(limits.tpm) and (
            not limits.rpm or rate < limits.rpm * self.margin * self.pace.slow * self.share / WINDOW
        )
        return self.flight.wanted(rate, tokens_bind=tokens_bind)

    @property
    def peak_in_flight(self) -> int:
        """The most requests this lane had in flight at once."""
        return self.flight.peak

    def commit(self, now: float, tokens: int, *, arrived: float, count: bool = True) -> list[float]:
        """Record an admission at ``now`` of a request that ``arrived`` then; move the pace on.
        ``count=False`` leaves the counters (``count_admission``) to a caller that may yet take
        it back (``MinuteCap.take_back``, the pace restored)."""
        # A request that was already waiting when its slot came (asleep for it, or queued for
        # the lock) and leaves late keeps up to half an interval (at least EARLY) of that
        # lateness as credit: the loop's wake-up and handover lag, paid on every request at
        # hundreds a second, would otherwise pile up into lost rate. One that arrived after its
        # slot (the lane stood idle), or was held past it by something else (the first answer,
        # a pause), starts afresh. One let through early (``EARLY``) moves the pace on from
        # its slot, not from now.
        pace = self.pace
        slot = pace.r_next
        held = max(self.opening.opened_at, pace.paused_until)
        if now < slot or (arrived <= slot and held <= slot):
            base = max(slot, now - max(self.spacing() / 2, EARLY))
        else:
            base = now
        pace.advance(base, now, tokens, self.share)
        self.last_left = now
        if self._quantized:
            sends = self._sends
            sends.append(now)
            while sends[0] < now - 1.0 - JITTER:
                sends.popleft()
        if count:
            self.count_admission()
        return self.cap.admit(now, tokens)

    def take_back(self, entry: list[float], saved: tuple[float, float, float]) -> None:
        """Undo a ``commit(count=False)`` of ``entry``: the pace as ``saved`` before it (its
        ``r_next``, ``t_next`` and the lane's ``last_left``), the cap's entry and the send."""
        self.pace.r_next, self.pace.t_next, self.last_left = saved
        self.cap.take_back(entry)
        if self._quantized:
            self._sends.pop()  # entries it trimmed were too old to matter from now on

    def count_admission(self) -> None:
        """Count an admission: in the day, the lane's total, the outage watch."""
        self.day.add()
        self.admitted += 1
        self.outage.admitted()

    def settle(self, entry: list[float], tokens: int) -> None:
        """The answer said the request cost ``tokens``: correct the charge made at admission."""
        now = self.clock.monotonic()
        if self.gate is not None:
            self.gate.settle(entry[1], float(tokens))
        self.pace.settle(tokens - entry[1], self.share)
        self.pace.recover()
        self.cap.settle(entry, tokens, now)
        self._strikes = 0

    # --- what the server says --------------------------------------------------------------------

    def on_rate_limited(self, error: RateLimitError) -> None:
        """A 429: pause the whole lane for the server's delay (or a jittered backoff); slow it."""
        now = self.clock.monotonic()
        self.rate_limited += 1
        if error.per_day:
            self.day.server_says_spent(error.quota)
            return
        if error.retry_after is not None:
            delay = error.retry_after
        else:
            delay = min(60.0, 2.0**self._strikes) * self._rng.uniform(0.5, 1.0)
        self._strikes += 1
        if error.scope == "tokens":
            self.estimator.distrust()  # the tokens were more than estimated, perhaps
        if self.pace.pause(now + delay):
            self._per_second = True
        if self.gate is not None:
            self.gate.paused(delay)
        # with no limit known, what got through in the last minute is taken as the limit
        self.limits = self.cap.learned(self.limits, error.scope)

    def observe(self, hints: RateHints) -> None:
        """Adopt the limits that ``x-ratelimit-*`` headers reveal; pause if they say none remain."""
        self.pace.adopt(hints, self.clock.monotonic(), self.last_left, self.share)

    # --- for the scheduler, a pool, and what a user inspects -------------------------------------

    def count_resend(self) -> None:
        """Count in the day (RPD) a request the transport sent twice: the provider may have."""
        self.day.add()

    def spacing(self) -> float:
        """Seconds between two requests at the lane's pace (0 without an RPM)."""
        return self.pace.interval(self.limits.rpm, self.share)

    def eta(self, now: float) -> float:
        """About when a request joining the lane at ``now`` would leave (monotonic time): for
        choosing between lanes that serve one model. Down endpoints are probed, so they come
        last."""
        start = max(now, self.pace.paused_until, self.pace.r_next)
        if self.outage.down:
            start = max(start, now + 60.0)
        return start + self.waiting * max(self.spacing(), 1e-3)

    def has_demand(self) -> bool:
        """Whether the lane admitted or had waiting requests since the last call."""
        demand = self.waiting > 0 or self.admitted != self._demand_mark
        self._demand_mark = self.admitted
        return demand

    def blocked(self) -> QuotaExhausted | None:
        """Why the lane sends nothing until a quota reset, or None if it may send."""
        return self.day.blocked(self.limits.rpd)
