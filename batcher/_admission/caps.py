"""A lane's last minute: the cap that makes "at most N in any minute" exact, and limits guessed.

Pacing spreads a lane's requests evenly; the cap keeps the admissions of the last minute (the
tokens each was charged, corrected once its answer reports them), and a request never makes them
exceed the limit, whatever pacing allowed. Tokens are capped over any ``SHORT`` seconds too, at
that part of the per-minute limit: a server may enforce its per-minute limit over short windows
(Azure OpenAI over 1 or 10 s), where pacing's one second of tokens ahead would overspend one (the
pace keeps its margin below the caps). Where a 429 has shown that the per-minute limits are
enforced per second, a second's admissions are capped at a second's tokens too. The successful
answers of the last minute say what the limit is when a 429 comes and none is known.
"""

from __future__ import annotations

from .._config.limits import Limits
from .._core.window import SlidingWindow
from .pace import WINDOW

__all__ = ["SHORT", "MinuteCap"]

SHORT = 10.0
"""Seconds of the shortest window a per-minute token limit is assumed enforced over, from the
start: Azure OpenAI "evaluates the rate of incoming requests over a small period of time,
typically 1 or 10 seconds" (https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/quota).
One second is assumed only on the evidence of a 429, as capping each second costs rate."""


class MinuteCap:
    """The admissions and the successful answers of one lane's last minute."""

    __slots__ = ("_admissions", "_answers", "_short")

    def __init__(self) -> None:
        self._admissions = SlidingWindow(WINDOW)  # [admitted at, tokens charged]
        self._short = SlidingWindow(SHORT)  # the same entries, of the last SHORT seconds
        self._answers = SlidingWindow(WINDOW)  # successful answers: [answered at, tokens]

    def admit(self, now: float, tokens: int) -> list[float]:
        """Record an admission at ``now``; return its entry (for ``settle``)."""
        entry = self._admissions.add(now, float(tokens))
        self._short.hold(entry)
        self._short.expire(now)  # read only where there is a TPM: kept short regardless
        return entry

    def take_back(self, entry: list[float]) -> None:
        """Forget the admission ``entry``, the newest, recorded a moment ago: it did not happen."""
        self._admissions.drop_newest(1)
        if len(self._short) and self._short[len(self._short) - 1] is entry:
            self._short.drop_newest(1)

    def next_room(self, now: float) -> float:
        """The next time after ``now`` that an admission leaves a window the caps read (the
        minute, ``SHORT`` seconds, the second): room may open for a request then."""
        at = float("inf")
        for window, width in ((self._admissions, WINDOW), (self._short, SHORT)):
            if len(window):
                at = min(at, window[0][0] + width)
        recent = self._admissions.newer_than(now - 1.0)
        if recent:
            at = min(at, recent[0][0] + 1.0)
        return at

    def settle(self, entry: list[float], tokens: int, now: float) -> None:
        """The admission ``entry`` was answered at ``now``, and really cost ``tokens``."""
        self._short.reweigh(entry, float(tokens), now)
        self._admissions.adjust(entry, float(tokens), now)
        self._answers.add(now, float(tokens))
        self._answers.expire(now)

    def per_request(self) -> float | None:
        """The tokens charged per admission in the last minute (None: there were none)."""
        admissions = self._admissions
        return admissions.total / len(admissions) if len(admissions) else None

    def wait(
        self,
        now: float,
        tokens: int,
        limits: Limits,
        share: float,
        *,
        per_second: bool,
    ) -> float:
        """When the cap lets a request of ``tokens`` in (``now`` if it does already), for a lane
        with ``share`` of ``limits``; ``per_second``: tokens are capped per second too, and over
        ``SHORT`` seconds always."""
        window = self._admissions
        window.expire(now)
        rpm = max(1, int(limits.rpm * share)) if limits.rpm is not None else None
        tpm = limits.tpm * share if limits.tpm is not None else None
        at = now
        if rpm is not None and len(window) >= rpm:
            at = max(at, window[len(window) - rpm][0] + WINDOW)
        if tpm is not None and window.total + tokens > tpm:
            excess = window.total + tokens - tpm
            for t, cost in window:
                excess -= cost
                if excess <= 0:
                    at = max(at, t + WINDOW)
                    break
        if tpm is not None:
            at = max(at, self._short_wait(now, tokens, tpm * SHORT / WINDOW))
            if per_second:
                at = max(at, self._second_wait(now, tokens, tpm / 60))
        return at

    def _short_wait(self, now: float, tokens: int, budget: float) -> float:
        """When the tokens admitted in the last ``SHORT`` seconds leave room for ``tokens``
        within ``budget`` (a request alone in the window always fits)."""
        short = self._short
        short.expire(now)
        if not len(short) or short.total + tokens <= budget:
            return now
        excess = short.total + tokens - budget
        for t, cost in short:
            excess -= cost
            if excess <= 0:
                return t + SHORT
        return short[len(short) - 1][0] + SHORT

    def _second_wait(self, now: float, tokens: int, budget: float) -> float:
        """When the tokens admitted in the last second leave room for ``tokens`` within a
        second's ``budget`` (a request alone in its second always fits, as servers allow)."""
        recent = self._admissions.newer_than(now - 1.0)
        used = sum(e[1] for e in recent)
        if not recent or used + tokens <= budget:
            return now
        excess = used + tokens - budget
        for t, cost in recent:
            excess -= cost
            if excess <= 0:
                return t + 1.0
        return recent[-1][0] + 1.0

    def learned(self, limits: Limits, scope: str | None) -> Limits:
        """``limits`` with what got through in the last minute taken as the limit that a 429 of
        ``scope`` (requests, tokens, or unsaid) hit, where none was known."""
        if scope in (None, "requests") and limits.rpm is None:
            count = max(1, len(self._answers))
            limits = Limits(count, limits.tpm, limits.rpd)
        if scope == "tokens" and limits.tpm is None:
            total = max(1, int(self._answers.total))
            limits = Limits(limits.rpm, total, limits.rpd)
        return limits
