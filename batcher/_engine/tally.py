"""The tally of a run: its counters, its recent rate, and the snapshots made from them.

``Statistics`` (read at any moment by the progress display, ``bench`` and callers) and the final
``RunSummary`` are both built here, from counters the scheduler and executor keep up to date.
"""

from __future__ import annotations

from .._core.clock import Clock
from .._core.stats import RunSummary, Statistics
from .._core.window import SlidingWindow
from .._rundir.rows import Record

__all__ = ["Tally"]

BUCKET = 0.25
"""Seconds of finishes counted as one entry of the recent window: a batch collected at
thousands of lines a second keeps 240 entries for its last minute, not one per job."""


class Tally:
    """Counts of one run: jobs by outcome, requests, tokens, and finishes over the last minute."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = 0.0
        self.total = 0
        self.ok = self.errors = self.skipped = 0
        self.in_flight = self.requests = 0
        self.timeouts = 0
        """Requests that timed out after leaving: the provider may have billed them."""
        self.input_tokens = self.output_tokens = 0
        self.cost_usd = 0.0
        """Dollars the answers of this run cost (those with a known price)."""
        self.waiting_until: float | None = None
        self.batches: str | None = None
        """The provider batches being waited for, by state, while a batch run waits."""
        """Wall-clock time of the quota reset the run waits for, while it waits."""
        self._recent = SlidingWindow(60.0)  # finishes by BUCKET: [first at, tokens]
        self._finishes = SlidingWindow(60.0)  # the same buckets: [first at, jobs]

    def start(self) -> None:
        self.started = self.clock.monotonic()

    def finished(self, record: Record) -> None:
        """Count a finished job (ok or error) and its tokens."""
        if record.status == "ok":
            self.ok += 1
        else:
            self.errors += 1
        tin, tout = record.input_tokens or 0, record.output_tokens or 0
        self.input_tokens += tin
        self.output_tokens += tout
        self.cost_usd += record.cost_usd or 0.0
        now = self.clock.monotonic()
        _count(self._recent, now, tin + tout)
        _count(self._finishes, now, 1)

    def statistics(self) -> Statistics:
        now = self.clock.monotonic()
        self._recent.expire(now)
        self._finishes.expire(now)
        span = min(self._recent.width, max(now - self.started, 1e-9))
        scale = 60.0 / span
        return Statistics(
            total=self.total,
            done=self.ok + self.errors,
            ok=self.ok,
            errors=self.errors,
            skipped=self.skipped,
            in_flight=self.in_flight,
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            requests_per_minute=self._finishes.total * scale,
            tokens_per_minute=self._recent.total * scale,
            elapsed=now - self.started if self.started else 0.0,
            quota_wait=(
                max(0.0, self.waiting_until - self.clock.time())
                if self.waiting_until is not None
                else None
            ),
            batches=self.batches,
            cost_usd=self.cost_usd,
        )

    def summary(
        self,
        out: str,
        counts: dict[str, int],
        *,
        elapsed: float,
        deferred: int,
        quota_stops: tuple[str, ...],
        interrupted: int | None,
        spent: dict[str, float] | None = None,
        budget_stop: str | None = None,
    ) -> RunSummary:
        """How the run ended; ``counts`` are the results directory's (``ok``, ``error``), and
        ``spent`` its dollars per model."""
        return RunSummary(
            out=out,
            total=self.total,
            ok=counts.get("ok", 0),
            errors=counts.get("error", 0),
            skipped=self.skipped,
            finished=self.ok + self.errors,
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            elapsed=elapsed,
            timeouts=self.timeouts,
            deferred=deferred if interrupted is None else 0,
            quota_stops=quota_stops,
            interrupted=interrupted,
            cost_usd=self.cost_usd,
            spent_usd=dict(spent or {}),
            budget_stop=budget_stop if interrupted is None else None,
        )


def _count(window: SlidingWindow, now: float, weight: float) -> None:
    """Add ``weight`` at ``now`` to ``window``: to its newest entry if that began less than
    ``BUCKET`` ago, else as a new entry (the window's oldest leaving as they age out)."""
    if len(window) and now - window[len(window) - 1][0] < BUCKET:
        entry = window[len(window) - 1]
        window.adjust(entry, entry[1] + weight, now)
    else:
        window.expire(now)
        window.add(now, weight)
