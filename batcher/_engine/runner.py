"""The runner: one run of a set of jobs into an output directory, as an ``async with`` object.

Entering checks the inputs (nothing is sent if any is bad), resolves the key and the endpoint, and
opens the results store (``_rundir.start``: the lock, ``run.json``, resuming, as a cluster's
driver does too); ``run()`` hands the work to the scheduler; leaving compacts the journal
into Parquet and saves the quota ledger. ``statistics()`` is a snapshot at any moment. The parts it
wires together each live in their own module: the source (``_jobs``), resuming (``_rundir.resume``),
the scheduler and lanes (``_engine.scheduler``), the executor (``_engine.execute``), the tally
(``_engine.tally``) and the manifest (``_rundir.manifest``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from .._admission.estimate import features
from .._admission.ledger import Ledger
from .._admission.quota import QuotaStore, open_store
from .._config.options import RunOptions
from .._config.pool_file import EndpointSpec, pool_specs, spec_endpoint
from .._config.schema import OutputSchema, load_schema
from .._core.clock import Clock, SystemClock
from .._core.stats import RunSummary, Statistics
from .._jobs import Job, JobSource
from .._rundir.attempts import AttemptLog
from .._rundir.batchlog import BatchLog
from .._rundir.results import read_costs, read_results
from .._rundir.resume import done_now
from .._rundir.start import RunStart
from .._rundir.store import ResultStore
from .._wire.endpoint import Target
from .._wire.providers import get_provider, is_embedder
from .._wire.providers._structured import SchemaProvider
from .._wire.transport import Transport
from . import support
from .batchapi import BatchExecutor
from .budget import Budget
from .consume import Consumer
from .embed import Packer
from .pool import Pool, open_pool
from .pool_executor import PoolExecutor
from .scheduler import Scheduler
from .tally import Tally

if TYPE_CHECKING:
    import httpx

__all__ = ["JobsInput", "RunOptions", "Runner"]

JobsInput = (
    str
    | os.PathLike[str]
    | Iterable[str | os.PathLike[str]]
    | Iterable[Job | Mapping[str, Any]]
    | Any  # a pyarrow Table or RecordBatchReader, a pandas or polars DataFrame, a datasets.Dataset
)
"""Files (paths or URLs), Python jobs, or a table or data frame of rows (``_jobs._frames``)."""


class Runner:
    """One run of a set of jobs into an output directory."""

    def __init__(
        self,
        jobs: JobsInput,
        out: str | os.PathLike[str],
        options: RunOptions | None = None,
        *,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = opts = options or RunOptions()
        self.out = Path(out)
        self.clock: Clock = clock or SystemClock()
        self.pool_specs = (
            pool_specs(Path(opts.pool.pool_file), opts) if opts.pool.pool_file else None
        )
        """The endpoints of a ``--pool`` file; None for a run of one endpoint."""
        self.provider_name = (
            self.pool_specs[0].provider if self.pool_specs else opts.endpoint.provider
        )
        support.check(opts, provider=self.provider_name)  # what the run's ways cannot do
        self.provider = get_provider(
            self.provider_name, opts.media.api, dimensions=opts.media.dimensions
        )
        wires = {spec.provider for spec in self.pool_specs} if self.pool_specs else set()
        self.schema = _load_schema(opts.requests.schema, {self.provider_name, *wires})
        if self.schema is not None:
            self.provider = SchemaProvider(self.provider, self.schema)
        served = (
            {m for spec in self.pool_specs for m in spec.models or ()} if self.pool_specs else None
        )
        self.source = JobSource(
            jobs,
            opts.columns,
            provider=self.provider_name,
            default_model=opts.requests.model,
            endpoint=opts.media.api,
            defaults=opts.media.job_defaults(),
            served=served,
            # a file over the inline limit goes through the Files API, online and in batches
            upload=opts.media.upload != "never" and opts.media.api in ("chat", "responses"),
        )
        parsed = self.schema.arrow_type() if self.schema is not None else None
        self.embeds = is_embedder(self.provider)
        """The run embeds: its jobs go packed many to a request, each vector a row."""
        self.store = ResultStore(
            self.out, parsed=parsed, embeddings=self.embeds, dimensions=opts.media.dimensions
        )
        self.attempts = AttemptLog(self.out)
        self.limits = self.pool_specs[0].limits if self.pool_specs else opts.limits.table()
        self.prices = opts.costs.prices()
        self.lanes: Pool | None = None
        """The run's endpoints and their lanes, once entered."""
        self.consumer: Consumer[ResultStore] | None = None
        self.tally = Tally(self.clock)
        self.changed: list[str] = []
        self._httpx_transport = transport
        self._target: Target | None = None
        self._start = RunStart(self.out, self.store, self.source)
        self._transport: Transport | None = None
        self._scheduler: Scheduler | None = None
        self._batch: BatchExecutor | None = None
        self._stopped_by: int | None = None  # the signal that stopped a batch run
        self._attempts_open = False
        self._store: QuotaStore | None = None
        self._pool: Pool | None = None

    async def __aenter__(self) -> Runner:
        scanned = await anyio.to_thread.run_sync(self._start.scan_if_fresh)
        self._start.acquire()  # before anything in DIR is read or written
        try:
            await self._open(scanned)
        except BaseException:
            if self._store is not None:
                with anyio.CancelScope(shield=True):
                    await self._store.aclose()
            self._close_quietly()
            raise
        return self

    def _close_quietly(self) -> None:
        if self._target is not None:
            self._target.stop()
        if self._pool is not None:
            self._pool.stop()
        self._start.release()

    async def _open(self, scanned: int | None) -> None:
        opts = self.options
        specs = self.pool_specs
        target = Target(spec_endpoint(specs[0]) if specs else opts.endpoint, self.provider)
        ledger = Ledger(self.out)
        schema_json = self.schema.to_json() if self.schema is not None else None
        plan = await anyio.to_thread.run_sync(
            self._start.plan, self.provider, self.provider_name, opts, schema_json, scanned
        )
        self.tally.total, self.changed = plan.total, plan.changed
        await anyio.to_thread.run_sync(self.attempts.open)  # recover what a crash left
        self._attempts_open = True
        budget = None
        if opts.costs.budget is not None:
            spent = sum((await anyio.to_thread.run_sync(read_costs, self.out)).values())
            budget = Budget(opts.costs.budget, spent, self.prices)
        target.start()
        self._target = target
        # A run against the embedded mock spends no one's quota: counted in the shared store, it
        # would list a dead mock port in every ``batcher status`` of the machine for a day.
        mock = target.is_mock and specs is None
        self._store = store = await open_store("memory" if mock else opts.pool.quota_store)
        self._start.begin(
            opts,
            provider=self.provider_name,
            base_url="mock" if target.is_mock else target.base_url,
            total=plan.total,
            schema=schema_json,
            pool=specs,
        )
        transport = target.transport(opts.requests, self._httpx_transport)
        self._transport = transport
        self.lanes = pool = self._pool = open_pool(
            self.pool_specs
            or [EndpointSpec("default", self.provider_name, models=None, limits=self.limits)],
            first=(self.provider, target, transport),
            options=opts,
            schema=self.schema,
            clock=self.clock,
            tally=self.tally,
            prices=self.prices,
            out=self.out,
            ledger=ledger,
            store=store,
            httpx_transport=self._httpx_transport,
        )
        self.consumer = consumer = Consumer(
            self.store, self.tally, attempts=self.attempts, budget=budget
        )
        executor = PoolExecutor(pool, self.provider)
        if (
            opts.batch.mode != "online"
            or opts.batch.cancel_batches
            or BatchLog(self.out).open_chunks()  # cancelled and collected before going online
        ):
            self._batch = BatchExecutor(
                pool=pool,
                fingerprint_provider=self.provider,
                source=self.source,
                consumer=consumer,
                clock=self.clock,
                options=opts.batch,
                max_attempts=opts.requests.max_attempts,
                done=plan.done,
                prices=self.prices,
            )
        self._scheduler = Scheduler(
            self.source,
            pool,
            executor,
            consumer,
            self.tally,
            self.clock,
            done=plan.done,
            refresh_done=lambda: done_now(self.store),
            max_concurrency=opts.requests.max_concurrency,
            wait_for_reset=opts.limits.on_daily_limit == "wait",
            grace=opts.requests.grace,
            packer=_packer(pool) if self.embeds else None,
        )
        executor.on_attempt = consumer.attempt

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._transport is not None:
                await self._transport.aclose()
            if self._pool is not None:
                await self._pool.aclose()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.store.close)
                if self._attempts_open:
                    await anyio.to_thread.run_sync(self.attempts.close)
                if self.lanes is not None:
                    await anyio.to_thread.run_sync(self.lanes.save)
                    await self.lanes.close()
                if self._store is not None:
                    await self._store.aclose()
        finally:
            self._close_quietly()

    def peak_in_flight(self) -> int:
        """The most requests in flight at once so far (summed over the lanes' peaks)."""
        if self.lanes is None:
            return 0
        return sum(lane.peak_in_flight for lane in self.lanes.every_lane())

    def statistics(self) -> Statistics:
        return self.tally.statistics()

    async def run(self) -> RunSummary:
        """Send every job not yet finished; raise ``FatalProviderError`` if the run cannot go on.

        Jobs of a model whose daily quota is spent are passed over; with ``on_daily_limit="wait"``
        the run sleeps until the earliest reset and reads the inputs again for them.
        """
        scheduler, consumer = self._scheduler, self.consumer
        if scheduler is None or consumer is None:
            raise RuntimeError("use 'async with Runner(...) as runner' before run()")
        self.tally.start()
        pending = 0
        async with consumer.running():
            if self._batch is None:
                await scheduler.run()
            else:
                pending = await self._batch.run()
                if self._goes_online(pending) and not consumer.stopped:
                    skipped = self.tally.skipped
                    scheduler.done = await anyio.to_thread.run_sync(done_now, self.store)
                    await scheduler.run()
                    self.tally.skipped = skipped
        consumer.raise_stop()
        elapsed = self.clock.monotonic() - self.tally.started
        summary = await anyio.to_thread.run_sync(self._summary, elapsed)
        return dataclasses.replace(summary, batches_pending=pending)

    def _goes_online(self, pending: int) -> bool:
        """In ``auto``, once every batch is collected, what they did not finish goes online; in
        ``online``, once the batches left pending in DIR are cancelled and collected. Never while
        a batch is open: it may still answer (and bill) a job the lanes would send again."""
        batch = self.options.batch
        return (
            batch.mode in ("auto", "online")
            and not pending
            and not batch.cancel_batches
            and self._stopped_by is None
        )

    def stop(self, signum: int = signal.SIGINT) -> None:
        """Stop admitting; requests in flight get ``grace`` seconds, then are abandoned.

        Jobs that finish are recorded as usual; the rest are left for a rerun.
        """
        if self._batch is not None and self._stopped_by is None:
            self._stopped_by = signum
            self._batch.stop()
        if self._scheduler is not None:
            self._scheduler.stop(signum)

    def stop_now(self) -> None:
        """Abandon the requests in flight too (a second SIGINT)."""
        if self._scheduler is not None:
            self._scheduler.stop_now()

    @property
    def stopping(self) -> int | None:
        """The signal the run is stopping for, if it is."""
        if self._scheduler is not None and self._scheduler.stopping is not None:
            return self._scheduler.stopping
        return self._stopped_by

    def _summary(self, elapsed: float) -> RunSummary:
        assert self.consumer is not None and self.lanes is not None
        self.store.close()
        self.attempts.close()
        self.lanes.save()
        consumer = self.consumer
        return self.tally.summary(
            str(self.out),
            read_results(self.out),
            elapsed=elapsed,
            spent=read_costs(self.out),
            budget_stop=consumer.budget_stop,
            deferred=consumer.deferred,
            quota_stops=tuple(str(e) for e in consumer.quota_stops.values()),
            interrupted=self.stopping,
        )


def _packer(pool: Pool) -> Packer:
    """Packs the jobs of each model to its endpoints' request limits, by cautious estimates."""

    def estimate(job: Job) -> int:
        assert job.model is not None
        return pool.estimator(job.model).estimate(features(job.text), cautious=True)

    return Packer(pool.pack_limits, estimate)


def _load_schema(spec: Any, wires: set[str]) -> OutputSchema | None:
    """The run's output schema, checked for each wire its endpoints speak (a pool may mix
    providers: each asks for the schema in its own form); None without one (pydantic is
    imported only when there is one)."""
    if spec is None:
        return None
    schema = load_schema(spec)
    for wire in sorted(wires):
        schema.check_wire(wire)
    return schema
