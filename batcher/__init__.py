"""batcher: push large sets of LLM prompts through rate-limited APIs, and never lose work.

The public API is what this module exports; everything in underscored modules is private.
"""

from ._api import run, run_sync
from ._clock import Clock, SystemClock
from ._errors import (
    BatcherError,
    FatalProviderError,
    InputError,
    InputProblem,
    PermanentJobError,
    ProviderError,
    QuotaExhausted,
    RateLimitError,
    RetryableError,
    UsageError,
)
from ._jobs import Job, Message, Part
from ._runner import Runner, RunOptions
from ._stats import RunSummary, Statistics

__all__ = [
    "BatcherError",
    "Clock",
    "FatalProviderError",
    "InputError",
    "InputProblem",
    "Job",
    "Message",
    "Part",
    "PermanentJobError",
    "ProviderError",
    "QuotaExhausted",
    "RateLimitError",
    "RetryableError",
    "RunOptions",
    "RunSummary",
    "Runner",
    "Statistics",
    "SystemClock",
    "UsageError",
    "run",
    "run_sync",
]
