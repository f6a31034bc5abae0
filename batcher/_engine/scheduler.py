"""The scheduler: passes over the inputs, skipping what is done, sending the rest through their
models' lanes, deferring jobs whose daily quota is spent, and waiting for the reset.

Workers take jobs from a bounded stream and hand each to the executor; the scheduler acts on the
outcome: records a finished job, counts a deferred one, stops the run on a fatal answer. A stop
(signal or fatal answer) halts admission; requests in flight get ``grace`` seconds, then are
abandoned and left for a rerun.

How many workers: as many as the lanes need in flight to hold their pace (each lane's rate times
how long its answers take, ``Lane.wanted``), re-counted every ``CONTROL_EVERY`` seconds while jobs
are out, within ``ceiling`` (``--max-concurrency`` if given, else what the process's file
descriptors allow up to ``MAX_IN_FLIGHT``). A lane no limit paces wants ``unpaced`` (the explicit
``--max-concurrency``, else ``UNPACED``). A fixed number would cap the rate at number / answer
time: 16 in flight with answers of 3 s is 320 RPM, whatever the tier allows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._admission.estimate import features
from .._admission.lane import Lane
from .._admission.ledger import DailyCount, Ledger
from .._admission.outage import OutageWatch
from .._admission.quota import Account, QuotaStore, SharedQuota, StoreUnreachable, new_holder
from .._config.limits import LimitTable
from .._config.options import UNPACED, concurrency_ceiling
from .._core.clock import Clock
from .._core.errors import FatalProviderError, Outage, QuotaExhausted, WriteFailed
from .._core.idset import IdSet
from .._jobs import Job, JobSource
from .._rundir.attempts import Attempt, AttemptLog
from .._rundir.store import ResultStore
from .budget import Budget, Reservation
from .execute import Deferred, Done, Executor, Fatal, Halted
from .tally import Tally

if TYPE_CHECKING:
    from .pool import Pool, PoolExecutor

__all__ = ["Lanes", "Scheduler"]

log = logging.getLogger("batcher")

LEDGER_EVERY = 2.0
"""Seconds between saves of the RPD ledger while a run goes on."""
BEAT_EVERY = 1.0
"""Seconds between renewals of the lanes' leases in the quota store."""
CONTROL_EVERY = 0.25
"""Seconds between counts of the workers the lanes need, while jobs are out."""


class Lanes:
    """The lanes of a run's endpoint, one per model, made on first use with its limits and
    today's quota; with a quota store, each shares its account's budget with other runs."""

    def __init__(
        self,
        limits: LimitTable,
        ledger: Ledger,
        clock: Clock,
        *,
        per_second: bool,
        rolling: bool,
        where: str = "",
        max_outage: float = 1800.0,
        store: QuotaStore | None = None,
        account: Account | None = None,
        ledger_prefix: str = "",
    ) -> None:
        self.limits = limits
        self.ledger_prefix = ledger_prefix
        """Put before each model's name in the ledger: a pool's endpoint name and a slash."""
        self.max_outage = max_outage
        self.outage = OutageWatch(clock, max_outage=max_outage, where=where)
        """One endpoint, one outage: every model's lane shares the watch."""
        self.ledger = ledger
        self.clock = clock
        self.per_second = per_second
        self.rolling = rolling
        self.by_model: dict[str, Lane] = {}
        self.store = store
        self.account = account
        self.holder = new_holder()

    def __getitem__(self, model: str) -> Lane:
        lane = self.by_model.get(model)
        if lane is None:
            limits = self.limits.for_model(model)
            daily = DailyCount(rolling=self.rolling, keep_times=limits.rpd is not None)
            self.ledger.restore(self.ledger_prefix + model, daily)
            quota = None
            if self.store is not None and self.account is not None:
                quota = SharedQuota(
                    self.store,
                    self.account,
                    model,
                    self.clock,
                    self.holder,
                    max_outage=self.max_outage,
                )
            lane = Lane(
                model,
                limits,
                self.clock,
                per_second=self.per_second,
                daily=daily,
                outage=self.outage,
                quota=quota,
            )
            self.by_model[model] = lane
        return lane

    def every_lane(self) -> Iterator[Lane]:
        """The lanes made so far."""
        return iter(list(self.by_model.values()))

    def worked(self, besides: str) -> list[str]:
        """Models that have had a successful answer, other than ``besides``."""
        return sorted(m for m, lane in self.by_model.items() if lane.succeeded and m != besides)

    def save(self) -> None:
        """Write every lane's quota-day count to the ledger."""
        prefix = self.ledger_prefix
        self.ledger.save({prefix + m: lane.daily for m, lane in self.by_model.items()})

    async def beat(self) -> None:
        """Renew the leases of the lanes with demand (and drop the idle ones'), so each lane's
        share follows how many processes are sending."""
        for lane in list(self.by_model.values()):
            if lane.quota is not None:
                await lane.quota.beat(active=lane.has_demand())

    async def close(self) -> None:
        """Give back the unspent blocks of today's requests and drop this run's leases."""
        if self.store is None:
            return
        for lane in self.by_model.values():
            if lane.quota is not None:
                await lane.quota.close()
        with contextlib.suppress(StoreUnreachable):  # the leases lapse within LEASE_TTL anyway
            await self.store.leave(self.holder)


class Scheduler:
    """Runs the passes over ``source``; ``done`` holds the ids already finished."""

    def __init__(
        self,
        source: JobSource,
        lanes: Lanes | Pool,
        executor: Executor | PoolExecutor,
        store: ResultStore,
        tally: Tally,
        clock: Clock,
        *,
        done: IdSet,
        refresh_done: Callable[[], IdSet],
        max_concurrency: int | None,
        wait_for_reset: bool,
        grace: float,
        budget: Budget | None = None,
        attempts: AttemptLog | None = None,
    ) -> None:
        self.source = source
        self.lanes = lanes
        self.executor = executor
        self.store = store
        self.tally = tally
        self.clock = clock
        self.done = done
        self.refresh_done = refresh_done
        self.ceiling = concurrency_ceiling(max_concurrency)
        """The most workers (requests in flight), whatever the lanes want."""
        self.unpaced = max_concurrency if max_concurrency is not None else UNPACED
        """Workers a lane wants when no known limit paces it."""
        self.workers = 0
        """Workers running now."""
        self.target = 0
        """Workers wanted now (``_count_workers``)."""
        self.wait_for_reset = wait_for_reset
        self.grace = grace
        self.budget = budget
        self.attempts = attempts
        self.budget_stop: str | None = None
        """Why admission stopped at the budget, if it did."""
        self.unpriced: str | None = None
        """A model without a known price met under a budget: nothing bounds its cost."""
        self.quota_stops: dict[str, QuotaExhausted] = {}
        self.deferred = 0
        self.fatal: tuple[FatalProviderError, str, list[str]] | None = None
        """The first fatal answer: the error, its model, and the models that had worked."""
        self.outage: Outage | None = None
        """The outage that stopped the run, if one did."""
        self.write_failed: WriteFailed | None = None
        """The failed write (a full disk...) that stopped the run, if one did."""
        self.stopping: int | None = None
        self._halting = False
        self._producer = anyio.CancelScope()
        self._tg: TaskGroup | None = None
        self._keeper: TaskGroup | None = None
        self._outstanding = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._busy = anyio.Event()
        """Set while jobs are out (the worker count is kept only then)."""
        self._jobs: MemoryObjectReceiveStream[Job] | None = None

    async def run(self) -> None:
        """Send every job not yet done, pass after pass while jobs wait for a quota reset."""
        send_jobs, receive_jobs = anyio.create_memory_object_stream[Job](min(self.ceiling, 1024))
        async with anyio.create_task_group() as keeper:
            self._keeper = keeper
            keeper.start_soon(self._keep_ledger)
            if self.lanes.store is not None:
                keeper.start_soon(self._keep_leases)
            async with receive_jobs, anyio.create_task_group() as tg:
                self._tg, self._jobs = tg, receive_jobs
                tg.start_soon(self._produce, send_jobs)
                self.target = min(self.unpaced, self.ceiling)
                self._start_workers()
                keeper.start_soon(self._keep_workers)
            self._jobs = None
            keeper.cancel_scope.cancel()

    def _start_workers(self) -> None:
        """Start workers up to ``target``, never more than the jobs left (each is a task
        waiting on the stream)."""
        jobs, tg = self._jobs, self._tg
        if jobs is None or tg is None:
            return
        tally = self.tally
        left = max(1, tally.total - tally.skipped - tally.ok - tally.errors)
        while self.workers < min(self.target, left):
            self.workers += 1
            tg.start_soon(self._work, jobs.clone())

    def wanted(self) -> int:
        """Workers the lanes need now to hold their pace, within ``ceiling``."""
        wanted = sum(lane.wanted(self.unpaced) for lane in self.lanes.every_lane())
        return max(1, min(self.ceiling, wanted))

    async def _keep_workers(self) -> None:
        """Re-count the workers the lanes need every ``CONTROL_EVERY`` seconds while jobs are
        out; start more at once, and let those beyond the count end after their job."""
        while True:
            await self._busy.wait()
            self.target = self.wanted()
            self._start_workers()
            await self.clock.sleep(CONTROL_EVERY)

    def stop(self, signum: int) -> None:
        """Stop for a signal: admit nothing more; what is in flight gets ``grace`` seconds."""
        if self.stopping is None:
            self.stopping = signum
            self._halt()

    def stop_now(self) -> None:
        """Abandon the requests in flight too (a second signal)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _halt(self) -> None:
        if self._halting or self._tg is None or self._keeper is None:
            return
        self._halting = True
        self._producer.cancel()
        self.executor.halt()
        self._keeper.start_soon(self._end_grace)

    async def _end_grace(self) -> None:
        await self.clock.sleep(self.grace)
        self.stop_now()

    async def _produce(self, stream: MemoryObjectSendStream[Job]) -> None:
        with self._producer:
            async with stream:
                first = True
                while True:
                    self.deferred = 0
                    await self._one_pass(stream, count_skipped=first)
                    first = False
                    await self._idle.wait()  # every job of this pass finished or was deferred
                    if not self.deferred or not self.wait_for_reset:
                        return
                    await self._wait_for_reset()
                    self.done = await anyio.to_thread.run_sync(self.refresh_done)

    async def _one_pass(self, stream: MemoryObjectSendStream[Job], *, count_skipped: bool) -> None:
        for n, job in enumerate(self.source):
            if n % 1024 == 0:
                # a long run of finished jobs must not starve the progress display or a SIGINT
                await anyio.lowlevel.checkpoint()
            if job.id in self.done:
                self.tally.skipped += count_skipped
                continue
            assert job.model is not None  # the source resolves every job's model
            lane = self.lanes[job.model]
            stopped = lane.blocked()
            if stopped is not None:
                self.quota_stops.setdefault(lane.model, stopped)
                self.deferred += 1
                continue
            if self._outstanding == 0:
                self._idle = anyio.Event()  # set again when the last job of this pass is done
                self._busy.set()
            self._outstanding += 1
            try:
                stream.send_nowait(job)  # a worker is waiting: no forced turn of the loop
            except anyio.WouldBlock:
                await stream.send(job)

    async def _wait_for_reset(self) -> None:
        """Sleep until the earliest quota reset among the lanes that wait for one."""
        resets = [e.resets_at for e in self.quota_stops.values()]
        self.tally.waiting_until = min(resets) if resets else None
        for e in self.quota_stops.values():
            log.info("waiting for the daily quota: %s", e)
        if self.tally.waiting_until is not None:
            await self.clock.sleep(max(0.0, self.tally.waiting_until - self.clock.time()) + 1.0)
        self.tally.waiting_until = None
        self.quota_stops.clear()

    async def _work(self, stream: MemoryObjectReceiveStream[Job]) -> None:
        try:
            async with stream:
                while self.workers <= max(1, self.target):  # else this one ends here
                    job = await _next(stream)
                    if job is None:
                        return
                    await self._one(job)
        finally:
            self.workers -= 1

    async def _one(self, job: Job) -> None:
        """Take one job through the executor and act on its outcome."""
        reservation = None
        send = not self._halting
        if self.budget is not None and send:
            reservation = self._reserve(job)
            send = reservation is not None  # if not, left for a rerun with a larger budget
        if send and not self._halting:
            assert job.model is not None
            try:
                outcome = await self.executor.execute(job, self.lanes[job.model])
            except WriteFailed as e:  # saving the images it answered
                self._write_failed(e)
                outcome = None
            if reservation is not None:
                self._settle(reservation, outcome)
            if isinstance(outcome, Done):
                self._record(outcome)
            elif isinstance(outcome, Deferred):
                self.quota_stops.setdefault(outcome.stop.model, outcome.stop)
                self.deferred += 1
            elif isinstance(outcome, Fatal):
                if self.fatal is None:
                    worked = self.lanes.worked(besides=outcome.model)
                    self.fatal = (outcome.error, outcome.model, worked)
                self._halt()
            elif isinstance(outcome, Halted):
                self.outage = self.outage or outcome.error
                self._halt()
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()
            self._busy = anyio.Event()

    def _reserve(self, job: Job) -> Reservation | None:
        """Set aside the job's worst-case cost; on the first job that does not fit (or whose
        model has no price), stop admitting: what is in flight finishes, the rest is left."""
        assert self.budget is not None and job.model is not None
        if self.budget_stop is not None or self.unpriced is not None:
            return None
        estimator = self.lanes[job.model].estimator
        tokens = estimator.estimate(features(job.text), cautious=True)
        try:
            reservation = self.budget.reserve(job.model, tokens, job.max_tokens)
        except KeyError:
            self.unpriced = job.model
            self._producer.cancel()
            return None
        if reservation is None:
            self.budget_stop = (
                f"the next job ({job.id}, {job.model}) could take the spend over the budget"
            )
            self._producer.cancel()
        return reservation

    def _settle(self, reservation: Reservation, outcome: object) -> None:
        assert self.budget is not None
        if isinstance(outcome, Done):
            record = outcome.record
            self.budget.settle(reservation, record.cost_usd, record.output_tokens)
        else:
            self.budget.settle(reservation, None)

    def _record(self, outcome: Done) -> None:
        """Journal a finished job; it counts only once it is written. After a failed write
        nothing more is written: the job is left for a rerun, and the run stops."""
        if self.write_failed is not None:
            return
        try:
            seq = self.store.append(outcome.record)
        except WriteFailed as e:
            self._write_failed(e)
            return
        self.tally.finished(outcome.record)
        if seq is not None and self._tg is not None:
            self._tg.start_soon(self._in_thread, self.store.compact, seq)

    def log_attempt(self, attempt: Attempt) -> None:
        """Journal one request in the attempt log; a failed write stops the run as a result's
        does (the disk that refused it will refuse results next)."""
        if self.attempts is None or self.write_failed is not None:
            return
        try:
            seq = self.attempts.append(attempt)
        except WriteFailed as e:
            self._write_failed(e)
            return
        if seq is not None and self._tg is not None:
            self._tg.start_soon(self._in_thread, self.attempts.compact, seq)

    def _write_failed(self, error: WriteFailed) -> None:
        if self.write_failed is None:
            self.write_failed = error
        self._halt()

    async def _in_thread(self, fn: Callable[..., None], *args: object) -> None:
        """Run a write on a worker thread; a failed write stops the run instead of crashing it."""
        try:
            await anyio.to_thread.run_sync(fn, *args)
        except WriteFailed as e:
            self._write_failed(e)

    async def _keep_leases(self) -> None:
        """Renew the lanes' leases in the quota store every second while the run goes on."""
        while True:
            await self.clock.sleep(BEAT_EVERY)
            await self.lanes.beat()

    async def _keep_ledger(self) -> None:
        """Save the RPD ledger every couple of seconds while the run goes on."""
        while True:
            await self.clock.sleep(LEDGER_EVERY)
            await self._in_thread(self.lanes.save)


async def _next(stream: MemoryObjectReceiveStream[Job]) -> Job | None:
    """The next job, None at the end; without a forced turn of the loop when one is ready."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None
