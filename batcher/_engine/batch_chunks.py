"""The batch side of a run's endpoints, and how waiting jobs are cut into chunks for them.

Each endpoint of the run's pool (one without ``--pool``) has its provider's batch API and its own
batch queue. ``Chunker`` picks the endpoint a model's next chunk goes to (the highest
``priority`` with room in its queue, then the least queued) and cuts the longest head of the
waiting jobs that fits one batch of that endpoint (its requests and bytes per batch) and the room
left in its queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from .._admission.estimate import TokenEstimator, features
from .._core.media import Inline, inline_now
from .._jobs import Job
from .._wire.endpoint import Target
from .._wire.providers import Provider, RequestSpec
from .._wire.providers._batch import BatchAPI
from .._wire.transport import Transport
from .pool import Route

__all__ = ["BatchEndpoint", "Chunker", "batch_api"]


def batch_api(provider: Provider) -> BatchAPI:
    """The batch API of ``provider``'s wire format."""
    from .._wire.providers._gemini_batch import GeminiBatch
    from .._wire.providers._openai_batch import OpenAIBatch

    return OpenAIBatch() if provider.name == "openai" else GeminiBatch()


@dataclass(eq=False)
class BatchEndpoint:
    """The batch side of one endpoint of the run's pool: its batch API, over its own key."""

    route: Route
    api: BatchAPI
    queue_tokens: int | None
    """Input tokens its batch queue may hold per model (``--batch-queue-tokens``, or the
    endpoint's ``batch_queue_tokens`` in a pool file); None: no bound."""

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

    @property
    def inline(self) -> Inline:
        """Fetches an image URL a wire must inline (Gemini's) through the run's proxy and CAs."""
        return partial(inline_now, opener=self.target.opener)


class Chunker:
    """Chooses endpoints for chunks of waiting jobs and cuts them."""

    def __init__(self, endpoints: dict[str, BatchEndpoint]) -> None:
        self.endpoints = endpoints
        self.estimator = TokenEstimator()

    def requests(
        self, ep: BatchEndpoint, model: str, jobs: Sequence[Job]
    ) -> list[tuple[str, RequestSpec]]:
        """The requests of ``jobs`` of ``model`` as ``ep`` sends them (its name for the model)."""
        theirs, inline = ep.route.theirs(model), ep.inline
        return [(job.id, ep.provider.build(job, theirs, inline)) for job in jobs]

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

    def cut(
        self, ep: BatchEndpoint, model: str, jobs: Sequence[Job], room: int | None, *, first: bool
    ) -> tuple[list[tuple[str, RequestSpec]], int]:
        """The longest head of ``jobs`` that fits one batch of ``ep`` (its requests and bytes per
        batch) and ``room`` tokens of its queue (``first``: one job at least, whatever its
        tokens), with its input tokens."""
        chunk: list[tuple[str, RequestSpec]] = []
        size = tokens = 0
        theirs = ep.route.theirs(model)
        for job in jobs:
            spec = ep.provider.build(job, theirs, ep.inline)
            n, t = ep.api.size(job.id, spec), self.tokens(job)
            fits = len(chunk) < ep.api.max_requests and size + n <= ep.api.max_bytes
            if chunk and not fits:
                break
            if room is not None and tokens + t > room and (chunk or not first):
                break
            chunk.append((job.id, spec))
            size, tokens = size + n, tokens + t
        return chunk, tokens
