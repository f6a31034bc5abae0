"""The scheduler: passes over the inputs, skipping what is done, sending the rest through their
models' lanes, deferring jobs whose daily quota is spent, and waiting for the reset.

Workers take jobs from a bounded stream and hand each to the executor (an embeddings run's jobs go
as packs, many to a request, ``_engine.embed``); the scheduler acts on each job's outcome:
records a finished job, counts a deferred one, stops the run on a fatal answer. A stop (signal or
fatal answer) halts admission; requests in flight get ``grace`` seconds, then are
abandoned and left for a rerun.

How many workers: as many as the lanes need in flight to hold their pace (each lane's rate times
how long its answers take, ``Lane.wanted``), re-counted every ``CONTROL_EVERY`` seconds while jobs
are out, within ``ceiling`` (``--max-concurrency`` if given, else what the process's file
descriptors allow up to ``MAX_IN_FLIGHT``). A lane no limit paces wants ``unpaced`` (the explicit
``--max-concurrency``, else ``UNPACED``). A fixed number would cap the rate at number / answer
time: 16 in flight with answers of 3 s is 320 RPM, whatever the tier allows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._admission.estimate import features
from .._config.options import UNPACED, concurrency_ceiling
from .._core.clock import Clock
from .._core.errors import WriteFailed
from .._core.idset import IdSet
from .._jobs import Job, JobSource
from .budget import Reservation
from .consume import Consumer
from .embed import Packer
from .pool import Pool
from .pool_executor import PoolExecutor
from .tally import Tally

__all__ = ["Scheduler"]

log = logging.getLogger("batcher")

LEDGER_EVERY = 2.0
"""Seconds between saves of the RPD ledger while a run goes on."""
BEAT_EVERY = 1.0
"""Seconds between renewals of the lanes' leases in the quota store."""
CONTROL_EVERY = 0.25
"""Seconds between counts of the workers the lanes need, while jobs are out."""


class Scheduler:
    """Runs the passes over ``source``; ``done`` holds the ids already finished. Every outcome
    goes to ``consumer``, which stops the scheduler (``halt``) when the run must stop."""

    def __init__(
        self,
        source: JobSource,
        pool: Pool,
        executor: PoolExecutor,
        consumer: Consumer[Any],
        tally: Tally,
        clock: Clock,
        *,
        done: IdSet,
        refresh_done: Callable[[], IdSet],
        max_concurrency: int | None,
        wait_for_reset: bool,
        grace: float,
        packer: Packer | None = None,
    ) -> None:
        self.source = source
        self.pool = pool
        self.executor = executor
        self.consumer = consumer
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
        self.packer = packer
        """Packs embedding jobs many to a request (None: a request a job)."""
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
        self._jobs: MemoryObjectReceiveStream[Job | list[Job]] | None = None
        consumer.on_stop(self.halt, budget=lambda: self._producer.cancel())

    async def run(self) -> None:
        """Send every job not yet done, pass after pass while jobs wait for a quota reset."""
        send_jobs, receive_jobs = anyio.create_memory_object_stream[Job | list[Job]](
            min(self.ceiling, 1024)
        )
        async with anyio.create_task_group() as keeper:
            self._keeper = keeper
            keeper.start_soon(self._keep_ledger)
            if self.pool.store is not None:
                keeper.start_soon(self._keep_leases)
            async with receive_jobs, anyio.create_task_group() as tg:
                self._tg, self._jobs = tg, receive_jobs
                if self.consumer.stopped:
                    self._halt()
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
        wanted = sum(lane.wanted(self.unpaced) for lane in self.pool.every_lane())
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
            self.halt()

    def stop_now(self) -> None:
        """Abandon the requests in flight too (a second signal)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def halt(self) -> None:
        """Admit nothing more; what is in flight gets ``grace`` seconds."""
        self._halt()

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

    async def _produce(self, stream: MemoryObjectSendStream[Job | list[Job]]) -> None:
        with self._producer:
            async with stream:
                first = True
                while True:
                    self.consumer.deferred = 0
                    await self._one_pass(stream, count_skipped=first)
                    first = False
                    await self._idle.wait()  # every job of this pass finished or was deferred
                    if not self.consumer.deferred or not self.wait_for_reset:
                        return
                    await self._wait_for_reset()
                    self.done = await anyio.to_thread.run_sync(self.refresh_done)

    async def _one_pass(
        self, stream: MemoryObjectSendStream[Job | list[Job]], *, count_skipped: bool
    ) -> None:
        consumer = self.consumer
        packer = self.packer
        for n, job in enumerate(self.source):
            if n % 1024 == 0:
                # a long run of finished jobs must not starve the progress display or a SIGINT
                await anyio.lowlevel.checkpoint()
            if job.id in self.done:
                self.tally.skipped += count_skipped
                continue
            assert job.model is not None  # the source resolves every job's model
            stopped = self.pool.blocked(job.model)
            if stopped is not None:
                consumer.quota_stops.setdefault(stopped.model, stopped)
                consumer.deferred += 1
                continue
            if packer is None:
                await self._hand_out(stream, job)
            else:
                for pack in packer.add(job):
                    await self._hand_out(stream, pack)
        for pack in packer.flush() if packer is not None else ():
            await self._hand_out(stream, pack)

    async def _hand_out(
        self, stream: MemoryObjectSendStream[Job | list[Job]], item: Job | list[Job]
    ) -> None:
        """Put a job (or a pack of them) on the stream the workers take from."""
        if self._outstanding == 0:
            self._idle = anyio.Event()  # set again when the last job of this pass is done
            self._busy.set()
        self._outstanding += 1
        try:
            stream.send_nowait(item)  # a worker is waiting: no forced turn of the loop
        except anyio.WouldBlock:
            await stream.send(item)

    async def _wait_for_reset(self) -> None:
        """Sleep until the earliest quota reset among the lanes that wait for one."""
        stops = self.consumer.quota_stops
        resets = [e.resets_at for e in stops.values()]
        self.tally.waiting_until = min(resets) if resets else None
        for e in stops.values():
            log.info("waiting for the daily quota: %s", e)
        if self.tally.waiting_until is not None:
            await self.clock.sleep(max(0.0, self.tally.waiting_until - self.clock.time()) + 1.0)
        self.tally.waiting_until = None
        stops.clear()

    async def _work(self, stream: MemoryObjectReceiveStream[Job | list[Job]]) -> None:
        try:
            async with stream:
                while self.workers <= max(1, self.target):  # else this one ends here
                    item = await _next(stream)
                    if item is None:
                        return
                    if isinstance(item, list):
                        await self._pack(item)
                    else:
                        await self._one(item)
        finally:
            self.workers -= 1

    async def _one(self, job: Job) -> None:
        """Take one job through the executor and hand its outcome to the consumer."""
        reservation = None
        send = not self._halting
        if self.consumer.budget is not None and send:
            reservation = self._reserve(job)
            send = reservation is not None  # if not, left for a rerun with a larger budget
        if send and not self._halting:
            try:
                outcome = await self.executor.execute(job)
            except WriteFailed as e:  # saving the images it answered
                self.consumer.failed(e)
                outcome = None
            self.consumer.take(outcome, reservation)
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()
            self._busy = anyio.Event()

    async def _pack(self, jobs: list[Job]) -> None:
        """Take a pack of embedding jobs through the executor as one request; each job's outcome
        goes to the consumer on its own (under ``--budget`` each job reserves its own cost, and
        one that does not fit is left for a rerun)."""
        sent: list[tuple[Job, Reservation | None]] = []
        for job in jobs:
            if self._halting:
                break
            reservation = None
            if self.consumer.budget is not None:
                reservation = self._reserve(job)
                if reservation is None:
                    break
            sent.append((job, reservation))
        if sent and not self._halting:
            outcomes = await self.executor.execute_pack([job for job, _ in sent])
            for (_, reservation), outcome in zip(sent, outcomes, strict=True):
                self.consumer.take(outcome, reservation)
        else:
            for _, reservation in sent:
                self.consumer.take(None, reservation)
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()
            self._busy = anyio.Event()

    def _reserve(self, job: Job) -> Reservation | None:
        """Set aside the job's worst-case cost (``Consumer.reserve``)."""
        assert job.model is not None
        tokens = self.pool.estimator(job.model).estimate(features(job.text), cautious=True)
        return self.consumer.reserve(
            job.model, tokens, job.max_tokens, f"job ({job.id}, {job.model})"
        )

    async def _keep_leases(self) -> None:
        """Renew the lanes' leases in the quota store every second while the run goes on."""
        while True:
            await self.clock.sleep(BEAT_EVERY)
            await self.pool.beat()

    async def _keep_ledger(self) -> None:
        """Save the RPD ledger every couple of seconds while the run goes on."""
        while True:
            await self.clock.sleep(LEDGER_EVERY)
            try:
                await anyio.to_thread.run_sync(self.pool.save)
            except WriteFailed as e:
                self.consumer.failed(e)


async def _next(stream: MemoryObjectReceiveStream[Job | list[Job]]) -> Job | list[Job] | None:
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
