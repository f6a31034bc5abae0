"""batcher's exceptions: one small tree, each carrying what a user needs to act.

    BatcherError
    ├── UsageError            options that cannot work (exit 2)
    ├── InputError            bad job files or lines, each problem named (exit 2)
    └── ProviderError         what a provider answered, classified once
        ├── FatalProviderError      wrong for the whole run: bad key, unknown model
        ├── PermanentJobError       wrong for one job: a 400, a blocked prompt
        └── RetryableError          may pass: 5xx, timeouts, dropped connections
            └── RateLimitError      a 429: the model's lane pauses (or stops for the day)
    QuotaExhausted            a model's daily quota is spent: its jobs wait for the reset (exit 3)

httpx exceptions are translated into ``RetryableError`` in ``_providers``, at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BatcherError",
    "FatalProviderError",
    "InputError",
    "InputProblem",
    "PermanentJobError",
    "ProviderError",
    "QuotaExhausted",
    "RateLimitError",
    "RetryableError",
    "UsageError",
]


class BatcherError(Exception):
    """The root of every error batcher raises on purpose."""


class UsageError(BatcherError):
    """Options that cannot work together or make no sense."""


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One bad input: where it is (file and line or row), the job id if known, and what is wrong."""

    where: str
    message: str
    job_id: str | None = None

    def __str__(self) -> str:
        job = f" (job {self.job_id!r})" if self.job_id is not None else ""
        return f"{self.where}{job}: {self.message}"


class InputError(BatcherError):
    """Bad job input; carries every problem found (up to a cap) so a user can fix them at once."""

    def __init__(self, problems: list[InputProblem], *, more: int = 0) -> None:
        self.problems = problems
        self.more = more
        lines = [str(p) for p in problems]
        if more:
            lines.append(f"... and {more} more problem(s)")
        super().__init__("\n".join(lines))


class ProviderError(BatcherError):
    """An answer from a provider that is not a usable completion."""

    kind: str = "provider"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class FatalProviderError(ProviderError):
    """Wrong for the whole run (bad key, unknown model): retrying or going on is pointless."""

    kind = "fatal"


class PermanentJobError(ProviderError):
    """Wrong for this one job (a 400, a blocked prompt): recorded as its result, not retried."""

    kind = "permanent"


class RetryableError(ProviderError):
    """May pass on a later attempt; ``retry_after`` is the server's own delay in seconds."""

    kind = "retryable"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class RateLimitError(RetryableError):
    """A 429. ``scope`` is what ran out (``requests``, ``tokens`` or None if unsaid), ``quota`` the
    provider's name for the quota, and ``per_day`` whether waiting for minutes is pointless."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        body: str | None = None,
        retry_after: float | None = None,
        scope: str | None = None,
        quota: str | None = None,
        per_day: bool = False,
    ) -> None:
        super().__init__(message, status=status, body=body, retry_after=retry_after)
        self.scope = scope
        self.quota = quota
        self.per_day = per_day


class QuotaExhausted(BatcherError):
    """A model's daily quota is spent (counted here, or said by the server) until ``resets_at``."""

    def __init__(self, model: str, why: str, resets_at: float) -> None:
        from datetime import datetime

        from ._clock import QUOTA_TZ

        when = datetime.fromtimestamp(resets_at, QUOTA_TZ).strftime("%Y-%m-%d %H:%M %Z")
        super().__init__(f"{model}: {why}; the quota resets at {when}")
        self.model = model
        self.why = why
        self.resets_at = resets_at
