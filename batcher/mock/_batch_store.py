"""What the mock's two batch APIs share: their batches and files, and how a batch moves on.

A batch moves on when it is looked at, by the mock's clock: validating (OpenAI) or pending at
creation, running until ``batch_delay`` seconds have passed, then every line is answered at once
as the online route would answer it (faults by prompt marker included, rate limits not: a batch
does not count against them) and the batch is completed. A line whose prompt holds
``[[batch:expire]]`` is not run: the OpenAI batch ends ``expired`` with that line's
``batch_expired`` error, the Gemini batch ends ``BATCH_STATE_EXPIRED`` without responses. A
cancelled batch that had not run ends with no lines. With ``gradual``, line k of n is answered
once k/n of ``batch_delay`` has passed, and a batch cancelled meanwhile ends with the lines
answered by then (its output file, its Gemini responses), as OpenAI documents for a cancelled
batch's partial results. ``state.batch_creates`` lists the tags of
every batch created, for tests that check none was created twice.

A video uploaded for requests to name stays ``PROCESSING`` for ``file_processing`` seconds, as
Gemini's does while it extracts the frames (https://ai.google.dev/api/files#State), then is
``ACTIVE``, or ``FAILED`` if its bytes hold ``[[file:fail]]``; a request naming it before it is
``ACTIVE`` is refused.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._wire import Request, Response

__all__ = ["EXPIRE", "FILE_FAIL", "Batch", "BatchAPI", "BatchStore", "LineAnswer"]

LineAnswer = Callable[[Request], Awaitable[Response]]

EXPIRE = "[[batch:expire]]"
FILE_FAIL = b"[[file:fail]]"


@dataclass
class Batch:
    id: str
    wire: str  # "openai" | "gemini"
    tag: str
    model: str
    created: float
    lines: list[tuple[str, dict[str, Any]]]  # (custom_id or key, request body)
    headers: dict[str, str]
    input_file_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    state: str = "validating"
    cancel: bool = False
    ended: float | None = None
    answers: list[tuple[str, int, Any]] = field(default_factory=list)  # key, status, body
    expired: list[str] = field(default_factory=list)
    ran: int = 0  # lines run so far (answered, or found expired)
    output_file_id: str | None = None
    error_file_id: str | None = None
    endpoint: str = "/v1/chat/completions"
    """OpenAI's: the path every line goes to (chat completions, image generations...);
    Gemini's: the method that made it (``batchGenerateContent``, ``asyncBatchEmbedContent``)."""


class BatchStore:
    """The batches and files of both APIs, by id (each API numbers its new ones by the count of
    both's), and what runs them: ``answer`` runs one line through the pipeline, ``clock`` says
    the time, ``delay`` and ``gradual`` say when lines are answered, ``creates`` hears of every
    batch created."""

    def __init__(
        self,
        answer: LineAnswer,
        clock: Callable[[], float],
        *,
        delay: float = 0.0,
        gradual: bool = False,
        creates: Callable[[str], None] = lambda tag: None,
        file_ttl: float = 48 * 3600.0,
        file_processing: float = 0.0,
    ) -> None:
        self.answer = answer
        self.clock = clock
        self.delay = delay
        self.gradual = gradual
        self.creates = creates
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}
        self.file_ttl = file_ttl
        self.expires: dict[str, float] = {}  # file id -> when it expires (the mock's clock)
        self.mimes: dict[str, str] = {}  # file id -> MIME type, of files a request may name
        self.uploaded = 0  # bytes of files uploaded for requests to name (not batch inputs)
        self.file_processing = file_processing
        self.ready: dict[str, float] = {}  # file id -> when its processing ends (a video's)

    def keep(self, file_id: str, data: bytes, mime: str | None = None) -> float:
        """Keep an uploaded file, which expires ``file_ttl`` from now: when it does."""
        self.files[file_id] = data
        expires = self.clock() + self.file_ttl
        self.expires[file_id] = expires
        if mime is not None:
            self.mimes[file_id] = mime
            self.uploaded += len(data)
            if mime.startswith("video/"):
                self.ready[file_id] = self.clock() + self.file_processing
        return expires

    def state(self, file_id: str) -> str:
        """The Files API's state of a file: ``PROCESSING``, ``ACTIVE`` or ``FAILED``."""
        if self.clock() < self.ready.get(file_id, 0.0):
            return "PROCESSING"
        if file_id in self.ready and FILE_FAIL in self.files.get(file_id, b""):
            return "FAILED"
        return "ACTIVE"

    def input(self, file_id: str) -> bytes | None:
        """The bytes of a batch input file a create call names, None if there is none or it
        expired."""
        data = self.files.get(file_id)
        if data is None or self.clock() >= self.expires.get(file_id, 0.0):
            return None
        return data

    def named(self, file_id: str) -> tuple[str, bytes] | None:
        """(MIME type, bytes) of a file a request names, None if there is none or it expired."""
        data, mime = self.files.get(file_id), self.mimes.get(file_id)
        if data is None or mime is None or self.clock() >= self.expires.get(file_id, 0.0):
            return None
        if self.state(file_id) != "ACTIVE":
            return None
        return mime, data

    def add(self, batch: Batch) -> None:
        """Keep a batch just created."""
        self.batches[batch.id] = batch
        self.creates(batch.tag)


class BatchAPI(ABC):
    """One provider's batch API over the shared store: its routes (``handle``), its batches'
    states, and where the lines a batch answered end up (``keep_answers``)."""

    wire: ClassVar[str]
    running: ClassVar[str]
    completed: ClassVar[str]
    expired: ClassVar[str]
    cancelled: ClassVar[str]
    expires_whole: ClassVar[bool] = False
    """A line that expires expires its whole batch, none of it run (Gemini's)."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store

    @property
    def final(self) -> tuple[str, str, str]:
        """The states a batch ends in."""
        return (self.completed, self.expired, self.cancelled)

    @abstractmethod
    async def handle(self, request: Request) -> Response | None:
        """The answer to one of this API's routes, or None if ``request`` is for another."""

    @abstractmethod
    def line_path(self, batch: Batch) -> str:
        """The online route that answers a line of ``batch``."""

    def line_body(self, batch: Batch, body: dict[str, Any]) -> dict[str, Any]:
        """A line's request as the online route that answers it takes it."""
        return body

    def line_answer(self, batch: Batch, status: int, answer: Any) -> Any:
        """The online route's answer to a line as the batch gives it back."""
        return answer

    @abstractmethod
    def keep_answers(self, batch: Batch) -> None:
        """``batch`` ended: put the lines it answered where this API gives them."""

    def mine(self) -> list[Batch]:
        """This API's batches, oldest first."""
        return [b for b in self.store.batches.values() if b.wire == self.wire]

    def find(self, batch_id: str) -> Batch | None:
        """This API's batch ``batch_id``, or None."""
        batch = self.store.batches.get(batch_id)
        return batch if batch is not None and batch.wire == self.wire else None

    async def advance(self, batch: Batch) -> None:
        """Move ``batch`` on to where the clock says it is."""
        if batch.state in self.final:
            return
        store = self.store
        now = store.clock()
        expire = [key for key, body in batch.lines if EXPIRE in json.dumps(body)]
        running = now < batch.created + store.delay
        whole = self.expires_whole and bool(expire)
        if store.gradual and not whole:
            due = len(batch.lines)
            if running:
                due = int(len(batch.lines) * (now - batch.created) / store.delay)
            await self.run(batch, due, expire)
        if batch.cancel:
            batch.state = self.cancelled
            batch.ended = now
            if batch.answers:
                self.keep_answers(batch)
            return
        if running:
            batch.state = self.running
            return
        if whole:
            batch.state, batch.ended = self.expired, now
            return
        await self.run(batch, len(batch.lines), expire)
        batch.ended = now
        self.keep_answers(batch)
        batch.state = self.expired if expire else self.completed

    async def run(self, batch: Batch, upto: int, expire: list[str]) -> None:
        """Answer the lines of ``batch`` not yet run, up to the ``upto``-th."""
        path = self.line_path(batch)
        while batch.ran < min(upto, len(batch.lines)):
            key, body = batch.lines[batch.ran]
            batch.ran += 1
            if key in expire:
                batch.expired.append(key)
                continue
            raw = json.dumps(self.line_body(batch, body)).encode()
            response = await self.store.answer(Request("POST", path, batch.headers, {}, raw))
            try:
                answer = json.loads(response.body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                answer = {"error": {"message": "The server had an error processing this line."}}
                response = Response(500)
            answer = self.line_answer(batch, response.status, answer)
            batch.answers.append((key, response.status, answer))
