"""How a job ended, as every executor says it: ``Done | Deferred | Fatal | Halted | Abandoned``.

An executor writes nothing back into the run's state; the one consumer (``_engine.consume``) decides
what an outcome means: record it, wait for the reset, stop the run, leave it for a rerun. The
online executor returns one per job it is handed; the batch executor hands one per line it collects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .._core.errors import FatalProviderError, Outage, QuotaExhausted
from .._rundir.rows import Record

__all__ = ["ABANDONED", "Abandoned", "Deferred", "Done", "Fatal", "Halted", "Outcome"]


@dataclass(frozen=True, slots=True)
class Done:
    """The job finished, ok or with an error of its own: record it."""

    record: Record


@dataclass(frozen=True, slots=True)
class Deferred:
    """The model's daily quota is spent: the job waits for the reset."""

    stop: QuotaExhausted


@dataclass(frozen=True, slots=True)
class Fatal:
    """The provider refused the whole run (bad key, unknown model) on this job's model; the
    error's message says so in words a user can act on."""

    error: FatalProviderError
    model: str


@dataclass(frozen=True, slots=True)
class Halted:
    """The endpoint has been down for longer than the run waits: the run stops."""

    error: Outage


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The run is stopping: the job was not sent (again), and is left for a rerun."""


Outcome: TypeAlias = Done | Deferred | Fatal | Halted | Abandoned

ABANDONED = Abandoned()
