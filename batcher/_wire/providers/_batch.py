"""What every batch API provides: upload a chunk's input file (written to disk as it is cut),
create a batch of it, look at it, find it by its tag, cancel it, and read its lines back (from a
file downloaded to disk, a line at a time) as the answers the online parser reads.

A batch line's request is the online request body (``Provider.build``), and its answer is handed
to the same ``Provider.parse`` as an online answer, so a job answered by a batch gets the record
it would have got online.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..._core.completion import Completion
from ..._core.errors import ProviderError, RetryableError
from ..transport import Reply, Transport
from ._base import Provider, RequestSpec, json_body

if TYPE_CHECKING:
    from ._files import Uploaded

__all__ = ["BatchAPI", "BatchInfo", "BatchLine", "check", "file_lines"]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A batch as the provider describes it now."""

    id: str
    state: str
    """The provider's own word for its state (``in_progress``, ``BATCH_STATE_RUNNING``...)."""
    finished: bool
    """Whether the batch has reached a final state (no line will be answered any more)."""
    tag: str | None = None
    """The tag batcher gave it when it was created (its metadata or display name)."""
    total: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    error: str | None = None
    """Why the batch as a whole failed, when it did."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One answered line: whose job, its answer as an HTTP reply (for ``Provider.parse``) or the
    error that stood in for one, and the line as the provider wrote it. A line that answered
    many jobs (an embeddings pack) is handed on as one ``BatchLine`` a job, its answer that
    job's part already parsed (a ``Completion``) and ``estimate`` its input tokens estimated
    (what its row costs where the provider reports none, as online)."""

    job_id: str
    answer: Reply | ProviderError | Completion
    raw: str
    estimate: int | None = None


class BatchAPI(Protocol):
    """One provider's batch API; stateless, like the online wire formats."""

    max_requests: int
    """Requests in one batch at most."""
    max_bytes: int
    """Bytes of requests in one batch at most (an input file, or an inline request)."""
    packs: bool
    """Whether an embeddings line may carry many jobs' inputs (OpenAI's), or one (Gemini's)."""

    def line(self, job_id: str, spec: RequestSpec) -> bytes:
        """A request as a line of the input file (without its newline)."""
        ...

    def size(self, line: bytes) -> int:
        """Bytes a request takes in a batch, from its input-file ``line``."""
        ...

    def inputs(self, line: bytes) -> tuple[str, list[str]]:
        """An embeddings input ``line``'s key (its answer's) and the texts it embeds, in
        order."""
        ...

    async def upload(self, transport: Transport, tag: str, path: Path) -> Uploaded | None:
        """Upload the input file at ``path`` (its lines made by ``line``), read from disk as it
        is sent: the file (its ``name`` is what ``create`` takes, with when it expires), or None
        when the batch is created with its requests inline."""
        ...

    async def create(
        self, transport: Transport, model: str, tag: str, path: Path, file: str | None
    ) -> BatchInfo:
        """Create a batch tagged ``tag`` of the uploaded ``file``, or (None) of the lines of
        ``path`` inline."""
        ...

    async def get(self, transport: Transport, batch_id: str) -> BatchInfo: ...

    async def find(self, transport: Transport, tag: str) -> BatchInfo | None:
        """The batch tagged ``tag``, if the provider lists one (after a crash lost its id)."""
        ...

    async def cancel(self, transport: Transport, batch_id: str) -> None: ...

    async def lines(
        self, transport: Transport, info: BatchInfo, ids: Sequence[str], folder: Path
    ) -> Iterator[BatchLine]:
        """The answered lines of a finished batch, its results files downloaded into ``folder``
        and read a line at a time; ``ids`` are its jobs in request order."""
        ...


def file_lines(path: Path) -> Iterator[str]:
    """The lines of a downloaded results file, one at a time (a bad UTF-8 byte replaced)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="\n") as f:
        for raw in f:
            raw = raw.rstrip("\r\n")
            if raw:
                yield raw


def check(provider: Provider, reply: Reply, what: str) -> Any:
    """The JSON body of a 2xx ``reply``; any other answer raised as the provider's error."""
    if 200 <= reply.status_code < 300:
        return json_body(reply)
    try:
        provider.parse(reply)  # a non-200 answer: parse raises it, classified as online
    except ProviderError as e:
        e.message = f"{what}: {e.message}"
        e.args = (e.message,)
        raise
    raise RetryableError(f"{what}: HTTP {reply.status_code}", status=reply.status_code)
