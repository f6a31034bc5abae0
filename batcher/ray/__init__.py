"""batcher on a Ray cluster: the same lanes, quotas and exactly-once results as one machine.

``process(ds, out, ...)`` maps a ``ray.data.Dataset`` of job rows to a Dataset of result rows
(the results' schema), so it composes with the rest of a Ray pipeline; ``batcher run ... --ray
local|ADDRESS`` runs a command-line job on a cluster (``run_files``). Needs the ``batcher[ray]``
extra; ray is imported only here, and only when called, so ``import batcher`` works without it.

Each worker (``ray.blocks.BlockWorker``) sends its blocks through the executor and lanes of a local
run; the lanes of every worker draw on one budget per project (an endpoint and key): a named,
detached async actor (``_admission.grants.Budget``) that grants capacity in chunks, so the cluster
as a whole stays under each model's RPM, TPM and RPD and a 429 pauses every worker of that model.
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

from .._admission.grants import Budget
from .._admission.ledger import DailyCount, Ledger
from .._admission.quota import Account
from .._config.options import RunOptions, option_flag
from .._config.prices import Prices
from .._config.schema import OutputSchema, load_schema
from .._core.errors import FatalProviderError, ProxyRefused, UsageError
from .._core.idset import IdSet
from .._core.stats import RunSummary
from .._engine import support
from .._engine.budget import SharedSpend
from .._engine.execute import explain
from .._engine.tally import Tally
from .._jobs import JobSource
from .._rundir.batchlog import BatchLog
from .._rundir.dirlock import DirLock
from .._rundir.image_files import clear_partial
from .._rundir.manifest import Manifest
from .._rundir.resume import plan_resume
from .._rundir.store import Record
from .._wire.endpoint import Target
from .._wire.providers import Provider, get_provider
from .._wire.providers._structured import SchemaProvider
from .blocks import JOB_COLUMN, BlockWorker, done_hashes, recover, wait_for_writers

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

NAMESPACE = "batcher"
"""The Ray namespace of the budget actors, so that every driver of a cluster finds them."""
BATCH_SIZE = 256
"""Jobs in a block a worker sends at once (and writes as one part of the results)."""

LOCAL_ENV = {
    # Ray 2.60 refuses a single-node cluster on 127.0.0.1 without it
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # no usage statistics, and nowhere to send them but loopback
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    # no token authentication between a local cluster's own processes
    "RAY_AUTH_MODE": "disabled",
}
"""The environment a local cluster needs to stay on this machine (with a ``HOME`` holding
``ray_bootstrap_config.yaml``, else the dashboard agent probes cloud metadata; README)."""


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(
            "Ray is not installed: pip install 'batcher[ray]' to run on a cluster"
        ) from None
    return ray


def connect(address: str = "local", *, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a single-node one on 127.0.0.1 (``"local"``).

    Does nothing if this process is connected already (a caller's own ``ray.init`` wins).
    """
    ray = _ray()
    if ray.is_initialized():
        return
    if address == "local":
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            namespace=NAMESPACE,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)


def budget(target: Target, options: RunOptions, out: Path | None = None) -> Any:
    """The cluster's budget for ``target``'s project (its endpoint and key): a named, detached
    async actor, made by the first driver that asks and found by the rest. This run's limits
    replace the budget's; the day's counts in ``out``'s ledger are taken for models it has not
    counted yet."""
    ray = _ray()
    project = Account.of_key(target.base_url, target.key, target.key_source).id[:16]
    limits = options.limits.table()
    actor = (
        ray.remote(Budget)
        .options(
            name=f"batcher-budget-{project}",
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
        )
        .remote(
            limits,
            per_second=target.provider.per_second_limits,
            rolling=options.limits.quota_day == "rolling",
        )
    )
    days: dict[str, Any] = dict(Ledger(out)._saved) if out is not None else {}
    ray.get(actor.configure.remote(limits, days))
    return actor


_targets: list[Target] = []
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
    _ray()
    path = Path(out)
    check_no_batches(path)
    schema = _schema(opts)
    recover(path, schema.arrow_type() if schema is not None else None)
    clear_partial(path)
    target = Target(opts.endpoint, _provider(opts))
    target.start()
    _targets.append(target)
    prices = opts.costs.prices()
    spend = shared_spend(opts, path, prices)
    done = done_hashes(path)
    return _map(
        ds, path, opts, target, done, workers, batch_size, num_cpus, spend=spend, prices=prices
    )


def shared_spend(options: RunOptions, out: Path, prices: Prices) -> Any:
    """Under ``--budget``, the run's spend for every worker to reserve from: an async actor
    (``_engine.budget.SharedSpend``) starting at what ``out``'s results cost already; None
    without a budget. It lives as long as this driver."""
    from .._rundir.results import read_costs

    if options.costs.budget is None:
        return None
    spent = sum(read_costs(out).values())
    actor = _ray().remote(SharedSpend).options(num_cpus=0)
    return actor.remote(options.costs.budget, spent, prices)


def check_options(opts: RunOptions) -> RunOptions:
    """Refuse what a cluster run does not do (yet: the ``ray`` column of ``_engine.support``),
    and what a local run refuses, before Ray starts. Return the options
    as the workers take them: the output schema loaded here (its file read, its pydantic model
    imported, checked for the wire), so that a worker needs neither the file nor this process's
    working directory, and types ``parsed`` as a local run does (a model travels by reference:
    its module must be importable on the workers, see README)."""
    support.check(opts, ray=True)  # the ``ray`` column of the one table of what each way does
    get_provider(opts.endpoint.provider, opts.media.api)  # --endpoint images speaks OpenAI's
    if opts.requests.schema is None:
        return opts
    schema = load_schema(opts.requests.schema)
    schema.check_wire(opts.endpoint.provider)
    return replace(opts, requests=replace(opts.requests, schema=schema))


def _schema(opts: RunOptions) -> OutputSchema | None:
    """The run's output schema, once ``check_options`` loaded it."""
    schema = opts.requests.schema
    assert schema is None or isinstance(schema, OutputSchema)
    return schema


def _provider(opts: RunOptions) -> Provider:
    """The run's provider as a local run has it: its ``--endpoint``, asking for the schema."""
    provider = get_provider(opts.endpoint.provider, opts.media.api)
    schema = _schema(opts)
    return provider if schema is None else SchemaProvider(provider, schema)


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
    target: Target,
    done: IdSet,
    workers: int,
    batch_size: int,
    num_cpus: float,
    *,
    run: str = "",
    actor: Any = None,
    spend: Any = None,
    prices: Prices | None = None,
) -> Any:
    ray = _ray()
    return ds.map_batches(
        BlockWorker,
        fn_constructor_kwargs={
            "out": str(out.absolute()),  # a worker's working directory is not this one
            "options": opts,
            "base_url": target.base_url,
            "api_key": target.key,
            "budget": actor if actor is not None else budget(target, opts, out),
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

    ray = _ray()
    opts = check_options(options)
    address = opts.requests.ray or "local"
    path = Path(out)
    provider = _provider(opts)
    schema = _schema(opts)
    parsed = schema.arrow_type() if schema is not None else None
    schema_json = schema.to_json() if schema is not None else None
    source = JobSource(
        jobs,
        opts.columns,
        provider=opts.endpoint.provider,
        default_model=opts.requests.model,
        endpoint=opts.media.api,
        defaults=opts.media.job_defaults(),
    )
    lock = DirLock(path)
    lock.acquire()
    target = Target(opts.endpoint, provider)
    try:
        wait_for_writers(path)
        old = Manifest.read(path)
        if old is not None:
            old.check_same_run(opts.endpoint.provider, opts.requests.model, path)
            old.check_same_schema(schema_json, path, opts.resume.redo_changed)
        check_no_batches(path)
        store = recover(path, parsed)
        plan = plan_resume(source, store, provider, opts.resume)
        limits = opts.limits.table()
        target.start()
        Manifest(
            provider=opts.endpoint.provider,
            model=opts.requests.model,
            base_url="mock" if target.is_mock else target.base_url,
            total=plan.total,
            inputs=tuple(str(p) for p in source.paths),
            quota_day=opts.limits.quota_day,
            limits=limits,
            schema=schema_json,
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
            actor = budget(target, opts, path)
            prices = opts.costs.prices()
            spend = shared_spend(opts, path, prices)
            before = _granted(actor)

            def keep_counts() -> None:
                _save_ledger(path, target, opts)
                now = _granted(actor)
                _count_in_store(opts, target, {m: n - before.get(m, 0) for m, n in now.items()})

            if interrupt is not None:
                interrupt.before_stop = keep_counts
            results = _map(
                ds,
                path,
                opts,
                target,
                IdSet(),
                workers,
                size,
                1.0,
                run=run,
                actor=actor,
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
                failed = ray.get(actor.failure.remote(run))
                keep_counts()
                if failed is None:
                    raise
                error, model = failed
                raise _explained(error, model, target) from None
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
        target.stop()
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
        _ray().shutdown()


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


def _count_in_store(opts: RunOptions, target: Target, requests: dict[str, int]) -> None:
    """Count the cluster's requests of this run in the quota store runs on this key share
    (``--quota-store``), so that ``batcher status`` and runs on the key see them."""
    import anyio

    from .._admission.quota import Account, open_store
    from .._core.clock import quota_day

    if target.is_mock or not any(n > 0 for n in requests.values()):
        return  # the embedded mock spends no one's quota: nothing for status to list

    async def count() -> None:
        store = await open_store(opts.pool.quota_store)
        try:
            account = Account.of_key(target.base_url, target.key, target.key_source)
            day = quota_day(time.time()).isoformat()
            for model, n in requests.items():
                if n > 0:
                    await store.reserve(account, model, day, n, None)
        finally:
            await store.aclose()

    anyio.run(count, backend="asyncio")


def _granted(actor: Any) -> dict[str, int]:
    """Requests the budget has granted so far, per model."""
    counters: dict[str, tuple[int, int]] = _ray().get(actor.counters.remote())
    return {model: granted for model, (granted, _) in counters.items()}


def _save_ledger(out: Path, target: Target, opts: RunOptions) -> None:
    """Keep the budget's quota-day counts in ``out``'s ledger, as a local run does."""
    ray = _ray()
    days = ray.get(budget(target, opts, out).days.remote())
    counts = {}
    for model, saved in days.items():
        count = DailyCount(rolling="times" in saved, keep_times="times" in saved)
        count.restore(saved)
        counts[model] = count
    Ledger(out).save(counts)


def _explained(error: BaseException, model: str | None, target: Target) -> BaseException:
    """A worker's error as a local run words it (a fatal answer names the key or model)."""
    if isinstance(error, FatalProviderError) and model is not None:
        message = explain(error, model, target, [])
        refused = ProxyRefused if isinstance(error, ProxyRefused) else FatalProviderError
        return refused(message, status=error.status, body=error.body)
    return error
