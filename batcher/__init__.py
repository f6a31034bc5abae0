"""batcher: push large sets of LLM prompts through rate-limited APIs, and never lose work.

The public API is what this module exports; everything in underscored modules is private.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._config.prices import Price, Prices, load_prices
from ._core.errors import (
    BadOption,
    BatcherError,
    DamagedFile,
    DirectoryLocked,
    FatalProviderError,
    InputError,
    InputProblem,
    InvalidOutput,
    NetworkRefused,
    Outage,
    PermanentJobError,
    ProviderError,
    ProxyRefused,
    QuotaExhausted,
    RateLimitError,
    RetryableError,
    SchemaError,
    UntrustedCertificate,
    UsageError,
    WriteFailed,
)
from ._core.stats import RunSummary, Statistics
from ._jobs import Job, Message, Part

if TYPE_CHECKING:
    from ._api import run, run_sync
    from ._config.cost_options import BatchOptions, CostOptions
    from ._config.keywords import RunKeywords
    from ._config.media_options import MediaOptions
    from ._config.options import EndpointOptions, RequestOptions, ResumeOptions
    from ._config.quota_options import LimitOptions, PoolOptions
    from ._core.clock import Clock, SystemClock
    from ._engine.runner import Runner, RunOptions
    from ._jobs import ColumnOptions
    from ._rundir.answers import results, results_table
    from ._rundir.export import Exported, export

# Loaded on first use, so that `batcher --help` and `batcher status` start fast (no httpx, anyio).
# The option groups, one per section of RunOptions: (module, name there).
_LAZY = {
    "run": ("._api", "run"),
    "run_sync": ("._api", "run_sync"),
    "Clock": ("._core.clock", "Clock"),
    "SystemClock": ("._core.clock", "SystemClock"),
    "Runner": ("._engine.runner", "Runner"),
    "RunOptions": ("._engine.runner", "RunOptions"),
    "RunKeywords": ("._config.keywords", "RunKeywords"),
    "EndpointOptions": ("._config.options", "EndpointOptions"),
    "RequestOptions": ("._config.options", "RequestOptions"),
    "LimitOptions": ("._config.quota_options", "LimitOptions"),
    "ResumeOptions": ("._config.options", "ResumeOptions"),
    "ColumnOptions": ("._jobs", "ColumnOptions"),
    "CostOptions": ("._config.cost_options", "CostOptions"),
    "BatchOptions": ("._config.cost_options", "BatchOptions"),
    "MediaOptions": ("._config.media_options", "MediaOptions"),
    "PoolOptions": ("._config.quota_options", "PoolOptions"),
    "results": ("._rundir.answers", "results"),
    "export": ("._rundir.export", "export"),
    "Exported": ("._rundir.export", "Exported"),
    "results_table": ("._rundir.answers", "results_table"),
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
    "Exported",
    "FatalProviderError",
    "InputError",
    "InputProblem",
    "InvalidOutput",
    "Job",
    "LimitOptions",
    "MediaOptions",
    "Message",
    "NetworkRefused",
    "Outage",
    "Part",
    "PermanentJobError",
    "PoolOptions",
    "Price",
    "Prices",
    "ProviderError",
    "ProxyRefused",
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
    "UntrustedCertificate",
    "UsageError",
    "WriteFailed",
    "export",
    "load_prices",
    "results",
    "results_table",
    "run",
    "run_sync",
]
