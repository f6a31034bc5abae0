"""The library's entry points: ``run`` (async) and ``run_sync`` (for scripts and notebooks)."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from typing import TYPE_CHECKING, Unpack

import anyio

from ._config.keywords import RunKeywords
from ._core.clock import Clock
from ._core.errors import BatcherError, UsageError
from ._core.stats import RunSummary
from ._engine.runner import JobsInput, Runner, RunOptions
from ._engine.tally import Tally
from ._progress import show_progress

if TYPE_CHECKING:
    import httpx  # imported only by callers that pass a transport

__all__ = ["run", "run_sync"]

log = logging.getLogger("batcher")


async def run(
    jobs: JobsInput,
    out: str | os.PathLike[str],
    *,
    progress: bool = False,
    handle_signals: bool = False,
    clock: Clock | None = None,
    options: RunOptions | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **flat: Unpack[RunKeywords],
) -> RunSummary:
    """Run ``jobs`` (file paths, or Job objects / dicts) into ``out``; return how it went.

    Options come as ``RunOptions`` (``options=``) or as its keywords (``provider``, ``model``,
    ``max_concurrency``...), not both.
    ``handle_signals`` makes SIGINT / SIGTERM stop the run gracefully (for command-line use).
    Raises ``InputError`` before sending anything if any job is bad, ``UsageError`` for options
    that cannot work, and ``FatalProviderError`` if the provider refuses the whole run
    (``ProxyRefused``, one of them, if the proxy in between does).
    """
    if options is not None and flat:
        raise TypeError("give options= or option keywords, not both")
    opts = options if options is not None else RunOptions(**flat)
    if opts.requests.ray is not None and (opts.batch.mode != "online" or opts.batch.cancel_batches):
        # The provider runs a batch: no worker has anything to do, so no cluster is started
        log.warning(
            "--mode %s needs no cluster: this machine submits and collects the batches%s; "
            "--ray %s is not joined",
            opts.batch.mode,
            " and sends what auto leaves online" if opts.batch.mode == "auto" else "",
            opts.requests.ray,
        )
        opts = replace(opts, requests=replace(opts.requests, ray=None))
    if opts.requests.ray is not None:
        if transport is not None or clock is not None:
            raise UsageError("a run on Ray takes no transport= or clock= (each worker has its own)")
        return await _run_on_ray(jobs, out, opts, progress=progress, handle_signals=handle_signals)
    async with Runner(jobs, out, opts, clock=clock, transport=transport) as runner:
        async with anyio.create_task_group() as tg:
            if progress:
                tg.start_soon(show_progress, runner.statistics)
            if handle_signals:
                tg.start_soon(_stop_on_signals, runner)
            error: BatcherError | None = None
            try:
                summary = await runner.run()
            except BatcherError as e:
                error = e  # raised below, outside the task group, so not as an exception group
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error
        return summary


async def _run_on_ray(
    jobs: JobsInput,
    out: str | os.PathLike[str],
    opts: RunOptions,
    *,
    progress: bool,
    handle_signals: bool,
) -> RunSummary:
    """A run on a Ray cluster (``batcher.ray.run_files``), its progress shown from here. A
    signal ends the cluster's work at once: what workers finished is journaled already."""
    from .ray.cluster import connect
    from .ray.mapping import check_options
    from .ray.run import Interrupt, ThreadClock, run_files

    # Read when ray is imported (by run_files, below). Once a signal has disconnected this
    # driver, a Ray call still under way on another thread (Ray Data's iterator) must fail,
    # not start a local Ray instance of its own, which took the driver past the grace it has.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    interrupt = Interrupt()

    async def stop_on_signals() -> None:
        await joined.wait()  # Ray's SIGTERM handler (set as it joins) must not replace ours
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.warning("stopping: ending the cluster's work (finished jobs are kept)")
                await anyio.to_thread.run_sync(interrupt.stop, signum)

    joined = anyio.Event()

    def join(address: str) -> None:
        """Join the cluster on the main thread, where Ray sets its handlers (``run_files`` calls
        it from its thread once the inputs are checked); ours are set after them."""

        def connect_here() -> None:
            connect(address)
            joined.set()

        anyio.from_thread.run_sync(connect_here)

    check_options(opts)
    tally = Tally(ThreadClock())
    summary: RunSummary | None = None
    error: BatcherError | None = None
    async with anyio.create_task_group() as tg:
        if progress:
            tg.start_soon(show_progress, tally.statistics)
        if handle_signals:
            tg.start_soon(stop_on_signals)
        try:
            summary = await anyio.to_thread.run_sync(
                lambda: run_files(jobs, out, opts, tally=tally, interrupt=interrupt, join=join)
            )
        except BatcherError as e:
            error = e  # raised below, outside the task group, so not as an exception group
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    assert summary is not None
    return summary


async def _stop_on_signals(runner: Runner) -> None:
    """SIGINT or SIGTERM stops the run gracefully; a second one stops it at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if runner.stopping is None:
                log.warning(
                    "stopping: no new requests; waiting up to %.0f s for those in flight "
                    "(again to stop now)",
                    runner.options.requests.grace,
                )
                runner.stop(signum)
            else:
                runner.stop_now()


def run_sync(
    jobs: JobsInput,
    out: str | os.PathLike[str],
    *,
    progress: bool = False,
    handle_signals: bool = False,
    clock: Clock | None = None,
    options: RunOptions | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **flat: Unpack[RunKeywords],
) -> RunSummary:
    """``run`` for code that is not async; same arguments."""

    async def main() -> RunSummary:
        return await run(
            jobs,
            out,
            progress=progress,
            handle_signals=handle_signals,
            clock=clock,
            options=options,
            transport=transport,
            **flat,
        )

    return anyio.run(main, backend="asyncio")
