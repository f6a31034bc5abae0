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
    from ._jobs import ColumnMapping as ColumnOptions
    from ._options import BatchMode as BatchOptions
    from ._options import Costs as CostOptions
    from ._options import Endpoint as EndpointOptions
    from ._options import LimitOptions, MediaOptions, PoolOptions, RunKeywords
    from ._options import Requests as RequestOptions
    from ._options import Resume as ResumeOptions
    from ._results import results
    from ._runner import Runner, RunOptions

# Loaded on first use, so that `batcher --help` and `batcher status` start fast (no httpx, anyio).
# The option groups, one per section of RunOptions: (module, name there).
_LAZY = {
    "run": ("._api", "run"),
    "run_sync": ("._api", "run_sync"),
    "Clock": ("._clock", "Clock"),
    "SystemClock": ("._clock", "SystemClock"),
    "Runner": ("._runner", "Runner"),
    "RunOptions": ("._runner", "RunOptions"),
    "RunKeywords": ("._options", "RunKeywords"),
    "EndpointOptions": ("._options", "Endpoint"),
    "RequestOptions": ("._options", "Requests"),
    "LimitOptions": ("._options", "LimitOptions"),
    "ResumeOptions": ("._options", "Resume"),
    "ColumnOptions": ("._jobs", "ColumnMapping"),
    "CostOptions": ("._options", "Costs"),
    "BatchOptions": ("._options", "BatchMode"),
    "MediaOptions": ("._options", "MediaOptions"),
    "PoolOptions": ("._options", "PoolOptions"),
    "results": ("._results", "results"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module, __name__), attribute)
    raise AttributeError(f"module 'batcher' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, the lazily loaded ones too."""
    return sorted(__all__)


__all__ = [
    "BadOption",
    "BatchOptions",
    "BatcherError",
    "Clock",
    "ColumnOptions",
    "CostOptions",
    "DamagedFile",
    "DirectoryLocked",
    "EndpointOptions",
    "FatalProviderError",
    "InputError",
    "InputProblem",
    "InvalidOutput",
    "Job",
    "LimitOptions",
    "MediaOptions",
    "Message",
    "Outage",
    "Part",
    "PermanentJobError",
    "PoolOptions",
    "Price",
    "Prices",
    "ProviderError",
    "QuotaExhausted",
    "RateLimitError",
    "RequestOptions",
    "ResumeOptions",
    "RetryableError",
    "RunKeywords",
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
