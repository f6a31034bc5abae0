"""``DIR/batches.jsonl``: the chunks a run sent to a batch API and the batches they became.

An append-only log, one JSON event a line, each flushed and fsynced before the step it guards
goes on (batches are few, so the fsyncs cost nothing that matters):

    {"event": "chunk", "tag", "model", "ids", "attempt", "tokens", "endpoint", "at"}   before upload
    {"event": "uploaded", "tag", "file", "expires", "at"}          its input file uploaded
    {"event": "submitted", "tag", "batch", "at"}                   after create answered
    {"event": "state", "tag", "state", "total", "succeeded", "failed", "at"}   when it changes
    {"event": "closed", "tag", "at"}                               its lines are all journaled

A chunk without ``submitted`` may or may not have become a batch (the process died during the
create call): its tag, sent as the batch's metadata or display name, finds it in the provider's
list, and only if none has it is the chunk submitted again, from the file it uploaded if it
recorded one (a file whose upload did not finish is uploaded again; one that has expired or is
about to, by the ``expires`` its provider gave, or that the provider no longer knows, is uploaded
again and recorded anew: Gemini keeps a file 48 hours). A chunk submitted and not
closed is polled and collected by the next run instead of being sent again. A torn last line
(killed mid-write) is dropped: the step it recorded had not gone on.

A chunk's files live in ``DIR/batch-files/`` (``chunk_files``): its input file as uploaded and its
jobs' ids, sources and fingerprints, written before its chunk event and removed once it is
closed, so that neither the jobs nor their requests are held in memory while a batch runs.
"""

from __future__ import annotations

import json
import os
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._core.errors import WriteFailed
from .._core.idset import id_hash

__all__ = ["FILES", "BatchLog", "Chunk"]

NAME = "batches.jsonl"
FILES = "batch-files"
"""The folder of the chunks' input files, job lists and downloaded results."""


@dataclass(slots=True)
class Chunk:
    """Jobs sent together as one batch, and what became of it."""

    tag: str
    model: str
    attempt: int
    created: float
    tokens: int = 0
    """The jobs' input tokens as estimated (what the model's batch queue counts)."""
    batch: str | None = None
    file: str | None = None
    """The provider's id of its uploaded input file, once uploaded."""
    file_expires: float | None = None
    """When the provider drops that file (epoch seconds; None if it did not say)."""
    submitted: float | None = None
    state: str | None = None
    counts: tuple[int | None, int | None, int | None] = (None, None, None)
    """total, succeeded, failed, as the provider last said."""
    closed: bool = False
    endpoint: str = "default"
    """The endpoint of the run's pool whose key submitted it (``default`` without a pool)."""
    hashes: array[int] = field(default_factory=lambda: array("Q"))
    """Its jobs' id hashes (``idset.id_hash``) in request order, while it is open: 8 bytes a
    job where the ids themselves (in its chunk event) take about 70."""


class BatchLog:
    """The chunks of one output directory, read at open and appended to as they move on."""

    def __init__(self, out: Path) -> None:
        self.path = out / NAME
        self.chunks: dict[str, Chunk] = {}
        self.run_id = uuid.uuid4().hex[:12]
        """Part of every tag made here: tags stay unique across directories on one account."""
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    continue
                try:
                    event = json.loads(line)
                    self._apply(event)
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                    continue

    def _apply(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind == "run":
            self.run_id = str(e["id"])
        elif kind == "chunk":
            self.chunks[e["tag"]] = Chunk(
                e["tag"],
                e["model"],
                int(e["attempt"]),
                float(e["at"]),
                int(e.get("tokens") or 0),
                endpoint=str(e.get("endpoint") or "default"),
                hashes=array("Q", (id_hash(str(i)) for i in e["ids"])),
            )
        elif (chunk := self.chunks.get(e["tag"])) is not None:
            if kind == "uploaded":
                chunk.file = str(e["file"])
                expires = e.get("expires")
                chunk.file_expires = float(expires) if isinstance(expires, int | float) else None
            elif kind == "submitted":
                chunk.batch, chunk.submitted = str(e["batch"]), float(e["at"])
            elif kind == "state":
                chunk.state = e["state"]
                chunk.counts = (e.get("total"), e.get("succeeded"), e.get("failed"))
            elif kind == "closed":
                chunk.closed = True
                chunk.hashes = array("Q")  # nothing more to do with its jobs

    def _append(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            fresh = not self.path.exists()
            with self.path.open("ab") as f:
                if fresh:
                    run = {"event": "run", "id": self.run_id}
                    f.write(json.dumps(run).encode() + b"\n")
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise WriteFailed.from_os_error(e, self.path) from e
        self._apply(event)

    def open_chunks(self) -> list[Chunk]:
        """Chunks whose batch has not been collected yet, oldest first."""
        return [c for c in self.chunks.values() if not c.closed]

    def next_tag(self) -> str:
        """The tag of the next chunk recorded: this directory's next one."""
        return f"batcher-{self.run_id}-{len(self.chunks) + 1:05d}"

    def folder(self) -> Path:
        """``DIR/batch-files/``, made if it is not there."""
        folder = self.path.parent / FILES
        folder.mkdir(exist_ok=True)
        return folder

    def new_chunk(
        self,
        model: str,
        ids: list[str],
        attempt: int,
        now: float,
        tokens: int = 0,
        *,
        endpoint: str = "default",
    ) -> Chunk:
        """Record a chunk before its upload and create calls; its tag is ``next_tag()``."""
        tag = self.next_tag()
        self._append(
            {
                "event": "chunk",
                "tag": tag,
                "model": model,
                "ids": ids,
                "attempt": attempt,
                "tokens": tokens,
                "endpoint": endpoint,
                "at": now,
            }
        )
        return self.chunks[tag]

    def uploaded(self, chunk: Chunk, file: str, expires: float | None, now: float) -> None:
        """Record ``chunk``'s input file uploaded as ``file``, which lives until ``expires``."""
        event = {"event": "uploaded", "tag": chunk.tag, "file": file, "expires": expires, "at": now}
        self._append(event)

    def submitted(self, chunk: Chunk, batch: str, now: float) -> None:
        self._append({"event": "submitted", "tag": chunk.tag, "batch": batch, "at": now})

    def state(
        self,
        chunk: Chunk,
        state: str,
        counts: tuple[int | None, int | None, int | None],
        now: float,
    ) -> None:
        """Record what the provider says of the batch, when it says something new."""
        if (state, counts) == (chunk.state, chunk.counts):
            return
        total, succeeded, failed = counts
        self._append(
            {
                "event": "state",
                "tag": chunk.tag,
                "state": state,
                "total": total,
                "succeeded": succeeded,
                "failed": failed,
                "at": now,
            }
        )

    def closed(self, chunk: Chunk, now: float) -> None:
        self._append({"event": "closed", "tag": chunk.tag, "at": now})
