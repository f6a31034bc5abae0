"""batcher's exceptions: one small tree, each carrying what a user needs to act.

    BatcherError
    ├── UsageError            options that cannot work (exit 2)
    ├── InputError            bad job files or lines, each problem named (exit 2)
    └── ProviderError         what a provider answered, classified once
        ├── FatalProviderError      wrong for the whole run: bad key, unknown model
        ├── PermanentJobError       wrong for one job: a 400, a blocked prompt
        └── RetryableError          may pass: 429, 5xx, timeouts, dropped connections

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
