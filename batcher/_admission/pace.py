"""The pacing arithmetic of one model's requests and tokens, pure and clock-free.

Requests and tokens are each paced by a theoretical arrival time (GCRA, the virtual-scheduling form
of a leaky bucket): a request may leave once time reaches ``r_next``, which then moves on by one
request's share of the minute; tokens work the same way on ``t_next``. A 429 pauses the pace
(``paused_until``), slows it a little (``slow``, recovering by a thousandth an answer) and, where a
per-minute limit may be enforced per second, narrows the margin once (the evidence that it is).
Where a provider counts a whole number of requests per clock second, ``whole`` says how many.
Limits an answer's headers reveal are adopted as they come (``adopt``).
Every time here is one the caller gives: a lane (``_admission.lane``) paces one process's requests
on its clock, a cluster's budget (``_admission.grants``) grants runs of slots in wall time, both
with this.

We pace ourselves instead of using aiolimiter: its bucket starts full (a bucket sized to a minute
lets the whole minute's budget through at once, the burst that per-second enforcement punishes),
``acquire`` raises when one request costs more than the bucket holds (a prompt larger than a
second's tokens), and a limiter can be neither re-rated when headers reveal the real limit nor
paused for a 429's delay, which is most of what a lane does.
"""

from __future__ import annotations

import math

from .._config.limits import Limits
from .._wire.providers import RateHints

__all__ = ["EARLY", "JITTER", "MARGIN", "PER_SECOND_MARGIN", "WINDOW", "Pace"]

WINDOW = 60.0
"""Requests and tokens per minute are per this many seconds."""
MARGIN = 0.99
"""The share of each limit a pace aims at, to absorb the clock's jitter."""
PER_SECOND_MARGIN = 0.965
"""The share once a 429 shows that a per-minute limit is enforced per second."""
JITTER = 0.005
"""Where limits are quantized per clock second (``Pace.whole``), how much longer than a second
the window of k requests is held: the arrivals' jitter between here and the server's clock."""
EARLY = 0.002
"""How long before its paced time a request may leave rather than sleep. At thousands of
requests a second the pace is finer than a turn of the event loop, and holding each request to
it costs a sleep (a timer, a wake-up, a handover of the lock) for nearly every one; the pace
still moves on by a whole interval per request, so the rate holds, a burst is at most this long's
worth of requests (0.2% of a second's), and the caps and pauses stay exact."""


class Pace:
    """One model's pace under ``limits``: ``margin`` of each (``MARGIN`` unless given);
    ``per_second`` says the provider may enforce per-minute limits per second, so a 429 narrows
    the margin to ``PER_SECOND_MARGIN`` (unless a margin was given)."""

    __slots__ = ("_narrow_to", "limits", "margin", "paused_until", "r_next", "slow", "t_next")

    def __init__(
        self, limits: Limits, *, per_second: bool = False, margin: float | None = None
    ) -> None:
        self.limits = limits
        self.margin = margin if margin is not None else MARGIN
        self._narrow_to = PER_SECOND_MARGIN if per_second and margin is None else None
        self.slow = 1.0
        self.r_next = float("-inf")
        """When the next request may leave."""
        self.t_next = float("-inf")
        """When the tokens charged so far are paid off."""
        self.paused_until = float("-inf")

    def interval(self, per_minute: int | None, share: float = 1.0) -> float:
        """Seconds per request (or per token) at ``per_minute`` of the limit, for a pace that
        has ``share`` of it (0 without that limit)."""
        if not per_minute:
            return 0.0
        return WINDOW / (per_minute * self.margin * self.slow * share)

    def rate(self, share: float = 1.0, per_request: float | None = None) -> float | None:
        """Requests a second the limits let through, for a pace that has ``share`` of them and
        requests of ``per_request`` tokens (unknown: None); None if no limit is known."""
        limits, scale = self.limits, self.margin * self.slow * share
        rate = math.inf
        if limits.rpm:
            rate = limits.rpm * scale / WINDOW
        if limits.tpm and per_request:
            rate = min(rate, limits.tpm * scale / WINDOW / per_request)
        return None if rate == math.inf else rate

    def whole(self, share: float = 1.0) -> int:
        """How many requests any second may hold where limits may be quantized per clock second,
        for a pace that has ``share`` of them; 0 where even pacing keeps within it already.

        A server that allows ``rpm / 60`` requests per clock second admits only its whole part:
        at 500 RPM, 8 in any second. Requests paced evenly at a rate r put up to floor(r) + 1
        into some second, so where the pace is within half a percent of that whole part k (0.99
        of 500 RPM is 8.25 a second: 9 in some seconds, each a 429 from the very first second),
        a request leaves no sooner than a second and ``JITTER`` after the k-th before it (the
        lane's ``leave_time``): no second of any phase then holds more than k, and a request
        that leaves late delays only the one k places after it, not every one after it (at
        500 RPM that paces at 0.955 of the limit, lateness paid once a second). Where the pace
        is under k already (1,200 RPM: 19.8 a second against 20), even pacing keeps every
        second within k."""
        rpm = self.limits.rpm
        if not rpm:
            return 0
        per_second = rpm * share / 60
        whole = math.floor(per_second)
        if whole < 1 or per_second * self.margin * self.slow < whole * 0.995:
            return 0
        return whole

    def paced(self, tolerance: float) -> float:
        """When pacing lets the next request leave, tokens allowed ``tolerance`` seconds ahead."""
        return max(self.r_next, self.t_next - tolerance)

    def advance(self, base: float, now: float, tokens: float, share: float = 1.0) -> None:
        """A request of ``tokens`` left at ``now``; the next one's slot is an interval after
        ``base`` (its own slot, or ``now``, as the caller reckons lateness)."""
        self.r_next = base + self.interval(self.limits.rpm, share)
        self.t_next = max(self.t_next, now) + tokens * self.interval(self.limits.tpm, share)

    def settle(self, tokens: float, share: float = 1.0) -> None:
        """Answers said requests cost ``tokens`` more (or, negative, fewer) than was charged."""
        self.t_next += tokens * self.interval(self.limits.tpm, share)

    def recover(self) -> None:
        """A request went through: a pace slowed by 429s recovers a little."""
        self.slow = min(1.0, self.slow + 0.001)

    def pause(self, until: float) -> bool:
        """A 429: nothing leaves before ``until``, and the pace slows. True if it also narrowed
        the margin (the evidence that limits are enforced per second)."""
        self.paused_until = max(self.paused_until, until)
        self.slow = max(0.8, self.slow * 0.98)
        if self._narrow_to is None:
            return False
        self.margin = min(self.margin, self._narrow_to)
        return True

    def adopt(self, hints: RateHints, now: float, last: float, share: float = 1.0) -> None:
        """Adopt the limits that ``x-ratelimit-*`` headers reveal where they are lower (the next
        request then leaves an interval of the new rate after the ``last`` one), and pause until
        the reset where they say none remain."""
        if hints.empty:
            return
        rpm, tpm = self.limits.rpm, self.limits.tpm
        if hints.limit_requests and (rpm is None or hints.limit_requests < rpm):
            rpm = hints.limit_requests
        if hints.limit_tokens and (tpm is None or hints.limit_tokens < tpm):
            tpm = hints.limit_tokens
        if (rpm, tpm) != (self.limits.rpm, self.limits.tpm):
            self.limits = Limits(rpm, tpm, self.limits.rpd)
            self.r_next = max(self.r_next, last + self.interval(rpm, share))
        for remaining, reset in (
            (hints.remaining_requests, hints.reset_requests),
            (hints.remaining_tokens, hints.reset_tokens),
        ):
            if remaining == 0 and reset:
                self.paused_until = max(self.paused_until, now + reset)

    def grant(self, now: float, want: int, tokens: float) -> tuple[float, float]:
        """``want`` consecutive slots for requests of about ``tokens`` each from ``now``: (the
        first slot's time, the interval between slots). Tokens may be a second ahead."""
        t_per = self.interval(self.limits.tpm)
        start = max(now, self.r_next, self.paused_until, self.t_next - (1.0 if t_per else 0.0))
        interval = max(self.interval(self.limits.rpm), tokens * t_per)
        self.r_next = start + want * interval
        self.t_next = max(self.t_next, start) + want * tokens * t_per
        self.recover()
        return start, interval
