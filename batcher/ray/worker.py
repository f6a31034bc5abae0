"""A cluster's worker: blocks of jobs sent through the run's endpoints, each result written once.

``BlockWorker`` is the callable ``batcher.ray`` maps over a dataset. It reads a block's jobs
(pickled by the driver, or rows parsed here for ``batcher.ray.process``), sends them through the
same pool, executors and lanes as a local run, its lanes gated by the cluster's budgets
(``ray.worker_pool``), reserves each job's cost first under ``--budget``, and journals the
block's results in the output directory (``ray.blocks.BlockJournal``) through the run's one consumer
of outcomes (``_engine.consume.Consumer``), as a local run journals its results.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from .._admission.estimate import features
from .._config.options import UNPACED, RunOptions
from .._config.prices import Prices
from .._config.schema import load_schema
from .._core.clock import SystemClock
from .._core.errors import BatcherError, InputError, InputProblem
from .._core.idset import IdSet
from .._engine.budget import Reservation
from .._engine.consume import Consumer
from .._engine.outcome import ABANDONED, Done, Outcome
from .._engine.pool import Pool
from .._engine.pool_executor import PoolExecutor
from .._engine.scheduler import BEAT_EVERY
from .._engine.tally import Tally
from .._jobs import Job
from .._jobs._formats import parse_row
from .._jobs._readers import BadRow
from .._jobs._source import _job_problem
from .._rundir.rows import Record, result_schema
from .blocks import BlockJournal, block_key, stable_hash, writing_block
from .endpoints import Endpoint
from .worker_pool import open_worker_pool

__all__ = ["BLOCKS", "JOB_COLUMN", "BlockWorker"]

JOB_COLUMN = "_batcher_job"
"""A dataset column holding pickled ``Job`` objects (what ``batcher run --ray`` sends)."""
BLOCKS = 2
"""Blocks a worker sends at once (Ray Data's calls of it at once): the next block's jobs go on
through the lanes while the last answers of the one before come back. One at a time, a lone
worker stood idle at the end of each block for its slowest answer (0.95 of the rate)."""


class BlockWorker:
    """Sends blocks of jobs and returns their results (a Ray Data ``map_batches`` callable).

    It keeps one event loop on a thread of its own, so its lanes, their pacing and the connections
    outlive each block. Ray calls it for up to ``BLOCKS`` blocks at once (each from a thread of
    Ray's), all sent on that loop through the same lanes under one ``--max-concurrency``; the lanes
    hand back what they hold whenever no block is being sent. ``endpoints`` are the run's
    (``ray.endpoints``: one without ``--pool``), each with its account's budget (a Ray actor handle,
    or any object with ``grant`` / ``pause`` / ``images`` / ``fail`` methods that ``.remote(...)``
    to awaitables); the jobs go through them as a local run's go through its pool
    (``ray.worker_pool``). It sends as a local run does: the image options, the output schema
    (loaded by the driver, ``ray.mapping.check_options``: each answer is validated here and
    ``parsed`` typed as a local run types it), images saved under ``out/images/`` before their job
    is journaled, and ``--ipm`` kept by the budget for the whole cluster. Under ``--budget``,
    ``spend`` is the run's ``_engine.budget.SharedSpend`` (an actor handle): each job's worst case
    is reserved there before it is sent, at the ``prices`` the driver loaded, and once one does not
    fit this worker sends nothing more.
    """

    def __init__(
        self,
        out: str,
        options: RunOptions,
        endpoints: list[Endpoint],
        done: IdSet | None = None,
        run: str = "",
        spend: Any = None,
        prices: Prices | None = None,
    ) -> None:
        self.out = Path(out)
        self.run = run
        self.options = options
        self.endpoints = endpoints
        self.done = done if done is not None else IdSet()
        self.spend = spend
        self.prices = prices if prices is not None else options.costs.prices()
        self._over_budget = False
        """A job did not fit the spend: this worker sends nothing more."""
        self.schema = (
            load_schema(options.requests.schema) if options.requests.schema is not None else None
        )
        self.parsed = self.schema.arrow_type() if self.schema is not None else None
        """The Arrow type of the ``parsed`` column (None without a schema)."""
        self.defaults = {
            k: v for k, v in options.media.job_defaults().items() if v not in (None, ())
        }
        """Job fields a row that leaves them unset takes (``--modalities``, ``--n``...)."""
        self.wire = endpoints[0].spec.provider
        """The wire of the run's first endpoint, which rows are read for (as a local run's)."""
        self.served = (
            None
            if endpoints[0].spec.models is None
            else {m for e in endpoints for m in e.spec.models or ()}
        )
        """Every model the pool's endpoints serve; None for a run without ``--pool``."""
        self.clock = SystemClock()
        self.tally = Tally(self.clock)
        """This worker's counts (the driver counts the run's from the rows that come back)."""
        self._beat: asyncio.Task[None] | None = None
        self._counted: dict[tuple[str, str], int] = {}
        """Requests each (endpoint, model) lane sent through the quota store that the budget's
        day already counts."""
        self._failed: BatcherError | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        """``--max-concurrency``: the requests of every block this worker sends at once."""
        self._blocks = 0
        """Blocks being sent (up to ``BLOCKS``, each from a thread of Ray's, all on this loop)."""
        self._ending: anyio.Event | None = None
        """Set once the lanes have handed back what they hold (``_end_block``), if under way: a
        block starting meanwhile waits for it."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.pool: Pool = self._call(self._open())
        self.executor = PoolExecutor(self.pool, self.pool.routes[0].provider)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _open(self) -> Pool:
        pool = await open_worker_pool(
            self.endpoints,
            self.options,
            schema=self.schema,
            clock=self.clock,
            tally=self.tally,
            prices=self.prices,
            out=self.out,
        )
        if pool.store is not None:  # leases renewed while this worker lives, as a run's are
            self._beat = asyncio.get_running_loop().create_task(self._keep_leases(pool))
        return pool

    async def _keep_leases(self, pool: Pool) -> None:
        """Renew the lanes' leases in the quota store every second (``Scheduler``'s pace): a
        lane with demand holds its share, an idle one lets the others have it."""
        while True:
            await anyio.sleep(BEAT_EVERY)
            await pool.beat()

    async def _end_block(self) -> None:
        """Hand back what the lanes hold of the day's quota and did not send (a gate's slots, a
        store's reserved block), so that the day counts the requests sent: the next block asks
        afresh. Requests admitted through a store are counted in the budget's day too, under
        their endpoint's name, for the run's ledger."""
        now = self.clock.time()
        for endpoint, route in zip(self.endpoints, self.pool.routes, strict=True):
            for model, lane in list(route.lanes.by_model.items()):
                if lane.gate is not None:
                    await lane.gate.flush()
                if lane.quota is not None:
                    await lane.quota.close()
                    key = (endpoint.spec.name, model)
                    spent = lane.daily.spent(now)
                    sent, self._counted[key] = spent - self._counted.get(key, 0), spent
                    if sent > 0:
                        await endpoint.budget.count_sent.remote(model, now, sent, key[0])

    def __call__(self, batch: Any) -> Any:
        """One block (a pyarrow table of job rows) -> its results (a table of result rows)."""
        import pyarrow as pa

        with writing_block(self.out):
            rows = self._call(self._block(batch.to_pylist()))
        return pa.Table.from_pylist(rows, schema=result_schema(self.parsed))

    def _jobs(self, rows: list[dict[str, Any]]) -> tuple[list[Job], list[Record]]:
        """The block's jobs, and records for rows that cannot be sent (errors, as data)."""
        import pickle

        if rows and JOB_COLUMN in rows[0]:
            return [pickle.loads(r[JOB_COLUMN]) for r in rows], []
        opts = self.options
        jobs: list[Job] = []
        bad: list[Record] = []
        for n, full in enumerate(rows):
            row = {k: v for k, v in full.items() if v is not None}  # a table's missing values
            try:
                job_id, fields = parse_row(row, position_id="", columns=opts.columns)
            except BadRow as e:
                if not e.job_id:
                    raise InputError(
                        [InputProblem(f"row {n} of a block", e.message, None)]
                    ) from None
                bad.append(_invalid(e.job_id, e.message))
                continue
            if not job_id:
                raise InputError(
                    [InputProblem(f"row {n} of a block", "no id (give rows an id or --id-column)")]
                )
            job = fields.job(job_id, source="ray", default_model=opts.requests.model)
            unset = {k: v for k, v in self.defaults.items() if getattr(job, k) in (None, ())}
            if unset:
                job = replace(job, **unset)
            issue = _job_problem(job, self.wire, opts.media.api, self.served)
            if issue:
                bad.append(_invalid(job_id, issue))
            else:
                jobs.append(job)
        return jobs, bad

    async def _block(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._failed is not None:
            raise self._failed  # a fatal answer or an outage: this worker sends nothing more
        jobs, bad = await anyio.to_thread.run_sync(self._jobs, rows)
        todo = [j for j in jobs if not self.done.has_hash(stable_hash(j.id))]
        bad = [r for r in bad if not self.done.has_hash(stable_hash(r.id))]
        if not todo and not bad:
            return []
        while self._ending is not None:
            await self._ending.wait()
        self._blocks += 1
        try:
            return await self._send_block(todo, bad)
        finally:
            self._blocks -= 1
            if not self._blocks:  # no block sends: give back what the lanes hold
                ending = self._ending = anyio.Event()
                try:
                    with anyio.CancelScope(shield=True):
                        await self._end_block()
                finally:
                    self._ending = None
                    ending.set()

    async def _send_block(self, todo: list[Job], bad: list[Record]) -> list[dict[str, Any]]:
        """Send a block's jobs and journal their results (and the records of ``bad`` rows)."""
        key = block_key([*(j.id for j in todo), *(r.id for r in bad)])
        journal = BlockJournal(self.out, key, self.parsed)
        finished = {r["id"] for r in journal.begin()}
        if journal.complete:
            return journal.rows
        # the run's one consumer of outcomes, writing into this block's journal: a finished job
        # is journaled, a deferred one left for a rerun, a fatal answer, an outage or a failed
        # write stops the block (and this worker)
        consumer: Consumer[BlockJournal] = Consumer(journal, self.tally)
        for record in bad:
            if record.id not in finished:
                consumer.record(record)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.options.requests.max_concurrency or UNPACED)
        limiter = self._limiter

        async def one(job: Job) -> None:
            async with limiter:
                if consumer.stopped or consumer.unpriced or self._over_budget or self._failed:
                    return  # another block of this worker failed: this one fails with it
                assert job.model is not None
                reservation = None
                if self.spend is not None:
                    reservation = await self._reserve(job)
                    if reservation is None:  # left for a rerun with a larger budget
                        self._over_budget = True
                        _, model = await self.spend.stopped.remote()
                        if model is not None:  # no price: nothing bounds its cost
                            consumer.unpriced = model
                            tg.cancel_scope.cancel()
                        return
                outcome: Outcome = ABANDONED
                try:
                    outcome = await self.executor.execute(job)
                finally:
                    if reservation is not None:
                        with anyio.CancelScope(shield=True):
                            await self._settle(reservation, outcome)
            consumer.take(outcome)

        async with anyio.create_task_group() as tg:
            consumer.on_stop(tg.cancel_scope.cancel)
            for job in todo:
                if job.id not in finished:
                    tg.start_soon(one, job)
        rows_out = await anyio.to_thread.run_sync(journal.finish)
        try:
            consumer.raise_stop()
        except BatcherError as error:
            fatal = consumer.fatal
            model = fatal.model if fatal is not None and error is fatal.error else None
            self._failed = error
            await self.endpoints[0].budget.fail.remote(self.run, error, model)
            raise
        return rows_out

    async def _reserve(self, job: Job) -> Reservation | None:
        """Set aside the job's worst-case cost in the run's spend, as a local run does
        (``Scheduler._reserve``); None if it does not fit."""
        assert job.model is not None
        tokens = self.pool.estimator(job.model).estimate(features(job.text), cautious=True)
        what = f"job ({job.id}, {job.model})"
        reservation: Reservation | None = await self.spend.reserve.remote(
            job.model, tokens, job.max_tokens, what
        )
        return reservation

    async def _settle(self, reservation: Reservation, outcome: Outcome) -> None:
        """Replace the job's reservation by what it cost (nothing, if it was not answered)."""
        if isinstance(outcome, Done):
            record = outcome.record
            await self.spend.settle.remote(reservation, record.cost_usd, record.output_tokens)
        else:
            await self.spend.settle.remote(reservation, None, None)


def _invalid(job_id: str, why: str) -> Record:
    """The record of a row that cannot be sent: an error of its own, kept as data."""
    return Record(
        id=job_id,
        status="error",
        text=None,
        input_tokens=None,
        output_tokens=None,
        attempts=0,
        error=why,
        error_kind="invalid",
        model=None,
        finish_reason=None,
        latency_ms=None,
        response=None,
        source="ray",
    )
