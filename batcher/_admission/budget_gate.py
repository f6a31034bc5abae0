"""A worker lane's gate on a cluster's budget (``_admission.grants``): slots taken from its
grants, the next grant asked for before the one held runs out.

A lane given this gate (``_admission.gate``'s protocol) waits on it for each admission besides its
own pacing. The budget is reached through one async callable (``grants.Ask``): a Ray actor's
method (``batcher.ray.worker_pool``) or, in the tests, a ``Budget`` called directly.
"""

from __future__ import annotations

import asyncio
import math

from .._core.clock import Clock
from .._core.errors import QuotaExhausted
from .grants import LATE, Ask, GiveBack, Grant, Tell

__all__ = ["FADE", "LEAD", "Gate"]

LEAD = 0.1
"""Seconds before its grant runs out that a busy lane asks for the next, at the least (else
three times the longest recent round trip to the budget)."""
FADE = 0.9
"""How much of the longest round trip to the budget an ask keeps, if it took less."""


class Gate:
    """A worker lane's side of the budget: takes slots from its grants, asks for more before
    they run out, and passes on pauses and token corrections.

    The next grant is asked for in the background (*prefetched*) once the slots held cover no
    more than ``lead`` seconds and more requests wait than they can serve: a lane that keeps busy
    then finds it there when its grant runs out, instead of standing idle for a round trip to the
    budget (one worker alone otherwise lost that wait on every grant). At most one ask is out at
    a time; a lane without demand beyond its slots asks only when they run out, so a worker
    holds slots ahead only while it uses them. Prefetching changes no slot's rules: the budget
    grants runs that never overlap, and each slot is used at most once, from its time until
    ``LATE`` after it. The slots a worker did not use are given back with the next ask (or
    ``flush``), so the budget counts the day's requests as they are sent, not as granted."""

    def __init__(self, model: str, ask: Ask, tell: Tell, clock: Clock) -> None:
        self.model = model
        self._ask = ask
        self._tell = tell
        self._clock = clock
        self._grant = _NONE
        self._next = 0  # the next unused slot of the grant
        self._used = 0  # slots of the grant taken (the rest went stale or were never reached)
        self._ahead: asyncio.Task[Grant] | None = None
        """The ask out (for the grant after this one, or for the lane that has none), if any."""
        self._back: GiveBack | None = None
        """The slots of grants dropped that were not taken, to give back with the next ask."""
        self._settle = 0.0  # token corrections not yet sent
        self.round_trip = 0.0
        """The longest recent round trip of an ask (seconds): each new one counts whole, an
        older one fades by ``FADE`` an ask."""

    @property
    def lead(self) -> float:
        """How long before its grant runs out a busy lane asks for the next."""
        return max(LEAD, 3 * self.round_trip)

    async def admit(self, tokens: int, waiting: int) -> None:
        while True:
            now = self._clock.time()
            g = self._grant
            i = self._next
            if g.interval > 0 and now - LATE > g.start + i * g.interval:
                i = math.ceil((now - LATE - g.start) / g.interval)  # skip slots gone stale
            if i < g.count and (g.interval > 0 or now - LATE <= g.start):
                self._next = i + 1
                self._used += 1
                self._prefetch(now, float(tokens), waiting - 1)
                at = g.start + i * g.interval
                if at > now:
                    await self._clock.sleep(at - now)
                return
            self._drop()
            if self._ahead is None:
                self._ahead = self._send(now, waiting, float(tokens))
            # shielded: an admission cancelled meanwhile leaves the grant to the next (or to
            # ``flush``), never lost with its slots counted in the day
            grant = await asyncio.shield(self._ahead)
            self._ahead = None
            if grant.stopped is not None:
                why, resets_at = grant.stopped
                raise QuotaExhausted(self.model, why, resets_at)
            self._grant = grant

    def _prefetch(self, now: float, tokens: float, queued: int) -> None:
        """Ask for the next grant now if ``queued`` requests (besides the one just admitted)
        are more than the grant's slots left, and those slots end within ``lead``."""
        g = self._grant
        left = g.count - self._next
        if self._ahead is not None or queued <= left:
            return
        if g.start + g.count * g.interval - now > self.lead:
            return
        self._ahead = self._send(now, queued - left, tokens)

    def _send(self, now: float, want: int, tokens: float) -> asyncio.Task[Grant]:
        """Ask the budget for ``want`` slots, giving back what was dropped and the token
        corrections so far; the round trip is timed. Where the longest recent round trip is
        more than half of ``LATE``, the slots start no sooner than the grant is expected back,
        less that half: a budget further than ``LATE`` away would otherwise grant slots stale on
        arrival, over and over. Nearer, the slots start at ``now``: a later start would leave
        the budget's slots before it unused by anyone."""
        settle, self._settle = self._settle, 0.0
        back, self._back = self._back, None
        ahead = max(0.0, self.round_trip - LATE / 2)
        return asyncio.ensure_future(self._timed(now + ahead, want, tokens, settle, back))

    async def _timed(
        self, now: float, want: int, tokens: float, settle: float, back: GiveBack | None
    ) -> Grant:
        sent = self._clock.monotonic()
        grant = await self._ask(self.model, now, want, tokens, settle, back)
        self.round_trip = max(self._clock.monotonic() - sent, self.round_trip * FADE)
        return grant

    def _drop(self) -> None:
        """Let the grant held go, keeping its slots not taken to give back."""
        g = self._grant
        if g.count > self._used:
            unreached = g.start + self._next * g.interval
            self._give_back(GiveBack(g.count - self._used, unreached, _end(g)))
        self._grant, self._next, self._used = _NONE, 0, 0

    def _give_back(self, back: GiveBack) -> None:
        """Add ``back`` (of a grant later than any given back before) to what goes back: the
        slots never reached stay one run where its grant followed the earlier one's end."""
        held = self._back
        if held is None:
            self._back = back
            return
        unreached = held.unreached if back.unreached == held.end else back.unreached
        self._back = GiveBack(held.count + back.count, unreached, back.end)

    async def flush(self) -> None:
        """Give back the grants' slots not taken (the one held, and the one asked for ahead),
        and the token corrections not yet sent: the budget's count of the day is then the
        requests this lane sent (a worker's block is done; the next asks afresh)."""
        self._drop()
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            grant = await ahead
            if grant.count > 0:
                self._give_back(GiveBack(grant.count, grant.start, _end(grant)))
        settle, self._settle = self._settle, 0.0
        back, self._back = self._back, None
        if back is not None or settle:
            await self._ask(self.model, self._clock.time(), 0, 0.0, settle, back)

    def paused(self, delay: float) -> None:
        self._tell(self.model, self._clock.time(), delay)

    def settle(self, charged: float, actual: float) -> None:
        self._settle += actual - charged


_NONE = Grant(0.0, 0.0, 0)
"""No grant held."""


def _end(grant: Grant) -> float:
    """When ``grant``'s slots end: its last slot's time plus an interval."""
    return grant.start + grant.count * grant.interval
