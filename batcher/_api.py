"""The library's entry points: ``run`` (async) and ``run_sync`` (for scripts and notebooks)."""

from __future__ import annotations

import os
from typing import Any

import anyio

from ._clock import Clock
from ._progress import show_progress
from ._runner import JobsInput, Runner, RunOptions
from ._stats import RunSummary

__all__ = ["run", "run_sync"]


async def run(
    jobs: JobsInput,
    out: str | os.PathLike[str],
    *,
    progress: bool = False,
    clock: Clock | None = None,
    **options: Any,
) -> RunSummary:
    """Run ``jobs`` (file paths, or Job objects / dicts) into ``out``; return how it went.

    ``options`` are the fields of ``RunOptions`` (``provider``, ``model``, ``max_concurrency``...).
    Raises ``InputError`` before sending anything if any job is bad, ``UsageError`` for options
    that cannot work, and ``FatalProviderError`` if the provider refuses the whole run.
    """
    async with Runner(jobs, out, RunOptions(**options), clock=clock) as runner:
        if not progress:
            return await runner.run()
        async with anyio.create_task_group() as tg:
            tg.start_soon(show_progress, runner.statistics)
            try:
                summary = await runner.run()
            finally:
                tg.cancel_scope.cancel()
        return summary


def run_sync(jobs: JobsInput, out: str | os.PathLike[str], **options: Any) -> RunSummary:
    """``run`` for code that is not async; same arguments."""

    async def main() -> RunSummary:
        return await run(jobs, out, **options)

    return anyio.run(main, backend="asyncio")
