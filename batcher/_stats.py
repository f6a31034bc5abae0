"""Run statistics: one frozen snapshot read by the progress display, the summary and benchmarks."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["RateMeter", "RunSummary", "Statistics"]


@dataclass(frozen=True, slots=True)
class Statistics:
    """Where a run stands right now."""

    total: int
    done: int
    ok: int
    errors: int
    skipped: int
    in_flight: int
    requests: int
    input_tokens: int
    output_tokens: int
    requests_per_minute: float
    tokens_per_minute: float
    elapsed: float
    quota_wait: float | None = None
    """Seconds until the quota reset the run is waiting for, if it waits for one."""

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.skipped - self.done)

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace of the last minute, or None before there is a pace."""
        if self.remaining == 0:
            return 0.0
        if self.requests_per_minute <= 0:
            return None
        return self.remaining / self.requests_per_minute * 60


@dataclass(frozen=True, slots=True)
class RunSummary:
    """How a run ended. ``exit_code`` is the CLI's: 0 all ok, 1 some jobs ended in error, 3 some
    jobs wait for a daily quota (``deferred``; ``quota_stops`` says which and until when), 130 or
    143 stopped by SIGINT or SIGTERM."""

    out: str
    total: int
    ok: int
    errors: int
    skipped: int
    finished: int
    requests: int
    input_tokens: int
    output_tokens: int
    elapsed: float
    deferred: int = 0
    quota_stops: tuple[str, ...] = ()
    interrupted: int | None = None
    """The signal that stopped the run (SIGINT, SIGTERM), if one did."""

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return 128 + self.interrupted
        if self.deferred:
            return 3
        return 1 if self.errors else 0


class RateMeter:
    """Events and their token counts over a sliding window, for per-minute rates."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def add(self, now: float, tokens: int) -> None:
        self._events.append((now, tokens))
        self._tokens += tokens
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window:
            self._tokens -= self._events.popleft()[1]

    def per_minute(self, now: float, started: float) -> tuple[float, float]:
        """(events, tokens) per minute over the window, or over the run if it is younger."""
        self._trim(now)
        span = min(self.window, max(now - started, 1e-9))
        scale = 60.0 / span
        return len(self._events) * scale, self._tokens * scale
