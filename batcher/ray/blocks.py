"""Blocks of jobs on a cluster's workers: sent through gated lanes, each result written once.

A worker (``BlockWorker``, the callable ``batcher.ray`` maps over a dataset) sends a block's jobs
through the same executor and lanes as a local run, its lanes gated by the cluster's budget
(``_admission.grants``), and writes the block's results with the local run's discipline, in the same
output directory (``BlockJournal``):

    journal/blk-KEY               the number N of the block's segment (KEY: a hash of its ids)
    journal/seg-N.jsonl           the block's finished jobs, a line each, as they finish
    results/part-N.parquet        the block's results, written once the block is done

Each finished job is journaled before the block returns; the part is written (temp name, fsync,
rename), then the segment and the marker are deleted. A block retried after its worker died
finds its marker: if the part exists the block was done, else the jobs in the segment are kept
and only the others are sent. Workers claim segment numbers with an exclusive create, so two
never share one; a local run's recovery (``ResultStore.open``) compacts any segment a dead
worker left, whatever its block.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from io import FileIO
from pathlib import Path
from typing import Any

import anyio

from .._admission.estimate import features
from .._config.options import UNPACED, RunOptions
from .._config.prices import Prices
from .._config.schema import load_schema
from .._core.clock import SystemClock
from .._core.codec import dumps
from .._core.errors import BatcherError, InputError, InputProblem, UsageError, WriteFailed
from .._core.idset import IdSet
from .._engine.budget import Reservation, unpriced
from .._engine.outcome import ABANDONED, Deferred, Done, Fatal, Halted, Outcome
from .._engine.pool import Pool, PoolExecutor
from .._engine.tally import Tally
from .._jobs import Job
from .._jobs._formats import parse_row
from .._jobs._readers import BadRow
from .._jobs._source import _job_problem
from .._rundir.store import (
    _PART,
    Record,
    ResultStore,
    _fsync_dir,
    _schema,
    _write_all,
    _writing,
    read_part,
    read_segment,
)
from .endpoints import Endpoint
from .worker_pool import open_worker_pool

__all__ = ["JOB_COLUMN", "BlockJournal", "BlockWorker", "block_key", "done_hashes", "stable_hash"]

JOB_COLUMN = "_batcher_job"
"""A dataset column holding pickled ``Job`` objects (what ``batcher run --ray`` sends)."""


def stable_hash(job_id: str) -> int:
    """A 64-bit hash of an id that is the same in every process (Python's ``hash`` is salted
    per process, so ``IdSet``'s own keys cannot travel to a worker)."""
    return int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8).digest(), "big")


def block_key(ids: Iterable[str]) -> str:
    """A block's name: a hash of its ids in order, the same when Ray retries the block."""
    h = hashlib.blake2b(digest_size=12)
    for i in ids:
        h.update(i.encode() + b"\0")
    return h.hexdigest()


def recover(out: Path, parsed: Any = None) -> ResultStore:
    """Before a cluster run (or after one): compact what dead workers left in the journal and
    drop the block markers, which only a running cluster's retries use. ``parsed`` is the Arrow
    type of the run's ``parsed`` column, if it has an output schema."""
    store = ResultStore(out, parsed=parsed)
    store.open()
    for marker in store.journal_dir.glob("blk-*"):
        with _writing(marker):
            marker.unlink(missing_ok=True)
    return store


WRITERS = ".writers"
"""A file in ``DIR/journal`` that each worker holds a shared lock on while it writes a block."""


@contextmanager
def writing_block(out: Path) -> Iterator[None]:
    """Hold ``DIR/journal/.writers`` shared while a block is written (see ``wait_for_writers``)."""
    path = out / "journal" / WRITERS
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def wait_for_writers(out: Path, timeout: float = 120.0) -> None:
    """Wait until no worker writes a block in ``out``: the workers of a driver that was killed
    finish or die (Ray ends them) before a rerun reads what is done. The kernel drops a dead
    worker's lock with it."""
    path = out / "journal" / WRITERS
    if not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(
                        f"workers of another run still write to {out}; try again later"
                    ) from None
                time.sleep(0.2)
    finally:
        os.close(fd)


def done_hashes(out: Path) -> IdSet:
    """The ids finished in ``out``'s results, by ``stable_hash``, read part by part."""
    store = ResultStore(out)
    keys = array("Q")
    for seq in store._numbers(store.results_dir, _PART):
        table, _ = read_part(store._part(seq), ["id"])
        if table is not None:
            keys.extend(stable_hash(i) for i in table.column(0).to_pylist())
    return IdSet(keys)


class BlockJournal:
    """One block's results in the output directory, written exactly once (see the module).
    ``parsed`` is the Arrow type of the run's ``parsed`` column, if it has an output schema."""

    def __init__(self, out: Path, key: str, parsed: Any = None) -> None:
        self.store = ResultStore(out, parsed=parsed)
        self.marker = self.store.journal_dir / f"blk-{key}"
        self.seq = 0
        self.rows: list[dict[str, Any]] = []
        self.complete = False
        self._file: FileIO | None = None

    def begin(self) -> list[dict[str, Any]]:
        """Open the block's segment; return the rows an earlier attempt finished already.
        ``complete`` says that attempt wrote the whole block."""
        if self.marker.exists():
            self.seq = int(self.marker.read_text())
            part = self.store._part(self.seq)
            if part.exists():
                table, _ = read_part(part)
                if table is not None:
                    self.rows = table.to_pylist()
                    self.complete = True
                    self._cleanup()
                    return self.rows
            segment = self.store._segment(self.seq)
            if segment.exists():
                self.rows = read_segment(segment)
                with _writing(segment):
                    _cut_torn_line(segment)
            with _writing(segment):
                self._file = FileIO(segment, "ab")
            return self.rows
        self.seq, self._file = self._claim()
        tmp = self.marker.with_name(self.marker.name + ".tmp")
        with _writing(self.marker):
            tmp.write_text(f"{self.seq}\n")
            os.replace(tmp, self.marker)
        return self.rows

    def _claim(self) -> tuple[int, FileIO]:
        """A segment number no other worker holds and no part has: create ``seg-N`` exclusively.
        A segment is deleted only after its part is in place, so once the create succeeds the
        part's absence is final."""
        store = self.store
        with _writing(store.journal_dir):
            store.journal_dir.mkdir(parents=True, exist_ok=True)
            store.results_dir.mkdir(parents=True, exist_ok=True)
        n = max([*store._numbers(store.results_dir, _PART), 0]) + 1
        while True:
            segment = store._segment(n)
            try:
                fd = os.open(segment, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
            except FileExistsError:
                n += 1
                continue
            except OSError as e:
                raise WriteFailed.from_os_error(e, segment) from e
            if store._part(n).exists():
                os.close(fd)
                os.unlink(segment)
                n += 1
                continue
            return n, FileIO(fd, "a")

    def append(self, record: Record) -> None:
        """Journal one finished job: once this returns, the kernel has its line."""
        assert self._file is not None
        row = record.to_dict()
        try:
            _write_all(self._file, dumps(row) + b"\n")
        except OSError as e:
            raise WriteFailed.from_os_error(e, self.store._segment(self.seq)) from e
        self.rows.append(row)

    def finish(self) -> list[dict[str, Any]]:
        """Write the block's part, then delete its segment and marker; return its rows."""
        import pyarrow as pa

        if self._file is not None:
            with _writing(self.store._segment(self.seq)):
                self._file.close()
            self._file = None
        if self.rows:
            part = self.store._part(self.seq)
            table = pa.Table.from_pylist(self.rows, schema=self.store.schema())
            self.store._write_part(part, table)
            with _writing(self.store.results_dir):
                _fsync_dir(self.store.results_dir)
        self._cleanup()
        return self.rows

    def _cleanup(self) -> None:
        with _writing(self.marker):
            self.store._segment(self.seq).unlink(missing_ok=True)
            self.marker.unlink(missing_ok=True)


def _cut_torn_line(segment: Path) -> None:
    """Cut a torn last line (a worker killed mid-write) so the next line starts on its own."""
    data = segment.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with segment.open("r+b") as f:
            f.truncate(end)


class BlockWorker:
    """Sends blocks of jobs and returns their results (a Ray Data ``map_batches`` callable).

    It keeps one event loop on a thread of its own, so its lanes, their pacing and the
    connections outlive each block. ``endpoints`` are the run's (``ray.endpoints``: one without
    ``--pool``), each with its account's budget (a Ray actor handle, or any object with ``grant``
    / ``pause`` / ``images`` / ``fail`` methods that ``.remote(...)`` to awaitables); the jobs go
    through them as a local run's go through its pool (``ray.worker_pool``). It sends as a local
    run does: the image options, the output schema (loaded by the driver,
    ``batcher.ray.check_options``: each answer is validated here and ``parsed`` typed as a local
    run types it), images saved under ``out/images/`` before their job is journaled, and
    ``--ipm`` kept by the budget for the whole cluster. Under ``--budget``, ``spend`` is the run's
    ``_engine.budget.SharedSpend`` (an actor handle): each job's worst case is reserved there
    before it is sent, at the ``prices`` the driver loaded, and once one does not fit this worker
    sends nothing more.
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
        self._failed: BatcherError | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.pool: Pool = self._call(self._open())
        self.executor = PoolExecutor(self.pool, self.pool.routes[0].provider)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _open(self) -> Pool:
        return open_worker_pool(
            self.endpoints,
            self.options,
            schema=self.schema,
            clock=self.clock,
            tally=Tally(self.clock),
            prices=self.prices,
            out=self.out,
        )

    def __call__(self, batch: Any) -> Any:
        """One block (a pyarrow table of job rows) -> its results (a table of result rows)."""
        import pyarrow as pa

        with writing_block(self.out):
            rows = self._call(self._block(batch.to_pylist()))
        return pa.Table.from_pylist(rows, schema=_schema(self.parsed))

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
        key = block_key([*(j.id for j in todo), *(r.id for r in bad)])
        journal = BlockJournal(self.out, key, self.parsed)
        finished = {r["id"] for r in journal.begin()}
        if journal.complete:
            return journal.rows
        for record in bad:
            if record.id not in finished:
                journal.append(record)
        failure: list[tuple[BatcherError, str | None]] = []
        limiter = anyio.CapacityLimiter(self.options.requests.max_concurrency or UNPACED)

        async def one(job: Job) -> None:
            async with limiter:
                if failure or self._over_budget:
                    return
                assert job.model is not None
                reservation = None
                if self.spend is not None:
                    reservation = await self._reserve(job)
                    if reservation is None:  # left for a rerun with a larger budget
                        self._over_budget = True
                        _, model = await self.spend.stopped.remote()
                        if model is not None:  # no price: nothing bounds its cost
                            failure.append((unpriced(model), None))
                            tg.cancel_scope.cancel()
                        return
                outcome: Outcome = ABANDONED
                try:
                    outcome = await self.executor.execute(job)
                finally:
                    if reservation is not None:
                        with anyio.CancelScope(shield=True):
                            await self._settle(reservation, outcome)
            if isinstance(outcome, Done):
                try:
                    journal.append(outcome.record)
                except WriteFailed as e:
                    failure.append((e, None))
                    tg.cancel_scope.cancel()
            elif isinstance(outcome, Fatal):
                failure.append((outcome.error, outcome.model))
                tg.cancel_scope.cancel()
            elif isinstance(outcome, Halted):
                failure.append((outcome.error, None))
                tg.cancel_scope.cancel()
            elif isinstance(outcome, Deferred):
                pass  # the day's quota is spent: the job is left for a rerun after the reset

        async with anyio.create_task_group() as tg:
            for job in todo:
                if job.id not in finished:
                    tg.start_soon(one, job)
        rows_out = await anyio.to_thread.run_sync(journal.finish)
        if failure:
            error, model = failure[0]
            self._failed = error
            await self.endpoints[0].budget.fail.remote(self.run, error, model)
            raise error
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
