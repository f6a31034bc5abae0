"""Cutting a run's jobs into batches as the inputs stream past, never holding them all.

A pass reads the inputs once: each job not finished and in no chunk yet (or one whose line failed
retryably, for its next attempt) goes into the open cut of its model and attempt (``Cut``: its
input file and entries written to disk at once), through the endpoint ``Chunker.choose`` picks.
A cut full for its endpoint's batch (requests, bytes) or queue (``batch_queue_tokens``) is sent
and the next begins; a model whose every endpoint's queue is full is passed over for the rest of
the pass, and its jobs wait for another pass once a batch has been collected. So memory holds a
cut's ids, not its jobs nor its requests, whatever the number of jobs.

Embeddings on a batch API whose lines take many inputs (OpenAI's) are packed into lines as the
cut is written (``batch_embed.LinePacker``); a job whose packed line was refused goes alone.

In ``auto``, the first ``batch_min`` jobs are held back until there are that many: fewer go
online instead, as before.

A job's files that go through the Files API (``--upload``) go up before its line is written, which
names them by id (``Uploads.prepare``); a job whose file the provider refuses gets its error row
at once and goes in no batch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio.lowlevel

from .._config.cost_options import BatchOptions
from .._core.clock import Clock
from .._core.errors import PermanentJobError, ProviderError
from .._core.idset import IdBag, id_hash
from .._jobs import Job, JobSource
from .._rundir.batchlog import BatchLog, Chunk
from .._rundir.chunk_files import Cut, Entry, chunk_folder, has_entries, tidy_files
from .._rundir.store import ResultStore
from .._wire.providers import Provider, RequestSpec, fingerprint, is_embedder, job_fingerprint
from .batch_chunks import BatchEndpoint, Chunker
from .batch_embed import LinePacker
from .budget import Reservation
from .consume import Consumer
from .outcome import Done
from .record import Answered, record_of

__all__ = ["Submitter"]

log = logging.getLogger("batcher")


class _Open:
    """A model's cut being written, for one attempt, and the endpoint it goes to."""

    def __init__(
        self,
        ep: BatchEndpoint,
        cut: Cut,
        room: int | None,
        first: bool,
        packer: LinePacker | None = None,
    ) -> None:
        self.ep = ep
        self.cut = cut
        self.packer = packer
        """Packs embeddings many to a line (None: a line a job)."""
        self.room = room
        """Input tokens left in the endpoint's queue for the model (None: no bound)."""
        self.first = first
        """The queue holds none of the model's: one job goes in whatever its tokens."""

    def fits(self, size: int, tokens: int) -> bool:
        cut, api = self.cut, self.ep.api
        if cut.ids and (len(cut.ids) >= api.max_requests or cut.size + size > api.max_bytes):
            return False
        if self.room is not None and cut.tokens + tokens > self.room:
            return not cut.ids and self.first
        return True


class Submitter:
    """Cuts jobs into chunks, records them and hands each to ``create``."""

    def __init__(
        self,
        *,
        chunker: Chunker,
        log_: BatchLog,
        source: JobSource,
        fingerprint_provider: Provider,
        consumer: Consumer[ResultStore],
        clock: Clock,
        options: BatchOptions,
        is_done: Callable[[str], bool],
        create: Callable[[Chunk], Awaitable[None]],
        reserved: dict[str, Reservation],
        step: Callable[[str], None],
    ) -> None:
        self.chunker = chunker
        self.log = log_
        self.source = source
        self.fp_provider = fingerprint_provider
        self.consumer = consumer
        self.clock = clock
        self.options = options
        self.is_done = is_done
        self.create = create
        self.reserved = reserved
        self.step = step
        self.sent = IdBag()
        """Jobs in a chunk: the open chunks' at the start, and every chunk recorded since."""
        for chunk in log_.open_chunks():
            for key in chunk.hashes:
                self.sent.add_hash(key)
        self.retry: dict[str, int] = {}
        """Jobs whose line failed retryably, with the attempts they have had: the next pass
        puts them in a later batch."""
        self.alone: set[str] = set()
        """Jobs of an embeddings line refused for what it held (``batch_embed.Resend``): the
        next pass puts each alone on a line."""
        self.deferred = False
        """The last pass left jobs for want of room in a batch queue."""
        self.freed = False
        """A batch was collected since the last pass (room may have come back)."""
        self.budget_stopped = False
        """A chunk would have taken the spend over ``--budget``: nothing more is submitted."""
        self._cuts: dict[tuple[str, int], _Open] = {}
        """The open cuts of this pass, by model and attempt."""
        self._skip: dict[str, set[str]] = {}
        """The endpoints found without room for a model in this pass."""
        self._queued: dict[tuple[str, str], int] = {}
        """Input tokens in the open chunks, by endpoint and model."""
        self._left = 0

    def due(self) -> bool:
        """Whether another pass has something to do: retries, or jobs that waited for room."""
        if self.budget_stopped:
            return False
        return bool(self.retry) or (self.deferred and self.freed)

    async def run_pass(self, *, first: bool) -> None:
        """One pass over the inputs, submitting every chunk it cuts (``first``: the run's, which
        counts the finished jobs it skips)."""
        retry, self.retry = self.retry, {}
        self.deferred = self.freed = False
        self._skip, self._queued, self._left = {}, self.chunker.queued(), 0
        held: list[tuple[Job, int]] | None = None
        if first and self.options.mode == "auto":
            held = []
        for n, job in enumerate(self.source):
            if n % 1024 == 0:
                await anyio.lowlevel.checkpoint()
            if self.is_done(job.id):
                self.consumer.tally.skipped += first
                continue
            had = retry.pop(job.id, None)
            if had is None and job.id in self.sent:
                continue
            attempt = 1 if had is None else had + 1
            if held is not None:
                held.append((job, attempt))
                if len(held) < self.options.batch_min:
                    continue
                for job_, attempt_ in held:
                    await self._add(job_, attempt_)
                held = None
                continue
            await self._add(job, attempt)
        if held:
            log.info("%d jobs left, fewer than --batch-min: sending them online", len(held))
            return
        if held is not None:  # none at all
            return
        for (model, attempt), cut in list(self._cuts.items()):
            del self._cuts[(model, attempt)]
            if cut.cut.ids and not self.budget_stopped:
                await self._send(cut, model, attempt)
            else:
                cut.cut.discard()
        if self._left:
            log.info("%d jobs not submitted: --budget would be crossed", self._left)

    async def _add(self, job: Job, attempt: int) -> None:
        """Put ``job`` in its model's open cut (sending the cut first if it is full), or leave
        it for a later pass if no endpoint's queue has room for it."""
        assert job.model is not None  # the source resolves every job's model
        model = job.model
        if self.budget_stopped:
            self._left += 1
            return
        key = (model, attempt)
        tokens = self.chunker.tokens(job)
        while True:
            cut = self._cuts.get(key)
            if cut is None:
                cut = self._open(model)
                if cut is None:
                    self._defer(job, attempt)
                    return
                self._cuts[key] = cut
            sent = job
            uploads = cut.ep.route.executor.uploads
            if uploads is not None and job.media:  # its files named by id, uploaded first
                try:
                    sent = await uploads.prepare(job, batch=True)
                except ProviderError as e:
                    self._refused(cut.ep, job, model, e)
                    return
            theirs = cut.ep.route.theirs(model)
            spec = cut.ep.provider.build(sent, theirs, cut.ep.inline)
            line = cut.ep.api.line(job.id, spec)
            size = cut.ep.api.size(line)
            if cut.fits(size, tokens):
                break
            del self._cuts[key]
            if not cut.cut.ids:  # no room in this endpoint's queue: another's, if any has some
                cut.cut.discard()
                self._skip.setdefault(model, set()).add(cut.ep.name)
                continue
            await self._send(cut, model, attempt)
            if self.budget_stopped:
                self._left += 1
                return
        entry = Entry(
            job.id, job.source, self._fingerprint(job, model, cut.ep, spec, theirs), job.max_tokens
        )
        if cut.packer is not None:
            alone = job.id in self.alone
            cut.packer.add(cut.cut, job, entry, line, size, tokens, alone=alone)
        else:
            cut.cut.add(entry, line, size, tokens)
        self.alone.discard(job.id)

    def _refused(self, ep: BatchEndpoint, job: Job, model: str, error: ProviderError) -> None:
        """A file of ``job`` could not go up (the provider refused it): its row says so, and
        it goes in no batch."""
        how = Answered(
            attempts=0,
            latency_ms=0.0,
            fingerprint=job_fingerprint(self.fp_provider, job, model),
            finished_at=self.clock.time(),
            via="batch",
            endpoint=ep.name,
        )
        why = PermanentJobError(f"cannot upload its files: {error.message}", status=error.status)
        prices = ep.route.executor.prices
        self.consumer.take(Done(record_of(job, model, how, prices, ep.target.redact, error=why)))
        if self.consumer.write_failed is not None:
            raise self.consumer.write_failed
        self.sent.add(job.id)  # answered: no later pass puts it in a batch

    def _fingerprint(
        self, job: Job, model: str, ep: BatchEndpoint, spec: RequestSpec, theirs: str
    ) -> str:
        """``job``'s fingerprint (``job_fingerprint``), from the request just built for its
        line when that is the one the fingerprint hashes (the run's first provider, the model
        under its own name, no file counted by its digest): a request built once, not twice."""
        if ep.provider is self.fp_provider and theirs == model and not job.media:
            return fingerprint(self.fp_provider, model, spec)
        return job_fingerprint(self.fp_provider, job, model)

    async def rebuild(self) -> None:
        """Write the files of open chunks an earlier version recorded without them, from one
        pass over the inputs (a job that has left them since is left out); remove what no open
        chunk needs (a closed chunk's, a cut a crash left unrecorded)."""
        tidy_files(self.files, {c.tag for c in self.log.open_chunks()})
        missing = {
            c.tag: c
            for c in self.log.open_chunks()
            if not has_entries(chunk_folder(self.files, c.tag))
        }
        if not missing:
            return
        wanted = {key: tag for tag, c in missing.items() for key in c.hashes}
        found: dict[str, dict[int, Job]] = {tag: {} for tag in missing}
        for n, job in enumerate(self.source):
            if n % 1024 == 0:
                await anyio.lowlevel.checkpoint()
            key = id_hash(job.id)
            tag = wanted.get(key)
            if tag is not None:
                found[tag][key] = job
        for tag, chunk in missing.items():
            self.write(chunk, [found[tag][key] for key in chunk.hashes if key in found[tag]])

    def write(self, chunk: Chunk, jobs: list[Job]) -> None:
        """Write the files of ``chunk``, recorded by an earlier version without them, from its
        ``jobs`` (through the endpoint that sent it)."""
        ep = self.chunker.endpoint(chunk)
        cut = Cut(self.files)
        for job in jobs:
            spec = ep.provider.build(job, ep.route.theirs(chunk.model), ep.inline)
            fingerprint = job_fingerprint(self.fp_provider, job, chunk.model)
            entry = Entry(job.id, job.source, fingerprint, job.max_tokens)
            line = ep.api.line(job.id, spec)
            cut.add(entry, line, ep.api.size(line), 0)
        cut.place(chunk_folder(self.files, chunk.tag))

    def _open(self, model: str) -> _Open | None:
        """A new cut of ``model`` for the endpoint to send it through, if one has room."""
        skip = self._skip.setdefault(model, set())
        ep = self.chunker.choose(model, self._queued, skip)
        if ep is None:
            return None
        held = self._queued.get((ep.name, model), 0)
        room = None if ep.queue_tokens is None else ep.queue_tokens - held
        packer = None
        if ep.api.packs and is_embedder(ep.provider):
            packer = LinePacker(ep, model, self.chunker.tokens)
        return _Open(ep, Cut(self.files), room, first=not held, packer=packer)

    def _defer(self, job: Job, attempt: int) -> None:
        """No room for ``job`` in any queue: a pass after the next collect takes it."""
        self.deferred = True
        if attempt > 1:
            self.retry[job.id] = attempt - 1

    @property
    def files(self) -> Path:
        return self.log.folder()

    async def _send(self, cut: _Open, model: str, attempt: int) -> None:
        """Record a full cut as a chunk (its worst case set aside first under ``--budget``)
        and create its batch."""
        files = cut.cut
        if cut.packer is not None:
            cut.packer.flush(files)
        reservation = None
        if self.consumer.budget is not None:
            what = f"batch ({len(files.ids)} jobs of {model})"
            reservation = self.consumer.reserve(
                model, files.tokens, files.max_tokens, what, batch=True
            )
            if reservation is None:
                self.budget_stopped = True
                self._left += len(files.ids)
                files.discard()
                return
        files.place(chunk_folder(self.files, self.log.next_tag()))
        key = (cut.ep.name, model)
        self._queued[key] = self._queued.get(key, 0) + files.tokens
        chunk = self.log.new_chunk(
            model, files.ids, attempt, self.clock.time(), files.tokens, endpoint=cut.ep.name
        )
        for job_id in files.ids:
            self.sent.add(job_id)
        if reservation is not None:
            self.reserved[chunk.tag] = reservation
        self.step("recorded")
        await self.create(chunk)
