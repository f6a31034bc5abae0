"""The mock provider's rate limits, enforced the way each provider does.

Limits apply per project: the keys a ``MockConfig`` groups into one project share its limits,
and each key it names alone is a project of its own; keys it does not name share one project.

Gemini: per model, per clock minute (requests and input tokens) and per Pacific quota day; only
accepted requests count. OpenAI: per model, the per-minute limits quantized per second (60,000 RPM
is 1,000 a second), a request charged its prompt tokens plus ``max_tokens``, and rejected requests
count against the limit too. ``window`` quantizes them per that many seconds instead: Azure OpenAI
evaluates its limits "over a small period of time, typically 1 or 10 seconds"
(https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/quota), so 60,000 TPM is then
10,000 tokens in each clock 10 s. With ``quantized=False`` the OpenAI style is enforced over a
sliding minute instead, as an OpenAI-compatible server that does not quantize would.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from .._config.limits import Limits
from .._core.clock import quota_day
from .._core.window import SlidingWindow

__all__ = ["Enforcer", "Rejection"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request was refused: which quota, its limit, what was used, and when to retry."""

    scope: str  # "requests", "tokens" or "day"
    limit: int
    used: int
    retry_after: float


@dataclass
class _Usage:
    window: int = -1
    requests: int = 0
    tokens: int = 0
    day: date | None = None
    today: int = 0
    minute: SlidingWindow = field(default_factory=lambda: SlidingWindow(60.0))
    """OpenAI style: every request of the last minute and its tokens (headers; sliding limits)."""


class Enforcer:
    """Counts each model's use and refuses what goes over ``limits_for(model)``."""

    def __init__(
        self,
        limits_for: Callable[[str], Limits],
        clock: Callable[[], float] = time.time,
        *,
        quantized: bool = True,
        window: float = 1.0,
    ) -> None:
        self.limits_for = limits_for
        self.clock = clock
        self.quantized = quantized
        self.window = window
        """Seconds per quantum of the OpenAI style: its per-minute limits are ``window / 60`` of
        them in each clock window of that many seconds."""
        self._usage: dict[tuple[str, str, str], _Usage] = defaultdict(
            _Usage
        )  # style, project, model
        self._limits: dict[str, Limits] = {}  # limits_for's answers: a model's limits never change

    def _limits_of(self, model: str) -> Limits:
        limits = self._limits.get(model)
        if limits is None:
            limits = self._limits[model] = self.limits_for(model)
        return limits

    def _day(self, u: _Usage, now: float, rpd: int | None) -> Rejection | None:
        day = quota_day(now)
        if u.day != day:
            u.day, u.today = day, 0
        if rpd is not None and u.today >= rpd:
            return Rejection("day", rpd, u.today, 60 - now % 60)
        return None

    def check(
        self,
        style: str,
        model: str,
        tokens: int,
        max_tokens: int | None = None,
        *,
        project: str = "",
    ) -> Rejection | None:
        """Count a request of ``tokens`` prompt tokens for ``model`` in ``project``; say why it
        is refused, if it is. A model without limits is not counted: nothing would ever read its
        usage."""
        limits = self._limits_of(model)
        if limits.empty:
            return None
        now = self.clock()
        u = self._usage[(style, project, model)]
        if style == "gemini":
            return self._gemini(u, limits, now, tokens)
        return self._openai(u, limits, now, tokens + (max_tokens or 0))

    def _gemini(self, u: _Usage, limits: Limits, now: float, tokens: int) -> Rejection | None:
        minute = int(now // 60)
        if u.window != minute:
            u.window, u.requests, u.tokens = minute, 0, 0
        if rejected := self._day(u, now, limits.rpd):
            return rejected
        retry = 60 - now % 60
        if limits.rpm is not None and u.requests >= limits.rpm:
            return Rejection("requests", limits.rpm, u.requests, retry)
        if limits.tpm is not None and u.tokens + tokens > limits.tpm:
            return Rejection("tokens", limits.tpm, u.tokens, retry)
        u.requests += 1
        u.tokens += tokens
        u.today += 1
        return None

    def _openai(self, u: _Usage, limits: Limits, now: float, tokens: int) -> Rejection | None:
        quantum = int(now // self.window)
        if u.window != quantum:
            u.window, u.requests, u.tokens = quantum, 0, 0
        u.minute.add(now, tokens)
        u.minute.expire(now)
        if rejected := self._day(u, now, limits.rpd):
            return rejected
        if not self.quantized:
            return self._sliding_minute(u, limits, now, tokens)
        share = self.window / 60
        retry = self.window - now % self.window
        u.requests += 1  # rejected requests count too
        if limits.rpm is not None and u.requests > limits.rpm * share:
            return Rejection("requests", limits.rpm, len(u.minute), retry)
        if limits.tpm is not None and u.tokens and u.tokens + tokens > limits.tpm * share:
            return Rejection("tokens", limits.tpm, int(u.minute.total), retry)
        u.tokens += tokens
        u.today += 1
        return None

    def _sliding_minute(
        self, u: _Usage, limits: Limits, now: float, tokens: int
    ) -> Rejection | None:
        """Over the last 60 s, this request (counted even if refused) included."""
        retry = max(0.001, u.minute[0][0] + 60 - now)
        if limits.rpm is not None and len(u.minute) > limits.rpm:
            return Rejection("requests", limits.rpm, len(u.minute), retry)
        if limits.tpm is not None and u.minute.total > limits.tpm and len(u.minute) > 1:
            return Rejection("tokens", limits.tpm, int(u.minute.total), retry)
        u.today += 1
        return None

    def headers(self, model: str, project: str = "") -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for ``model`` in ``project`` as things stand."""
        limits = self._limits_of(model)
        if limits.empty:
            return {}
        u = self._usage[("openai", project, model)]
        now = self.clock()
        reset = f"{max(1, math.ceil((self.window - now % self.window) * 1000))}ms"
        out = {}
        if limits.rpm is not None:
            out["x-ratelimit-limit-requests"] = str(limits.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - len(u.minute)))
            out["x-ratelimit-reset-requests"] = reset
        if limits.tpm is not None:
            used = int(u.minute.total)
            out["x-ratelimit-limit-tokens"] = str(limits.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - used))
            out["x-ratelimit-reset-tokens"] = reset
        return out
