"""The batch side of a run's endpoints, and how waiting jobs are cut into chunks for them.

Each endpoint of the run's pool (one without ``--pool``) has its provider's batch API and its own
batch queue. ``Chunker`` picks the endpoint a model's next chunk goes to (the highest
``priority`` with room in its queue, then the least queued); ``batch_submit`` cuts the chunk as
the jobs stream past, as long as it fits one batch of that endpoint (its requests and bytes per
batch) and the room left in its queue. An endpoint creates a chunk's batch (``submit``): its input
file uploaded, unless an earlier run recorded one that still lives, and uploaded again if the
provider answers that it no longer has it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .._admission.estimate import TokenEstimator, features
from .._admission.retry import RetryPolicy
from .._core.clock import Clock
from .._core.errors import FatalProviderError, Outage, ProviderError, RetryableError, UsageError
from .._core.media import Inline, inline_now
from .._jobs import Job
from .._rundir.batchlog import BatchLog, Chunk
from .._wire.endpoint import Target
from .._wire.providers import Provider, is_embedder
from .._wire.providers._batch import BatchAPI, BatchInfo
from .._wire.transport import Transport
from .pool import Pool, Route

__all__ = ["FILE_MARGIN", "BatchEndpoint", "Chunker", "batch_api", "file_lives", "file_unknown"]

T = TypeVar("T")

log = logging.getLogger("batcher")

FILE_MARGIN = 3600.0
"""Seconds an uploaded input file must still live to be named by a batch created now: the create
call may be retried a while (a file named as it expires would fail the batch)."""


def file_lives(chunk: Chunk, now: float) -> bool:
    """Whether ``chunk``'s recorded input file can still be named at ``now``: the provider said
    it lives ``FILE_MARGIN`` more at least, or did not say when it goes (its answer to the create
    call tells then, ``file_unknown``)."""
    return chunk.file_expires is None or chunk.file_expires - FILE_MARGIN > now


def file_unknown(error: FatalProviderError) -> bool:
    """Whether the provider refused a create call for naming an input file it does not have
    (expired, or deleted): OpenAI answers 400/404 naming the file, Gemini 400/403/404 ("File ...
    not exist", or no permission to it), as ``execute`` reads an online request's refusal."""
    return error.status in (400, 403, 404) and "file" in error.message.lower()


def batch_api(provider: Provider) -> BatchAPI:
    """The batch API of ``provider``'s wire format (Gemini's takes embeddings by a method of
    their own)."""
    from .._wire.providers._gemini_batch import GeminiBatch
    from .._wire.providers._openai_batch import OpenAIBatch

    if provider.name == "openai":
        return OpenAIBatch()
    return GeminiBatch(embeddings=is_embedder(provider))


@dataclass(eq=False)
class BatchEndpoint:
    """The batch side of one endpoint of the run's pool: its batch API, over its own key."""

    route: Route
    api: BatchAPI
    queue_tokens: int | None
    """Input tokens its batch queue may hold per model (``--batch-queue-tokens``, or the
    endpoint's ``batch_queue_tokens`` in a pool file); None: no bound."""
    policy: RetryPolicy
    clock: Clock

    @property
    def name(self) -> str:
        return self.route.spec.name

    @property
    def target(self) -> Target:
        return self.route.executor.target

    @property
    def transport(self) -> Transport:
        return self.route.executor.transport

    @property
    def provider(self) -> Provider:
        return self.route.provider

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A control call (upload, create, get, list, cancel, download) of the batch API over
        this endpoint's transport, retried as online.

        Its failure stops the run, never a job: a refusal as the provider refusing the run (exit
        4), retries used up as an outage (exit 75). What is recorded stays for a rerun."""
        start = self.clock.monotonic()
        try:
            return await self.policy.call(partial(fn, self.transport, *args), clock=self.clock)
        except FatalProviderError:
            raise
        except RetryableError as e:
            raise Outage(self.target.where, self.clock.monotonic() - start, e.message) from e
        except ProviderError as e:
            raise FatalProviderError(e.message, status=e.status, body=e.body) from e

    async def submit(
        self, batches: BatchLog, chunk: Chunk, path: Path, step: Callable[[str], None]
    ) -> BatchInfo:
        """Create ``chunk``'s batch of its input file at ``path``, uploaded first unless a run
        before this one recorded a file that still lives (``file_lives``); one the provider
        answers it no longer has is uploaded again, once. Each upload is recorded in
        ``batches`` (its id and expiry) before the create call."""
        file, fresh = chunk.file, chunk.file is None or not file_lives(chunk, self.clock.time())
        if fresh:
            if file is not None:
                log.info("input file %s of %s expires: uploading it again", file, chunk.tag)
            file = await self._upload(batches, chunk, path, step)
        theirs = self.route.theirs(chunk.model)
        try:
            return await self.call(self.api.create, theirs, chunk.tag, path, file)
        except FatalProviderError as e:
            if fresh or not file_unknown(e):
                raise
            log.info("input file %s of %s is gone (%s): uploading it again", file, chunk.tag, e)
        file = await self._upload(batches, chunk, path, step)
        return await self.call(self.api.create, theirs, chunk.tag, path, file)

    async def _upload(
        self, batches: BatchLog, chunk: Chunk, path: Path, step: Callable[[str], None]
    ) -> str | None:
        """Upload ``chunk``'s input file and record it; the name a create call takes, or None
        when the batch takes its requests inline."""
        file = await self.call(self.api.upload, chunk.tag, path)
        if file is None:
            return None
        batches.uploaded(chunk, file.name, file.expires, self.clock.time())
        step("uploaded")
        return file.name

    @property
    def inline(self) -> Inline:
        """Fetches an image URL a wire must inline (Gemini's) through the run's proxy and CAs."""
        return partial(inline_now, opener=self.target.opener)


class Chunker:
    """The batch side of a pool's endpoints: chooses the endpoint of each chunk of waiting jobs,
    and cuts it."""

    def __init__(
        self,
        pool: Pool,
        queue_tokens: int | None,
        log: BatchLog,
        policy: RetryPolicy,
        clock: Clock,
    ) -> None:
        self.endpoints = {
            route.spec.name: BatchEndpoint(
                route,
                batch_api(route.provider),
                route.spec.batch_queue_tokens or queue_tokens,
                policy,
                clock,
            )
            for route in pool.routes
        }
        self.log = log
        self.estimator = TokenEstimator()

    def endpoint(self, chunk: Chunk) -> BatchEndpoint:
        """The endpoint whose key submitted ``chunk``'s batch; ``UsageError`` if the run has it
        no more (no other key can collect it)."""
        ep = self.endpoints.get(chunk.endpoint)
        if ep is None:
            raise UsageError(
                f"batch chunk {chunk.tag} in {self.log.path} was sent through endpoint "
                f"{chunk.endpoint!r}, which this run does not have: rerun with the endpoints "
                "that sent it (the same --pool file, or none) to collect it"
            )
        return ep

    def queued(self) -> dict[tuple[str, str], int]:
        """The input tokens of the open chunks, by endpoint and model."""
        queued: dict[tuple[str, str], int] = {}
        for chunk in self.log.open_chunks():
            key = (chunk.endpoint, chunk.model)
            queued[key] = queued.get(key, 0) + chunk.tokens
        return queued

    def tokens(self, job: Job) -> int:
        """A job's input tokens as estimated before sending (what a batch queue counts)."""
        return self.estimator.estimate(features(job.text), cautious=True)

    def choose(
        self, model: str, queued: dict[tuple[str, str], int], full: set[str]
    ) -> BatchEndpoint | None:
        """The endpoint to submit ``model``'s next chunk through, if one has room."""
        best: tuple[int, int] | None = None
        chosen = None
        for ep in self.endpoints.values():
            if not ep.route.serves(model) or ep.name in full:
                continue
            held = queued.get((ep.name, model), 0)
            if ep.queue_tokens is not None and held and held >= ep.queue_tokens:
                continue
            key = (-ep.route.spec.priority, held)
            if best is None or key < best:
                best, chosen = key, ep
        return chosen
