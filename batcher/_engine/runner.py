"""The runner: one run of a set of jobs into an output directory, as an ``async with`` object.

Entering checks the inputs (nothing is sent if any is bad), resolves the key and the endpoint, and
opens the results store; ``run()`` hands the work to the scheduler; leaving compacts the journal
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

from .._admission.ledger import Ledger
from .._admission.quota import Account, MemoryStore, QuotaStore, open_store
from .._admission.retry import RetryPolicy
from .._config.options import RunOptions, option_flag
from .._config.schema import OutputSchema, load_schema
from .._core.clock import Clock, SystemClock
from .._core.errors import FatalProviderError, ProxyRefused, UsageError
from .._core.stats import RunSummary, Statistics
from .._jobs import Job, JobSource
from .._rundir.attempts import AttemptLog
from .._rundir.batchlog import BatchLog
from .._rundir.dirlock import DirLock
from .._rundir.image_files import clear_partial
from .._rundir.manifest import Manifest
from .._rundir.results import read_costs, read_results
from .._rundir.resume import done_now, plan_resume
from .._rundir.store import ResultStore
from .._wire.endpoint import Target
from .._wire.providers import get_provider
from .._wire.providers._structured import SchemaProvider
from .._wire.transport import Transport
from .batchapi import BatchExecutor, batch_api
from .budget import Budget
from .execute import Executor, explain
from .pool import Pool, PoolExecutor, pool_specs, spec_account, spec_endpoint
from .scheduler import Lanes, Scheduler
from .tally import Tally

if TYPE_CHECKING:
    import httpx

__all__ = ["JobsInput", "RunOptions", "Runner"]

JobsInput = (
    str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[Job | Mapping[str, Any]]
)


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
        if self.pool_specs is not None and opts.batch.mode != "online":
            raise UsageError(f"{option_flag('pool_file')} sends online only, not in batch mode")
        self.provider_name = (
            self.pool_specs[0].provider if self.pool_specs else opts.endpoint.provider
        )
        self.provider = get_provider(self.provider_name, opts.media.api)
        self.schema = _load_schema(opts.requests.schema, self.provider_name)
        if self.schema is not None:
            if opts.media.api == "images":
                raise UsageError(
                    f"{option_flag('schema')} asks for JSON answers: the images API has none"
                )
            self.provider = SchemaProvider(self.provider, self.schema)
        if opts.costs.budget is not None and opts.batch.mode != "online":
            raise UsageError(
                f"{option_flag('budget')} bounds online requests one by one; it cannot bound "
                f"{option_flag('mode')} {opts.batch.mode}, whose batches are submitted whole"
            )
        if opts.batch.mode != "online" and (
            opts.media.api == "images" or "image" in opts.media.modalities
        ):
            raise UsageError(
                f"images answered are saved by online requests only: {option_flag('mode')} "
                f"{opts.batch.mode} cannot be used with --endpoint images or --modalities image"
            )
        if "image" in opts.media.modalities and opts.endpoint.provider != "gemini":
            raise UsageError(
                "--modalities text,image sets Gemini's responseModalities: use --provider gemini "
                "(or --endpoint images for OpenAI's images API)"
            )
        served = {m for spec in self.pool_specs for m in spec.models} if self.pool_specs else None
        self.source = JobSource(
            jobs,  # type: ignore[arg-type]
            opts.columns,
            provider=self.provider_name,
            default_model=opts.requests.model,
            endpoint=opts.media.api,
            defaults=opts.media.job_defaults(),
            served=served,
        )
        parsed = self.schema.arrow_type() if self.schema is not None else None
        self.store = ResultStore(self.out, parsed=parsed)
        self.attempts = AttemptLog(self.out)
        self.limits = self.pool_specs[0].limits if self.pool_specs else opts.limits.table()
        self.prices = opts.costs.prices()
        self.lanes: Lanes | Pool | None = None
        self.tally = Tally(self.clock)
        self.changed: list[str] = []
        self._httpx_transport = transport
        self._target: Target | None = None
        self._lock = DirLock(self.out)
        self._transport: Transport | None = None
        self._scheduler: Scheduler | None = None
        self._batch: BatchExecutor | None = None
        self._stopped_by: int | None = None  # the signal that stopped a batch run
        self._attempts_open = False
        self._store: QuotaStore | None = None
        self._pool: Pool | None = None

    async def __aenter__(self) -> Runner:
        # Into a directory no run has written to, the inputs are checked before the lock and the
        # store write there, so that bad input leaves nothing in it; else plan_resume checks them.
        fresh = not (self.store.journal_dir.exists() or self.store.results_dir.exists())
        scanned = await anyio.to_thread.run_sync(self.source.scan) if fresh else None
        self._lock.acquire()  # before anything in DIR is read or written
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
        self._lock.release()

    async def _open(self, scanned: int | None) -> None:
        opts = self.options
        specs = self.pool_specs
        target = Target(spec_endpoint(specs[0]) if specs else opts.endpoint, self.provider)
        ledger = Ledger(self.out)
        schema_json = self.schema.to_json() if self.schema is not None else None
        old = Manifest.read(self.out)
        if old is not None:
            old.check_same_run(self.provider_name, opts.requests.model, self.out)
            old.check_same_schema(schema_json, self.out, opts.resume.redo_changed)
        plan = await anyio.to_thread.run_sync(
            plan_resume, self.source, self.store, self.provider, opts.resume, scanned
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
        mocks = MemoryStore()  # a pool's mock endpoints share budgets in this process only
        lanes: Lanes | Pool = Lanes(
            self.limits,
            ledger,
            self.clock,
            per_second=self.provider.per_second_limits,
            rolling=opts.limits.quota_day == "rolling",
            where=target.where,
            max_outage=opts.requests.max_outage,
            store=store,
            account=Account.of_key(target.base_url, target.key, target.key_source),
        )
        self.lanes = lanes
        Manifest(
            provider=self.provider_name,
            model=opts.requests.model,
            base_url="mock" if target.is_mock else target.base_url,
            total=plan.total,
            inputs=tuple(str(p) for p in self.source.paths),
            quota_day=opts.limits.quota_day,
            limits=self.limits,
            schema=schema_json,
            endpoints={spec.name: spec.limits for spec in specs} if specs else {},
        ).write(self.out)
        transport = target.transport(opts.requests, self._httpx_transport)
        self._transport = transport
        executor: Executor | PoolExecutor = Executor(
            transport,
            target,
            RetryPolicy(max_attempts=opts.requests.max_attempts, timeout=opts.requests.timeout),
            self.clock,
            self.tally,
            prices=self.prices,
            out=self.out,
            schema=self.schema,
            ipm=opts.media.ipm,
        )
        if specs is not None:
            self.lanes = lanes = self._pool = pool = Pool(store)
            for i, spec in enumerate(specs):
                provider = get_provider(spec.provider, opts.media.api)
                if self.schema is not None:
                    if spec.provider != self.provider_name:
                        raise UsageError(
                            f"{option_flag('schema')} with {option_flag('pool_file')}: every "
                            f"endpoint must use one provider (endpoint {spec.name} does not)"
                        )
                    provider = SchemaProvider(provider, self.schema)
                t = target if i == 0 else Target(spec_endpoint(spec), provider)
                t.start()
                pool.add(
                    spec,
                    provider,
                    Executor(
                        transport if i == 0 else t.transport(opts.requests, self._httpx_transport),
                        t,
                        RetryPolicy(
                            max_attempts=opts.requests.max_attempts, timeout=opts.requests.timeout
                        ),
                        self.clock,
                        self.tally,
                        prices=self.prices,
                        out=self.out,
                        endpoint=spec.name,
                        ipm=opts.media.ipm,
                    ),
                    Lanes(
                        spec.limits,
                        ledger,
                        self.clock,
                        per_second=provider.per_second_limits,
                        rolling=opts.limits.quota_day == "rolling",
                        where=f"endpoint {spec.name} ({t.where})",
                        max_outage=opts.requests.max_outage,
                        store=mocks if t.is_mock else store,
                        account=spec_account(spec, t),
                        ledger_prefix=f"{spec.name}/",
                    ),
                    owned=i > 0,
                )
            executor = PoolExecutor(pool, self.provider)
        if (
            opts.batch.mode != "online"
            or opts.batch.cancel_batches
            or BatchLog(self.out).open_chunks()  # cancelled and collected before going online
        ):
            self._batch = BatchExecutor(
                api=batch_api(self.provider),
                transport=transport,
                target=target,
                source=self.source,
                store=self.store,
                tally=self.tally,
                clock=self.clock,
                options=opts.batch,
                max_attempts=opts.requests.max_attempts,
                done=plan.done,
                prices=self.prices,
            )
        clear_partial(self.out)
        self._scheduler = Scheduler(
            self.source,
            lanes,
            executor,
            self.store,
            self.tally,
            self.clock,
            done=plan.done,
            refresh_done=lambda: done_now(self.store),
            max_concurrency=opts.requests.max_concurrency,
            wait_for_reset=opts.limits.on_daily_limit == "wait",
            grace=opts.requests.grace,
            budget=budget,
            attempts=self.attempts,
        )
        executor.on_attempt = self._scheduler.log_attempt

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
        scheduler, target = self._scheduler, self._target
        if scheduler is None or target is None:
            raise RuntimeError("use 'async with Runner(...) as runner' before run()")
        self.tally.start()
        pending = 0
        if self._batch is None:
            await scheduler.run()
        else:
            pending = await self._batch.run()
            if self._goes_online(pending):
                skipped = self.tally.skipped
                scheduler.done = await anyio.to_thread.run_sync(done_now, self.store)
                await scheduler.run()
                self.tally.skipped = skipped
        if scheduler.write_failed is not None:
            raise scheduler.write_failed
        if scheduler.outage is not None:
            raise scheduler.outage
        if scheduler.unpriced is not None:
            raise UsageError(
                f"--budget: no price is known for model {scheduler.unpriced!r}, so nothing bounds "
                "what its jobs cost; give its prices with --prices FILE (finished jobs are kept)"
            )
        if scheduler.fatal is not None:
            error, model, worked = scheduler.fatal
            if self._pool is not None:  # the pool's executor has said which endpoints refused
                message = f"{model}: {error.message}"
            else:
                message = explain(error, model, target, worked)
            refused = ProxyRefused if isinstance(error, ProxyRefused) else FatalProviderError
            raise refused(message, status=error.status, body=error.body)
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
        assert self._scheduler is not None and self.lanes is not None
        self.store.close()
        self.attempts.close()
        self.lanes.save()
        scheduler = self._scheduler
        return self.tally.summary(
            str(self.out),
            read_results(self.out),
            elapsed=elapsed,
            spent=read_costs(self.out),
            budget_stop=scheduler.budget_stop,
            deferred=scheduler.deferred,
            quota_stops=tuple(str(e) for e in scheduler.quota_stops.values()),
            interrupted=self.stopping,
        )


def _load_schema(spec: Any, provider: str) -> OutputSchema | None:
    """The run's output schema, checked for ``provider``'s wire; None without one (pydantic is
    imported only when there is one)."""
    if spec is None:
        return None
    schema = load_schema(spec)
    schema.check_wire(provider)
    return schema
