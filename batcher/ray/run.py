"""``batcher run --ray``: a run of job files on a cluster, reading and writing its output directory
as a local run does (the lock, ``run.json``, resuming: ``_rundir.start``, as ``Runner`` does; the
ledger, the summary), and its stop on a signal (``Interrupt``).

The driver reads and checks the jobs, hands those not yet finished to the workers as pickled rows
of a dataset, counts their result rows as they come back, and says how the run ended: a fatal
answer a worker met is raised here as the local run raises it; a spend that stopped (``--budget``)
ends the run with exit 5; jobs not sent otherwise wait for a quota reset (exit 3).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._config.options import RunOptions
from .._core.idset import IdSet
from .._core.stats import RunSummary
from .._engine.tally import Tally
from .._jobs import JobSource
from .._rundir.rows import Record
from .._rundir.start import RunStart
from .._rundir.store import ResultStore
from .blocks import recover, wait_for_writers
from .cluster import connect, import_ray
from .endpoints import Endpoints
from .mapping import (
    BATCH_SIZE,
    check_no_batches,
    check_options,
    map_blocks,
    run_schema,
    shared_spend,
)
from .worker import JOB_COLUMN

__all__ = ["Interrupt", "ThreadClock", "run_files"]


def run_files(
    jobs: Any,
    out: str | os.PathLike[str],
    options: RunOptions,
    *,
    tally: Tally | None = None,
    interrupt: Interrupt | None = None,
    join: Callable[[str], None] = connect,
) -> RunSummary:
    """``batcher run --ray``: a run of job files (or Python jobs) on a cluster, reading and
    writing ``out`` as a local run does (the lock, ``run.json``, resuming, the ledger).
    ``interrupt`` lets another thread stop it (a signal). The cluster is joined (``join``: the
    CLI's does it on the main thread) once the options and the inputs are checked: a bad jobs
    file is refused at once, whatever the cluster's address."""
    from .._rundir.results import read_costs, read_results

    ray = import_ray()
    opts = check_options(options)
    address = opts.requests.ray or "local"
    path = Path(out)
    schema = run_schema(opts)
    endpoints = Endpoints(opts, schema)
    first = endpoints.first
    provider_name = endpoints.specs[0].provider
    parsed = schema.arrow_type() if schema is not None else None
    schema_json = schema.to_json() if schema is not None else None
    source = JobSource(
        jobs,
        opts.columns,
        provider=provider_name,
        default_model=opts.requests.model,
        endpoint=opts.media.api,
        defaults=opts.media.job_defaults(),
        served=endpoints.served,
    )
    start = RunStart(path, ResultStore(path, parsed=parsed), source)
    scanned = start.scan_if_fresh()
    start.acquire()  # before anything in DIR is read or written
    try:
        wait_for_writers(path)
        plan = start.plan(first.provider, provider_name, opts, schema_json, scanned)
        check_no_batches(path)
        join(address)  # the inputs are checked: nothing is refused past here but by the cluster
        recover(path, parsed)  # what dead workers left is compacted; no block marker is kept
        endpoints.start()
        start.begin(
            opts,
            provider=provider_name,
            base_url="mock" if first.is_mock else first.base_url,
            total=plan.total,
            schema=schema_json,
            pool=None if endpoints.solo else endpoints.specs,
        )
        tally = tally or Tally(ThreadClock())
        tally.total = plan.total
        rows = []
        for job in source:
            if job.id in plan.done:
                tally.skipped += 1
            else:
                rows.append({JOB_COLUMN: pickle.dumps(job)})
        budget_stop: str | None = None
        started = time.monotonic()
        tally.started = started
        if rows:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            size = max(1, min(BATCH_SIZE, -(-len(rows) // (2 * workers))))
            ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // size)))
            run = os.urandom(8).hex()
            sends = endpoints.for_workers(path)
            prices = opts.costs.prices()
            spend = shared_spend(opts, path, prices)

            def keep_counts() -> None:
                endpoints.keep_counts(path)

            if interrupt is not None:
                interrupt.before_stop = keep_counts
            results = map_blocks(
                ds,
                path,
                opts,
                sends,
                IdSet(),
                workers,
                size,
                1.0,
                run=run,
                spend=spend,
                prices=prices,
            )
            try:
                for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
                    for row in batch.to_pylist():
                        record = Record(**row)
                        tally.finished(record)
                        tally.requests += record.attempts
            except Exception:
                if interrupt is not None and interrupt.signum is not None:
                    return _interrupted(tally, path, interrupt.signum, started)
                failed = ray.get(sends[0].budget.failure.remote(run))
                keep_counts()
                if failed is None:
                    raise
                error, _ = failed  # a fatal answer is explained by the worker's pool
                raise error from None
            keep_counts()
            if spend is not None:
                budget_stop, _ = ray.get(spend.stopped.remote())  # no price: a worker failed
        elapsed = time.monotonic() - started
        recover(path, parsed).close()
        counts = read_results(path)
        finished = tally.ok + tally.errors
        # jobs not finished were left for a quota reset, or for a larger budget
        deferred = 0 if budget_stop else max(0, plan.total - tally.skipped - finished)
        return tally.summary(
            str(path),
            counts,
            elapsed=elapsed,
            spent=read_costs(path),  # every run's dollars in the results, as a local run's
            budget_stop=budget_stop,
            deferred=deferred,
            quota_stops=(f"{deferred} job(s) were not sent: a daily quota is spent",)
            if deferred
            else (),
            interrupted=None,
        )
    finally:
        endpoints.stop()
        start.release()


class Interrupt:
    """A signal for a cluster run: ``stop`` keeps the day's counts, then disconnects from the
    cluster, which ends this run's workers (what they finished is journaled; a rerun goes on)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.before_stop: Callable[[], None] | None = None

    def stop(self, signum: int) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self.before_stop is not None:
            self.before_stop()
        import_ray().shutdown()


def _interrupted(tally: Tally, out: Path, signum: int, started: float) -> RunSummary:
    from .._rundir.results import read_costs, read_results

    elapsed = time.monotonic() - started
    counts = read_results(out)
    summary = tally.summary(
        str(out),
        counts,
        elapsed=elapsed,
        spent=read_costs(out),
        deferred=0,
        quota_stops=(),
        interrupted=signum,
    )
    # blocks whose rows never reached the driver are in the results all the same
    finished = counts["ok"] + counts["error"] - tally.skipped
    return replace(summary, finished=max(summary.finished, finished))


class ThreadClock:
    """The system's clocks, readable from any thread (the driver counts results on one)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(seconds)
