"""The batch-API executor: chunk the jobs, record, submit, poll, collect, exactly once.

It plugs in beside the online executor: the same requests (``Provider.build``), the same parser
for each answer (``Provider.parse``), and the same journal, so a job answered by a batch line gets
the row it would have got online, with ``via = "batch"`` and the raw line as its ``response``.

Exactly once across crashes rests on ``DIR/batches.jsonl`` (``_rundir.batchlog``): a chunk is
recorded (its files on disk, ``_rundir.chunk_files``) before its upload, its input file's id once
uploaded, and its batch id after the create call; a run first resolves every chunk the last one
left (a chunk with no id is looked up by its tag in the provider's list, and submitted only if no
batch has it, from the file it uploaded if that still lives), polls and collects the batches it
has, and only then submits jobs in no chunk. A batch's lines are journaled, skipping jobs already
done, before its chunk is closed; a crash in between collects it again, and the journal keeps one
row per job.

Nothing here holds the run's jobs: they are cut into chunks as the inputs stream past
(``batch_submit``), each chunk's input file and its jobs' ids, sources and fingerprints go to
disk as they are cut, and a finished batch's results file is downloaded to disk and read a line
at a time, so a million-job run keeps about a chunk's ids in memory (``benchmarks/memory.py``).

A line that failed in a way that may pass later (a 5xx, a 429, expired or cancelled before it
ran) goes into a later batch until ``max_attempts``; in ``auto`` it is left to the online lanes
instead, as are the jobs of a batch still unfinished ``batch_deadline`` after it was submitted
(that batch is cancelled, and what it answered before the cancel is kept).

A batch's state is read soon after its submission and then less and less often: right after the
create call, 2 s later, then at twice its age each time (4, 8, 16, 32 s...) until the gap reaches
``poll_interval``, which it keeps. Small batches, which the providers often finish within seconds
(their own examples poll every few seconds), are collected within a few seconds of finishing,
while a batch that runs for hours costs about one look per ``poll_interval``; a batch an earlier
run submitted is looked at once at the start, then every ``poll_interval`` (or sooner, following
the same doubling from its age). A wait ends at whichever comes first: the next look at some
batch, or (``auto``) the ``batch_deadline`` of a batch not yet cancelled, so a late batch is
cancelled and its jobs go online at its deadline, not at the next look.

A run in ``online`` mode into a directory with batches still pending cancels them first (as
``cancel_batches``), collects every line they answered, and only then do the online lanes send
the rest: no job is sent online while a batch holding it may still answer it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel

from .._admission.retry import RetryPolicy
from .._config.cost_options import BatchOptions
from .._config.prices import Prices
from .._core.clock import Clock
from .._core.errors import FatalProviderError, RetryableError
from .._core.idset import IdBag, IdSet
from .._jobs import JobSource
from .._rundir.batchlog import BatchLog, Chunk
from .._rundir.chunk_files import (
    Entry,
    chunk_folder,
    count_entries,
    input_file,
    read_entries,
    remove_chunk,
)
from .._rundir.rows import Record
from .._rundir.store import ResultStore
from .._wire.providers import Provider, is_embedder
from .._wire.providers._batch import BatchInfo, BatchLine
from .batch_chunks import BatchEndpoint, Chunker, batch_api
from .batch_embed import Resend, split_lines
from .batch_lines import LineRecords
from .batch_looks import Schedule, note_state, states_shown
from .batch_submit import Submitter
from .budget import Budget, Reservation
from .consume import Consumer
from .outcome import Done
from .pool import Pool

__all__ = ["STEPS", "BatchExecutor", "batch_api"]

log = logging.getLogger("batcher")

T = TypeVar("T")

STRETCH = 256
"""A batch's answers journaled in one write (``Consumer.grouped``): a write a line cost more than
the rest of a line's journaling, and a longer stretch would hold more answers parsed ahead."""

STEPS = ("recorded", "uploaded", "created", "polled", "collecting")
"""The named steps a test can crash the executor at: a chunk recorded but not uploaded, its file
uploaded and recorded but no batch created, created but its id not recorded, a round of polling
done, some of a batch's lines journaled."""


class BatchExecutor:
    """Sends the jobs of a run through the batch APIs of its pool's endpoints; ``run`` returns
    how many batches are still running when it stops (``no_wait``, a signal), 0 once all are
    collected. Each line's outcome goes to ``consumer``, as an online request's does."""

    def __init__(
        self,
        *,
        pool: Pool,
        fingerprint_provider: Provider,
        source: JobSource,
        consumer: Consumer[ResultStore],
        clock: Clock,
        options: BatchOptions,
        max_attempts: int,
        done: IdSet,
        prices: Prices,
        step: Callable[[str], None] | None = None,
    ) -> None:
        self.log = BatchLog(consumer.store.out)
        # no lane paces the batch API's own calls: a 429 waits its Retry-After (or a backoff)
        self.policy = RetryPolicy(max_attempts=max_attempts, paced=False)
        self.chunker = Chunker(pool, options.batch_queue_tokens, self.log, self.policy, clock)
        for chunk in self.log.open_chunks():
            self.chunker.endpoint(chunk)  # before anything is sent: each pending batch's key
        self.source = source
        self.consumer = consumer
        self.store = consumer.store
        self.tally = consumer.tally
        self.clock = clock
        self.options = options
        self.max_attempts = max_attempts
        self.done = done
        self.prices = prices
        self.step = step or (lambda name: None)
        self.written = IdBag()
        """Jobs journaled by this run."""
        self.reserved: dict[str, Reservation] = {}
        """Under ``--budget``, each open chunk's worst case, by tag, until it is collected."""
        self.lines = LineRecords(prices, clock, self.store.out)
        self.submitter = Submitter(
            chunker=self.chunker,
            log_=self.log,
            source=source,
            fingerprint_provider=fingerprint_provider,
            consumer=consumer,
            clock=clock,
            options=options,
            is_done=self.is_done,
            create=self._create,
            reserved=self.reserved,
            step=lambda name: self.step(name),
        )
        """Cuts the jobs into chunks as the inputs stream past; fingerprints every job as the
        run's first endpoint asks it (see ``PoolExecutor``)."""
        self.spent = (0.0, 0)
        """The cost and the longest answer of the batch being collected."""
        self.stopping = False
        self._sleep = anyio.CancelScope()
        self.cancelling = options.cancel_batches or options.mode == "online"
        """Cancel the batches of the directory and collect what they answered: asked for, or a
        run online into a directory whose batches are still pending."""
        self.looks = Schedule(clock, options)
        """When to look at each open chunk's batch next."""
        consumer.on_stop(lambda: None, budget=self._end_submitting)

    def _end_submitting(self) -> None:
        self.submitter.budget_stopped = True

    def stop(self) -> None:
        """Stop waiting: the batches keep running at the provider, and a rerun collects them."""
        self.stopping = True
        self._sleep.cancel()

    def is_done(self, job_id: str) -> bool:
        return job_id in self.written or job_id in self.done

    async def run(self) -> int:
        """Resolve what the last run left, submit the rest, and (unless told not to) wait."""
        await self.submitter.rebuild()
        if self.consumer.budget is not None:  # batches an earlier run left may still bill
            self.reserved.update(_hold(self.consumer.budget, self.log))
        await self._resolve()
        if self.cancelling:
            if not self.options.cancel_batches and self.log.open_chunks():
                log.info(
                    "%d batches of an earlier run are still pending in %s: cancelling them (as "
                    "--cancel-batches) and keeping what they answered before sending the rest "
                    "online",
                    len(self.log.open_chunks()),
                    self.store.out,
                )
            await self._cancel_all()
        else:
            await self.submitter.run_pass(first=True)
        return await self._wait()

    def _folder(self, chunk: Chunk) -> Path:
        return chunk_folder(self.log.folder(), chunk.tag)

    async def _resolve(self) -> None:
        """Find the batch of every chunk recorded without one; submit those no batch has."""
        for chunk in self.log.open_chunks():
            if chunk.batch is not None:
                continue
            ep = self.chunker.endpoint(chunk)
            found = await ep.call(ep.api.find, chunk.tag)
            if found is not None:
                log.info("batch %s of chunk %s found in the provider's list", found.id, chunk.tag)
                self.log.submitted(chunk, found.id, self.clock.time())
            elif self.cancelling:  # never sent: nothing to cancel, its jobs are left as they are
                self._close(chunk)
            else:
                await self._create(chunk)

    async def _create(self, chunk: Chunk) -> None:
        """Create ``chunk``'s batch of its input file on disk (``BatchEndpoint.submit``: uploaded
        unless a run before this one did and recorded a file that still lives)."""
        folder = self._folder(chunk)
        jobs = count_entries(folder)
        if not jobs:  # its jobs left the inputs since: nothing to send
            self._close(chunk)
            return
        ep = self.chunker.endpoint(chunk)
        info = await ep.submit(self.log, chunk, input_file(folder), self.step)
        self.step("created")
        self.log.submitted(chunk, info.id, self.clock.time())
        self.looks.submitted(chunk)
        self.tally.requests += jobs
        self.tally.in_flight += jobs
        log.info("batch %s submitted: %d jobs of %s (%s)", info.id, jobs, chunk.model, chunk.tag)

    def _close(self, chunk: Chunk) -> None:
        """Record ``chunk`` closed, then remove its files."""
        self.log.closed(chunk, self.clock.time())
        remove_chunk(self._folder(chunk))
        self.submitter.freed = True

    async def _cancel_all(self) -> None:
        for chunk in self.log.open_chunks():
            if chunk.batch is not None:
                await self._cancel(chunk, chunk.batch)

    async def _cancel(self, chunk: Chunk, batch: str) -> None:
        """Cancel ``batch``, then look at it again soon: it keeps what it answered, which its next
        look collects. A batch that has finished meanwhile (the provider refuses to cancel it)
        is collected as it is."""
        ep = self.chunker.endpoint(chunk)
        try:
            await ep.call(ep.api.cancel, batch)
        except FatalProviderError:
            info = await ep.call(ep.api.get, batch)
            if not info.finished:
                raise
        else:
            log.info("batch %s cancelled", batch)
        self.looks.cancelled(chunk)

    async def _wait(self) -> int:
        """Look at each batch when it is due until every chunk is collected, or once with
        ``no_wait``, or until stopped."""
        first = True
        while not self.stopping:
            for chunk in self.log.open_chunks():
                if self.stopping:
                    break
                assert chunk.batch is not None
                if not first and not self.looks.is_due(chunk):
                    continue
                ep = self.chunker.endpoint(chunk)
                info = await ep.call(ep.api.get, chunk.batch)
                self.looks.looked(chunk)
                note_state(self.log, chunk, info, self.clock.time())
                if info.finished:
                    await self._collect(chunk, info)
                elif self.looks.late(chunk):
                    log.info("batch %s is past --batch-deadline: cancelling it", info.id)
                    await self._cancel(chunk, info.id)
            first = False
            self.tally.batches = states_shown(self.log.open_chunks())
            self.step("polled")
            if self.submitter.due() and not self.cancelling:
                await self.submitter.run_pass(first=False)
            open_chunks = self.log.open_chunks()
            if not open_chunks or self.options.no_wait:
                break
            due = min((self.looks.due(c) for c in open_chunks), default=math.inf)
            with anyio.CancelScope() as self._sleep:
                if not self.stopping:
                    await self.clock.sleep(max(0.0, due - self.clock.monotonic()))
        self.looks.forget({t for t, c in self.log.chunks.items() if c.closed})
        return len(self.log.open_chunks())

    async def _collect(self, chunk: Chunk, info: BatchInfo) -> None:
        """Journal the answered lines of a finished batch, read a line at a time from its
        results downloaded to disk, then close its chunk."""
        ep = self.chunker.endpoint(chunk)
        folder = self._folder(chunk)
        entries = read_entries(folder) or []
        by_id = {entry.id: entry for entry in entries}
        ids = [entry.id for entry in entries]
        lines = await ep.call(ep.api.lines, info, ids, folder)
        if is_embedder(ep.provider):  # a line may answer many jobs: one line a job
            lines = split_lines(ep.api, ep.provider, folder, entries, lines, self.chunker.estimator)
        unanswered = f"batch {info.id} ended {info.state} without answering this job"
        if info.error:
            unanswered += f" ({info.error})"
        self.spent = (0.0, 0)
        seen: set[str] = set()
        lines = iter(lines)
        while stretch := list(itertools.islice(lines, STRETCH)):
            await anyio.lowlevel.checkpoint()
            # A stretch's rows go to the journal in one write, before anything else runs (an
            # answer's images, downloaded on a thread, are the one wait inside).
            with self.consumer.grouped():
                for line in stretch:
                    entry = by_id.get(line.job_id)
                    if entry is None or line.job_id in seen:
                        continue  # not one of this batch's jobs, or answered twice (the first)
                    seen.add(line.job_id)
                    await self._journal(ep, chunk, entry, line, unanswered)
            self._written()
            await self.consumer.caught_up()
        with self.consumer.grouped():
            for entry in entries:
                if entry.id not in seen:
                    await self._journal(ep, chunk, entry, None, unanswered)
        self._written()
        self.tally.in_flight = max(0, self.tally.in_flight - len(entries))
        self._close(chunk)
        reservation = self.reserved.pop(chunk.tag, None) or Reservation(chunk.model, 0.0)
        if self.consumer.budget is not None:  # the batch's worst case becomes what it cost
            cost, longest = self.spent
            self.consumer.budget.settle(reservation, cost, longest or None)

    async def _journal(
        self,
        ep: BatchEndpoint,
        chunk: Chunk,
        entry: Entry,
        line: BatchLine | None,
        unanswered: str,
    ) -> None:
        """Journal the row of ``entry``'s job from its ``line`` (None: the batch did not answer
        it), unless it goes into a later batch or online, or is done already."""
        if self.is_done(entry.id):
            return  # answered already (online, or a collect before)
        answer = self.lines.judge(ep, entry, chunk, line, unanswered)
        if isinstance(answer, RetryableError):
            if self.options.mode == "auto" or self.cancelling:
                return  # the online lanes finish it, or a later run sends it again
            if isinstance(answer, Resend):  # alone on a line of the next batch, whatever try
                self.submitter.alone.add(entry.id)
                self.submitter.retry[entry.id] = chunk.attempt
                return
            if chunk.attempt < self.max_attempts:
                self.submitter.retry[entry.id] = chunk.attempt
                return
            answer = self.lines.record(ep, entry, chunk, line, error=answer), None
        record = await self.lines.with_images(*answer)
        self._write(record)
        cost, longest = self.spent
        self.spent = (cost + (record.cost_usd or 0.0), max(longest, record.output_tokens or 0))

    def _written(self) -> None:
        """Stop here if a group of lines could not be written, before the chunk is closed."""
        if self.consumer.write_failed is not None:
            raise self.consumer.write_failed

    def _write(self, record: Record) -> None:
        """Hand a line's outcome to the consumer; a failed write stops here, before the chunk is
        closed, so a rerun collects the batch again rather than pay for its jobs twice."""
        self.consumer.take(Done(record))
        if self.consumer.write_failed is not None:
            raise self.consumer.write_failed
        self.written.add(record.id)
        self.step("collecting")


def _hold(budget: Budget, log_: BatchLog) -> dict[str, Reservation]:
    """The worst case of each batch an earlier run submitted, set aside by tag (an unpriced
    model's batch is not: its lines count as they are read)."""
    held = {}
    for chunk in log_.open_chunks():
        entries = read_entries(chunk_folder(log_.folder(), chunk.tag)) or []
        outputs = [entry.max_tokens for entry in entries]
        with contextlib.suppress(KeyError):
            reservation = budget.reserve(chunk.model, chunk.tokens, outputs, batch=True, force=True)
            if reservation is not None:
                held[chunk.tag] = reservation
    return held
