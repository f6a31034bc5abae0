"""batcher on a Ray cluster: the same lanes, quotas and exactly-once results as one machine.

``process(ds, out, ...)`` maps a ``ray.data.Dataset`` of job rows to a Dataset of result rows
(the results' schema), so it composes with the rest of a Ray pipeline; ``batcher run ... --ray
local|ADDRESS`` runs a command-line job on a cluster (``run_files``). Needs the ``batcher[ray]``
extra; ray is imported only here, and only when called, so ``import batcher`` works without it.

Each worker (``ray.blocks.BlockWorker``) sends its blocks through the pool, executors and lanes of
a local run (a pool of one without ``--pool``); the lanes of every worker draw on one budget per
account (an endpoint's project, else its key): a named, detached async actor
(``_admission.grants.Budget``, see ``ray.endpoints``) that grants capacity in chunks, so the
cluster as a whole stays under each model's RPM, TPM and RPD and a 429 pauses every worker of that
model. Under ``--budget`` the workers reserve each job's cost from one spend
(``_engine.budget.SharedSpend``), an actor of the run.
Each block's results are journaled, then written as a part of ``DIR/results``, exactly once even
when Ray retries a block whose worker died (see ``ray.blocks``).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._config.options import RunOptions, option_flag
from .._config.prices import Prices
from .._config.schema import OutputSchema, load_schema
from .._core.errors import UsageError
from .._core.idset import IdSet
from .._core.stats import RunSummary
from .._engine import support
from .._engine.budget import SharedSpend
from .._engine.tally import Tally
from .._jobs import JobSource
from .._rundir.batchlog import BatchLog
from .._rundir.dirlock import DirLock
from .._rundir.image_files import clear_partial
from .._rundir.manifest import Manifest
from .._rundir.resume import plan_resume
from .._rundir.store import Record
from .._wire.providers import get_provider
from .blocks import JOB_COLUMN, BlockWorker, done_hashes, recover, wait_for_writers
from .cluster import LOCAL_ENV, connect, import_ray
from .endpoints import Endpoint, Endpoints, budget, run_specs

__all__ = [
    "LOCAL_ENV",
    "Interrupt",
    "ThreadClock",
    "budget",
    "connect",
    "process",
    "run_files",
    "shared_spend",
]

log = logging.getLogger("batcher")

BATCH_SIZE = 256
"""Jobs in a block a worker sends at once (and writes as one part of the results)."""


_started: list[Endpoints] = []
"""Endpoints started for datasets not yet consumed (an embedded mock lives as long as this
process)."""


def process(
    ds: Any,
    out: str | os.PathLike[str],
    *,
    workers: int = 2,
    batch_size: int = BATCH_SIZE,
    num_cpus: float = 1.0,
    options: RunOptions | None = None,
    **flat: Any,
) -> Any:
    """Send the jobs of ``ds`` (rows as in a job file; each needs an id) and return a Dataset of
    their result rows, the schema of ``DIR/results``; ``out`` gets every result, exactly once.

    Options are ``batcher.run``'s (``options=`` or its keywords); ``max_concurrency`` is per
    worker, and limits are for the whole cluster. ``workers`` actors (of ``num_cpus`` each) send
    blocks of ``batch_size`` jobs. Ids already finished in ``out`` are skipped and give no row;
    a row that cannot be sent comes back with ``status="error"``, as a provider's error does.
    The Dataset is lazy: nothing is sent until it is consumed (``write_parquet``, ``take``...).
    """
    if options is not None and flat:
        raise TypeError("give options= or option keywords, not both")
    opts = options if options is not None else RunOptions(**flat)
    if workers < 1 or batch_size < 1:
        raise UsageError("workers and batch_size must be at least 1")
    opts = check_options(opts)
    import_ray()
    path = Path(out)
    check_no_batches(path)
    schema = _schema(opts)
    recover(path, schema.arrow_type() if schema is not None else None)
    clear_partial(path)
    endpoints = Endpoints(opts, schema)
    endpoints.start()
    _started.append(endpoints)
    prices = opts.costs.prices()
    return _map(
        ds,
        path,
        opts,
        endpoints.for_workers(path),
        done_hashes(path),
        workers,
        batch_size,
        num_cpus,
        spend=shared_spend(opts, path, prices),
        prices=prices,
    )


def shared_spend(options: RunOptions, out: Path, prices: Prices) -> Any:
    """Under ``--budget``, the run's spend for every worker to reserve from: an async actor
    (``_engine.budget.SharedSpend``) starting at what ``out``'s results cost already; None
    without a budget. It lives as long as this driver."""
    from .._rundir.results import read_costs

    if options.costs.budget is None:
        return None
    spent = sum(read_costs(out).values())
    actor = import_ray().remote(SharedSpend).options(num_cpus=0)
    return actor.remote(options.costs.budget, spent, prices)


def check_options(opts: RunOptions) -> RunOptions:
    """Refuse what a cluster run does not do (yet: the ``ray`` column of ``_engine.support``),
    and what a local run refuses, before Ray starts. Return the options
    as the workers take them: the output schema loaded here (its file read, its pydantic model
    imported, checked for the wire), so that a worker needs neither the file nor this process's
    working directory, and types ``parsed`` as a local run does (a model travels by reference:
    its module must be importable on the workers, see README)."""
    specs, _ = run_specs(opts)  # a pool file is read and checked here
    # the ``ray`` column of the one table of what each way does
    support.check(opts, ray=True, provider=specs[0].provider)
    wires = sorted({spec.provider for spec in specs})
    for wire in wires:
        get_provider(wire, opts.media.api)  # --endpoint images speaks OpenAI's
    if opts.requests.schema is None:
        return opts
    schema = load_schema(opts.requests.schema)
    for wire in wires:  # each endpoint asks for the schema in its own wire's form
        schema.check_wire(wire)
    return replace(opts, requests=replace(opts.requests, schema=schema))


def _schema(opts: RunOptions) -> OutputSchema | None:
    """The run's output schema, once ``check_options`` loaded it."""
    schema = opts.requests.schema
    assert schema is None or isinstance(schema, OutputSchema)
    return schema


def check_no_batches(out: Path) -> None:
    """Refuse a directory whose batches are still pending: they may still answer (and bill) jobs
    the cluster would send again; a run without ``--ray`` cancels and collects them first."""
    pending = BatchLog(out).open_chunks()
    if pending:
        raise UsageError(
            f"{out} has {len(pending)} batches still pending: collect them (rerun with --mode "
            f"batch), or run once without {option_flag('ray')} (it cancels them and keeps what "
            "they answered) before sending online on a cluster"
        )


def _map(
    ds: Any,
    out: Path,
    opts: RunOptions,
    endpoints: list[Endpoint],
    done: IdSet,
    workers: int,
    batch_size: int,
    num_cpus: float,
    *,
    run: str = "",
    spend: Any = None,
    prices: Prices | None = None,
) -> Any:
    ray = import_ray()
    return ds.map_batches(
        BlockWorker,
        fn_constructor_kwargs={
            "out": str(out.absolute()),  # a worker's working directory is not this one
            "options": opts,
            "endpoints": endpoints,
            "done": done,
            "run": run,
            "spend": spend,
            "prices": prices,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
    )


def run_files(
    jobs: Any,
    out: str | os.PathLike[str],
    options: RunOptions,
    *,
    tally: Tally | None = None,
    interrupt: Interrupt | None = None,
) -> RunSummary:
    """``batcher run --ray``: a run of job files (or Python jobs) on a cluster, reading and
    writing ``out`` as a local run does (the lock, ``run.json``, resuming, the ledger).
    ``interrupt`` lets another thread stop it (a signal)."""
    from .._rundir.results import read_costs, read_results

    ray = import_ray()
    opts = check_options(options)
    address = opts.requests.ray or "local"
    path = Path(out)
    schema = _schema(opts)
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
    lock = DirLock(path)
    lock.acquire()
    try:
        wait_for_writers(path)
        old = Manifest.read(path)
        if old is not None:
            old.check_same_run(provider_name, opts.requests.model, path)
            old.check_same_schema(schema_json, path, opts.resume.redo_changed)
        check_no_batches(path)
        store = recover(path, parsed)
        plan = plan_resume(source, store, first.provider, opts.resume)
        endpoints.start()
        Manifest(
            provider=provider_name,
            model=opts.requests.model,
            base_url="mock" if first.is_mock else first.base_url,
            total=plan.total,
            inputs=tuple(str(p) for p in source.paths),
            quota_day=opts.limits.quota_day,
            limits=endpoints.specs[0].limits,
            schema=schema_json,
            endpoints={} if endpoints.solo else {s.name: s.limits for s in endpoints.specs},
        ).write(path)
        clear_partial(path)
        tally = tally or Tally(ThreadClock())
        tally.total = plan.total
        rows = []
        for job in source:
            if job.id in plan.done:
                tally.skipped += 1
            else:
                rows.append({JOB_COLUMN: pickle.dumps(job)})
        connect(address)
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
            results = _map(
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
        lock.release()


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
