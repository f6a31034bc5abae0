"""The batch-API executor: chunk the jobs, record, submit, poll, collect, exactly once.

It plugs in beside the online executor: the same requests (``Provider.build``), the same parser
for each answer (``Provider.parse``), and the same journal, so a job answered by a batch line gets
the row it would have got online, with ``via = "batch"`` and the raw line as its ``response``.

Exactly once across crashes rests on ``DIR/batches.jsonl`` (``_rundir.batchlog``): a chunk is
recorded before its create call and its batch id after; a run first resolves every chunk the last
one left (a chunk with no id is looked up by its tag in the provider's list, and submitted only if
no batch has it), polls and collects the batches it has, and only then submits jobs in no chunk. A
batch's lines are journaled, skipping jobs already done, before its chunk is closed; a crash in
between collects it again, and the journal keeps one row per job.

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

import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import anyio
import anyio.lowlevel

from .._admission.estimate import TokenEstimator, features
from .._admission.retry import RetryPolicy
from .._config.options import BatchOptions
from .._config.prices import Prices
from .._core.clock import Clock
from .._core.errors import FatalProviderError, Outage, ProviderError, RetryableError
from .._core.idset import IdSet
from .._core.media import inline_now
from .._jobs import Job, JobSource
from .._rundir.batchlog import BatchLog, Chunk
from .._rundir.store import Record, ResultStore
from .._wire.endpoint import Target
from .._wire.providers import Completion, Provider, RequestSpec, job_fingerprint
from .._wire.providers._batch import BatchAPI, BatchInfo, BatchLine
from .._wire.transport import Transport
from .record import Answered, record_of
from .tally import Tally

__all__ = ["STEPS", "BatchExecutor", "batch_api"]

log = logging.getLogger("batcher")

T = TypeVar("T")

FIRST_POLL = 2.0
"""Seconds between the first looks at a batch: the gap then doubles up to ``poll_interval``."""

SLACK = 1e-3
"""Seconds early a look or a deadline may come due (a sleep may wake that much early)."""

STEPS = ("recorded", "created", "polled", "collecting")
"""The named steps a test can crash the executor at: a chunk recorded but not created, created
but its id not recorded, a round of polling done, some of a batch's lines journaled."""


def batch_api(provider: Provider) -> BatchAPI:
    """The batch API of ``provider``'s wire format."""
    from .._wire.providers._gemini_batch import GeminiBatch
    from .._wire.providers._openai_batch import OpenAIBatch

    return OpenAIBatch() if provider.name == "openai" else GeminiBatch()


@dataclass(slots=True)
class _Looks:
    """When to read a batch's state (times of ``Clock.monotonic``)."""

    submitted: float
    since: float
    """Where the gaps between looks start doubling from: the submission, or the cancel."""
    next: float
    cancelled: bool = False

    def after_look(self, now: float, longest: float) -> None:
        """The look at ``now`` is done: the next comes its age later, from ``FIRST_POLL`` (or
        ``longest`` if shorter) up to ``longest``."""
        self.next = now + min(longest, max(FIRST_POLL, now - self.since))


class BatchExecutor:
    """Sends the jobs of a run through a provider's batch API; ``run`` returns how many batches
    are still running when it stops (``no_wait``, a signal), 0 once all are collected."""

    def __init__(
        self,
        *,
        api: BatchAPI,
        transport: Transport,
        target: Target,
        source: JobSource,
        store: ResultStore,
        tally: Tally,
        clock: Clock,
        options: BatchOptions,
        max_attempts: int,
        done: IdSet,
        prices: Prices,
        step: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.transport = transport
        self.target = target
        self.provider = target.provider
        self.source = source
        self.store = store
        self.tally = tally
        self.clock = clock
        self.options = options
        self.max_attempts = max_attempts
        self.done = done
        self.prices = prices
        self.log = BatchLog(store.out)
        self.policy = RetryPolicy(max_attempts=max_attempts)
        self.step = step or (lambda name: None)
        self.jobs: dict[str, Job] = {}
        """The jobs of open chunks, by id: what a line's record is made from."""
        self.written: set[str] = set()
        """Jobs journaled by this run."""
        self.retry: list[tuple[Job, int]] = []
        """Jobs whose line failed retryably, with the attempts they have had."""
        self.waiting: list[tuple[int, list[tuple[str, RequestSpec]], int]] = []
        """Chunks not yet recorded nor submitted, for room in the model's batch queue:
        (attempt, requests, their input tokens)."""
        self.estimator = TokenEstimator()
        self.stopping = False
        self._sleep = anyio.CancelScope()
        self.cancelling = options.cancel_batches or options.mode == "online"
        """Cancel the batches of the directory and collect what they answered: asked for, or a
        run online into a directory whose batches are still pending."""
        self.looks: dict[str, _Looks] = {}
        """When to look at each open chunk's batch next, by tag."""

    def stop(self) -> None:
        """Stop waiting: the batches keep running at the provider, and a rerun collects them."""
        self.stopping = True
        self._sleep.cancel()

    def is_done(self, job_id: str) -> bool:
        return job_id in self.written or job_id in self.done

    async def run(self) -> int:
        """Resolve what the last run left, submit the rest, and (unless told not to) wait."""
        fresh = await self._read_jobs()
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
        elif self.options.mode == "auto" and len(fresh) < self.options.batch_min:
            if fresh:
                log.info("%d jobs left, fewer than --batch-min: sending them online", len(fresh))
        else:
            await self._submit_jobs(fresh, attempt=1)
        return await self._wait()

    async def _read_jobs(self) -> list[Job]:
        """One pass over the inputs: the jobs of open chunks (kept by id) and the jobs in none."""
        pending = {i for chunk in self.log.open_chunks() for i in chunk.ids}
        fresh: list[Job] = []
        for n, job in enumerate(self.source):
            if n % 1024 == 0:
                await anyio.lowlevel.checkpoint()
            if self.is_done(job.id):
                self.tally.skipped += 1
            elif job.id in pending:
                self.jobs[job.id] = job
            else:
                fresh.append(job)
        return fresh

    async def _call(self, what: Callable[[], Awaitable[T]]) -> T:
        """A control call (upload, create, get, list, cancel, download), retried as online.

        Its failure stops the run, never a job: a refusal as the provider refusing the run (exit
        4), retries used up as an outage (exit 75). What is recorded stays for a rerun."""
        start = self.clock.monotonic()
        try:
            return await self.policy.call(what, clock=self.clock)
        except FatalProviderError:
            raise
        except RetryableError as e:
            raise Outage(self.target.where, self.clock.monotonic() - start, e.message) from e
        except ProviderError as e:
            raise FatalProviderError(e.message, status=e.status, body=e.body) from e

    async def _resolve(self) -> None:
        """Find the batch of every chunk recorded without one; submit those no batch has."""
        for chunk in self.log.open_chunks():
            if chunk.batch is not None:
                continue
            found = await self._call(partial(self.api.find, self.transport, chunk.tag))
            if found is not None:
                log.info("batch %s of chunk %s found in the provider's list", found.id, chunk.tag)
                self.log.submitted(chunk, found.id, self.clock.time())
            elif self.cancelling:  # never sent: nothing to cancel, its jobs are left as they are
                self.log.closed(chunk, self.clock.time())
            else:
                jobs = [self.jobs[i] for i in chunk.ids if i in self.jobs]
                await self._create(chunk, self._requests(jobs))

    def _requests(self, jobs: Sequence[Job]) -> list[tuple[str, RequestSpec]]:
        """Each job's request; image URLs fetched (Gemini) through the run's proxy and CAs."""
        inline = partial(inline_now, opener=self.target.opener)
        out = []
        for job in jobs:
            assert job.model is not None  # the source resolves every job's model
            out.append((job.id, self.provider.build(job, job.model, inline)))
        return out

    def _tokens(self, job: Job) -> int:
        """A job's input tokens as estimated before sending (what a batch queue counts)."""
        return self.estimator.estimate(features(job.text), cautious=True)

    def _chunks(self, jobs: Sequence[Job]) -> Iterator[tuple[list[tuple[str, RequestSpec]], int]]:
        """Jobs grouped by model, cut at the batch API's requests and bytes per batch and at the
        batch queue's tokens; each chunk with its input tokens."""
        cap = self.options.batch_queue_tokens
        by_model: dict[str, list[Job]] = {}
        for job in jobs:
            assert job.model is not None
            by_model.setdefault(job.model, []).append(job)
        for group in by_model.values():
            chunk: list[tuple[str, RequestSpec]] = []
            size = tokens = 0
            for job, (job_id, spec) in zip(group, self._requests(group), strict=True):
                n, t = self.api.size(job_id, spec), self._tokens(job)
                full = len(chunk) >= self.api.max_requests or size + n > self.api.max_bytes
                if chunk and (full or (cap is not None and tokens + t > cap)):
                    yield chunk, tokens
                    chunk, size, tokens = [], 0, 0
                chunk.append((job_id, spec))
                size, tokens = size + n, tokens + t
            if chunk:
                yield chunk, tokens

    async def _submit_jobs(self, jobs: Sequence[Job], *, attempt: int) -> None:
        for job in jobs:
            self.jobs[job.id] = job
        self.waiting.extend((attempt, requests, t) for requests, t in self._chunks(jobs))
        await self._submit_waiting()

    async def _submit_waiting(self) -> None:
        """Record and submit the waiting chunks that fit in their model's batch queue (all of
        them without ``batch_queue_tokens``; one at least, when its model has none queued)."""
        cap = self.options.batch_queue_tokens
        queued: dict[str, int] = {}
        for chunk in self.log.open_chunks():
            queued[chunk.model] = queued.get(chunk.model, 0) + chunk.tokens
        still = []
        for attempt, requests, tokens in self.waiting:
            model = self.jobs[requests[0][0]].model
            assert model is not None
            if cap is not None and queued.get(model, 0) and queued[model] + tokens > cap:
                still.append((attempt, requests, tokens))
                continue
            queued[model] = queued.get(model, 0) + tokens
            ids = [job_id for job_id, _ in requests]
            chunk = self.log.new_chunk(model, ids, attempt, self.clock.time(), tokens)
            self.step("recorded")
            await self._create(chunk, requests)
        self.waiting = still

    async def _create(self, chunk: Chunk, requests: list[tuple[str, RequestSpec]]) -> None:
        if not requests:  # its jobs left the inputs since: nothing to send
            self.log.closed(chunk, self.clock.time())
            return
        info = await self._call(
            partial(self.api.submit, self.transport, chunk.model, chunk.tag, requests)
        )
        self.step("created")
        self.log.submitted(chunk, info.id, self.clock.time())
        now = self.clock.monotonic()
        self.looks[chunk.tag] = _Looks(submitted=now, since=now, next=now)
        self.tally.requests += len(requests)
        self.tally.in_flight += len(requests)
        log.info(
            "batch %s submitted: %d jobs of %s (%s)", info.id, len(requests), chunk.model, chunk.tag
        )

    async def _cancel_all(self) -> None:
        for chunk in self.log.open_chunks():
            if chunk.batch is not None:
                await self._cancel(chunk, chunk.batch)

    async def _cancel(self, chunk: Chunk, batch: str) -> None:
        """Cancel ``batch``, then look at it again soon: it keeps what it answered, which its next
        look collects. A batch that has finished meanwhile (the provider refuses to cancel it)
        is collected as it is."""
        try:
            await self._call(partial(self.api.cancel, self.transport, batch))
        except FatalProviderError:
            info = await self._call(partial(self.api.get, self.transport, batch))
            if not info.finished:
                raise
        else:
            log.info("batch %s cancelled", batch)
        looks = self._looks(chunk)
        looks.cancelled = True
        looks.since = looks.next = self.clock.monotonic()

    def _looks(self, chunk: Chunk) -> _Looks:
        """When to look at ``chunk``'s batch; one an earlier run submitted is looked at now."""
        looks = self.looks.get(chunk.tag)
        if looks is None:
            now = self.clock.monotonic()
            age = self.clock.time() - chunk.submitted if chunk.submitted is not None else 0.0
            looks = _Looks(submitted=now - age, since=now - age, next=now)
            self.looks[chunk.tag] = looks
        return looks

    def _due(self, chunk: Chunk) -> float:
        """When ``chunk`` must be looked at next (monotonic): its next look, or its deadline."""
        looks = self._looks(chunk)
        if self.options.mode != "auto" or looks.cancelled:
            return looks.next
        return min(looks.next, looks.submitted + self.options.batch_deadline)

    def _late(self, chunk: Chunk) -> bool:
        looks = self._looks(chunk)
        if self.options.mode != "auto" or looks.cancelled:
            return False
        return self.clock.monotonic() + SLACK >= looks.submitted + self.options.batch_deadline

    async def _wait(self) -> int:
        """Look at each batch when it is due until every chunk is collected, or once with
        ``no_wait``, or until stopped."""
        first = True
        while not self.stopping:
            for chunk in self.log.open_chunks():
                if self.stopping:
                    break
                assert chunk.batch is not None
                if not first and self._due(chunk) > self.clock.monotonic() + SLACK:
                    continue
                info = await self._call(partial(self.api.get, self.transport, chunk.batch))
                self._looks(chunk).after_look(self.clock.monotonic(), self.options.poll_interval)
                self._note(chunk, info)
                if info.finished:
                    await self._collect(chunk, info)
                elif self._late(chunk):
                    log.info("batch %s is past --batch-deadline: cancelling it", info.id)
                    await self._cancel(chunk, info.id)
            first = False
            self._show()
            self.step("polled")
            if self.retry and not self.cancelling:
                again, self.retry = self.retry, []
                for attempt in sorted({a for _, a in again}):
                    jobs = [job for job, a in again if a == attempt]
                    await self._submit_jobs(jobs, attempt=attempt + 1)
            if self.waiting and not self.cancelling:
                await self._submit_waiting()
            open_chunks = self.log.open_chunks()
            if not open_chunks or self.options.no_wait:
                break
            due = min((self._due(c) for c in open_chunks), default=math.inf)
            with anyio.CancelScope() as self._sleep:
                if not self.stopping:
                    await self.clock.sleep(max(0.0, due - self.clock.monotonic()))
        for tag in [t for t in self.looks if self.log.chunks[t].closed]:
            del self.looks[tag]
        return len(self.log.open_chunks())

    def _show(self) -> None:
        """Put the open batches, by state, where the progress display reads them."""
        states: dict[str, int] = {}
        for chunk in self.log.open_chunks():
            state = chunk.state or "submitted"
            states[state] = states.get(state, 0) + 1
        self.tally.batches = ", ".join(f"{n} {s}" for s, n in states.items()) or None

    def _note(self, chunk: Chunk, info: BatchInfo) -> None:
        counts = (info.total, info.succeeded, info.failed)
        if (info.state, counts) != (chunk.state, chunk.counts):
            done = f", {info.succeeded or 0} ok / {info.failed or 0} failed of {info.total}"
            log.info("batch %s: %s%s", info.id, info.state, done if info.total else "")
            self.log.state(chunk, info.state, counts, self.clock.time())

    async def _collect(self, chunk: Chunk, info: BatchInfo) -> None:
        """Journal the answered lines of a finished batch, then close its chunk."""
        ids = chunk.ids
        lines = await self._call(partial(self.api.lines, self.transport, info, ids))
        by_id: dict[str, BatchLine] = {}
        for answered in lines:
            by_id.setdefault(answered.job_id, answered)
        unanswered = f"batch {info.id} ended {info.state} without answering this job"
        if info.error:
            unanswered += f" ({info.error})"
        for job_id in ids:
            self.tally.in_flight = max(0, self.tally.in_flight - 1)
            job = self.jobs.get(job_id)
            if job is None or self.is_done(job_id):
                continue  # left the inputs, or answered already (online, or a collect before)
            line = by_id.get(job_id)
            raw = line.raw if line is not None else None
            try:
                if line is None:
                    raise RetryableError(unanswered)
                if isinstance(line.answer, ProviderError):
                    raise line.answer
                completion = self.provider.parse(line.answer)
            except RetryableError as e:
                if self.options.mode == "auto" or self.cancelling:
                    continue  # the online lanes finish it, or a later run sends it again
                if chunk.attempt < self.max_attempts:
                    self.retry.append((job, chunk.attempt))
                    continue
                self._write(self._record(job, chunk, raw, error=e))
            except ProviderError as e:
                self._write(self._record(job, chunk, raw, error=e))
            else:
                self._write(self._record(job, chunk, raw, completion=completion))
        self.log.closed(chunk, self.clock.time())

    def _write(self, record: Record) -> None:
        seq = self.store.append(record)
        self.written.add(record.id)
        self.tally.finished(record)
        if seq is not None:
            self.store.compact(seq)
        self.step("collecting")

    def _record(
        self,
        job: Job,
        chunk: Chunk,
        raw: str | None,
        *,
        completion: Completion | None = None,
        error: ProviderError | None = None,
    ) -> Record:
        """The row of a job answered by a batch line: as online, with the line as response."""
        submitted = chunk.submitted if chunk.submitted is not None else chunk.created
        how = Answered(
            attempts=chunk.attempt,
            latency_ms=max(0.0, self.clock.time() - submitted) * 1000,
            fingerprint=job_fingerprint(self.provider, job, chunk.model),
            finished_at=self.clock.time(),
            via="batch",
        )
        return record_of(
            job,
            chunk.model,
            how,
            self.prices,
            self.target.redact,
            completion=completion,
            error=error,
            raw=raw,
        )
