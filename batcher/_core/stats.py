"""Run statistics: one frozen snapshot read by the progress display, the summary and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RunSummary", "Statistics"]


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
    batches: str | None = None
    """The provider batches the run waits for, by state (``2 in_progress, 1 completed``)."""
    cost_usd: float = 0.0
    """Dollars this run's answers cost so far (those whose model has a known price)."""

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
    jobs wait for a daily quota (``deferred``; ``quota_stops`` says which and until when), 5 the
    ``--budget`` stopped it (``budget_stop``), 6 batches still running at the provider
    (``batches_pending``), 130 or 143 stopped by SIGINT or SIGTERM."""

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
    cost_usd: float = 0.0
    """Dollars this run's answers cost (those whose model has a known price)."""
    spent_usd: dict[str, float] = field(default_factory=dict)
    """Dollars per model of every result in the directory, earlier runs' included."""
    budget_stop: str | None = None
    """Why the run stopped at its ``--budget``, if it did (exit 5)."""

    @property
    def remaining(self) -> int:
        """Jobs without a result in the directory."""
        return max(0, self.total - self.ok - self.errors)

    timeouts: int = 0
    """Requests of this run that timed out after leaving (``outcome`` ``timeout`` in the attempt
    log): the provider may have finished and billed them, beyond ``cost_usd``."""
    batches_pending: int = 0
    """Provider batches still running when the run ended (``no_wait``): a rerun collects them."""

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return 128 + self.interrupted
        if self.budget_stop is not None:
            return 5
        if self.batches_pending:
            return 6
        if self.deferred:
            return 3
        return 1 if self.errors else 0
