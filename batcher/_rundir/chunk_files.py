"""A batch chunk's files on disk, ``DIR/batch-files/TAG/``: what lets a million-job batch run
without holding its jobs or its requests in memory.

``input.jsonl`` is the batch's input file as the provider takes it (the lines of its wire's
``BatchAPI.line``), uploaded from disk as it is read; ``jobs.jsonl`` holds, in request order, what
each line's row needs besides the answer (``Entry``: id, source, fingerprint, ``max_tokens``; a
line that packs many embedding inputs stands for as many entries, in its inputs' order); the
results files a finished batch answers are downloaded beside them. A chunk is written as it is cut
into a folder of its own (``Cut``), made durable and moved to its tag's name before its chunk
event is recorded in ``DIR/batches.jsonl``, so a recorded chunk always has its files; they are
removed once it is closed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core.codec import dumps, loads

__all__ = [
    "Cut",
    "Entry",
    "chunk_folder",
    "count_entries",
    "has_entries",
    "input_file",
    "read_entries",
    "remove_chunk",
    "tidy_files",
]

INPUT = "input.jsonl"
JOBS = "jobs.jsonl"


@dataclass(frozen=True, slots=True)
class Entry:
    """What a batch line's row needs of its job besides the answer."""

    id: str
    source: str
    fingerprint: str
    max_tokens: int | None


def chunk_folder(files: Path, tag: str) -> Path:
    """The folder of chunk ``tag``'s files under ``files`` (``DIR/batch-files``)."""
    return files / tag


def input_file(folder: Path) -> Path:
    """A chunk's input file, as uploaded."""
    return folder / INPUT


def read_entries(folder: Path) -> list[Entry] | None:
    """A chunk's entries in request order, or None if it has no ``jobs.jsonl`` (a chunk an
    earlier version recorded: its jobs are read from the inputs instead)."""
    try:
        f = (folder / JOBS).open("rb")
    except FileNotFoundError:
        return None
    with f:
        # not ``exact``: strings and a small count (``max_tokens``), no integer of 20 digits
        return [Entry(*loads(line, exact=False)) for line in f if line.endswith(b"\n")]


def has_entries(folder: Path) -> bool:
    """Whether a chunk has its ``jobs.jsonl`` (an earlier version recorded chunks without)."""
    return (folder / JOBS).is_file()


def count_entries(folder: Path) -> int:
    """How many jobs a chunk holds (its entries' lines, counted without parsing them)."""
    count = 0
    try:
        with (folder / JOBS).open("rb") as f:
            while piece := f.read(1024 * 1024):
                count += piece.count(b"\n")
    except FileNotFoundError:
        return 0
    return count


def remove_chunk(folder: Path) -> None:
    """Remove a closed chunk's files (its input and results files)."""
    shutil.rmtree(folder, ignore_errors=True)


def tidy_files(files: Path, keep: set[str]) -> None:
    """Remove from ``files`` every folder but those of the chunks ``keep`` (the open ones): a
    closed chunk's that a crash left before removing it, a cut never recorded."""
    if not files.is_dir():
        return
    for folder in files.iterdir():
        if folder.name not in keep:
            remove_chunk(folder)


class Cut:
    """A chunk being cut: its input file and entries written as its jobs come, and the sums
    that say whether one more fits (requests, bytes, input tokens)."""

    def __init__(self, files: Path) -> None:
        files.mkdir(exist_ok=True)
        self.folder = files / f".cut-{uuid.uuid4().hex[:12]}"
        self.folder.mkdir()
        self._input = (self.folder / INPUT).open("wb")
        self._jobs = (self.folder / JOBS).open("wb")
        self.ids: list[str] = []
        self.max_tokens: list[int | None] = []
        self.size = 0
        """Bytes of its requests in a batch (``BatchAPI.size``)."""
        self.tokens = 0

    def add(self, entry: Entry, line: bytes | None, size: int, tokens: int) -> None:
        """Add a job: its entry, and its ``line`` (None: it goes in a line that holds many
        jobs, written by ``line`` once complete, as an embeddings pack)."""
        if line is not None:
            self._input.write(line + b"\n")
        row: list[Any] = [entry.id, entry.source, entry.fingerprint, entry.max_tokens]
        self._jobs.write(dumps(row) + b"\n")
        self.ids.append(entry.id)
        self.max_tokens.append(entry.max_tokens)
        self.size += size
        self.tokens += tokens

    def line(self, line: bytes) -> None:
        """Write a line holding jobs already added (``add`` with no line), in their order."""
        self._input.write(line + b"\n")

    def place(self, folder: Path) -> None:
        """Make its files durable and move them to ``folder`` (its tag's, any stale one an
        unrecorded cut left there removed), before its chunk is recorded."""
        for f in (self._input, self._jobs):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        remove_chunk(folder)
        os.replace(self.folder, folder)
        self.folder = folder
        fd = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Drop a cut that will not be sent (``--budget``)."""
        self._input.close()
        self._jobs.close()
        remove_chunk(self.folder)
