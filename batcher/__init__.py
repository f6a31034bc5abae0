"""batcher: push large sets of LLM prompts through rate-limited APIs, and never lose work.

The public API is what this module exports; everything in underscored modules is private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    BadOption,
    BatcherError,
    DamagedFile,
    DirectoryLocked,
    FatalProviderError,
    InputError,
    InputProblem,
    InvalidOutput,
    Outage,
    PermanentJobError,
    ProviderError,
    QuotaExhausted,
    RateLimitError,
    RetryableError,
    SchemaError,
    UsageError,
    WriteFailed,
)
from ._jobs import Job, Message, Part
from ._prices import Price, Prices, load_prices
from ._stats import RunSummary, Statistics

if TYPE_CHECKING:
    from ._api import run, run_sync
    from ._clock import Clock, SystemClock
    from ._results import results
    from ._runner import Runner, RunOptions

# Loaded on first use, so that `batcher --help` and `batcher status` start fast (no httpx, anyio).
_LAZY = {
    "run": "._api",
    "run_sync": "._api",
    "Clock": "._clock",
    "SystemClock": "._clock",
    "Runner": "._runner",
    "RunOptions": "._runner",
    "results": "._results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'batcher' has no attribute {name!r}")


__all__ = [
    "BadOption",
    "BatcherError",
    "Clock",
    "DamagedFile",
    "DirectoryLocked",
    "FatalProviderError",
    "InputError",
    "InputProblem",
    "InvalidOutput",
    "Job",
    "Message",
    "Outage",
    "Part",
    "PermanentJobError",
    "Price",
    "Prices",
    "ProviderError",
    "QuotaExhausted",
    "RateLimitError",
    "RetryableError",
    "RunOptions",
    "RunSummary",
    "Runner",
    "SchemaError",
    "Statistics",
    "SystemClock",
    "UsageError",
    "WriteFailed",
    "load_prices",
    "results",
    "run",
    "run_sync",
]
