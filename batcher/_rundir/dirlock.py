"""One run per output directory: an exclusive lock on ``DIR/.lock`` that dies with its process.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on a file kept open for the run's life. The kernel drops
it when the process ends, however it ends (kill -9 included), so a lock is never stale and nobody
has to delete a file by hand. While it is held the file says who holds it, as one JSON line
``{"pid": ..., "since": ...}``, for the second run's message and for ``batcher status``; when
nobody holds the lock, what the file says means nothing.

An flock belongs to an open file description, not to a process: two ``DirLock`` objects on one
directory conflict even in one process. ``holder`` probes with a shared lock held for an instant;
so that such a probe never turns a starting run away, ``acquire`` tries again for a moment before
it gives up.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from .._core.errors import DirectoryLocked, UsageError, WriteFailed

__all__ = ["DirLock", "Holder", "holder"]

LOCK_NAME = ".lock"
PATIENCE = 0.25
"""Seconds ``acquire`` keeps trying, and ``holder`` waits for a new holder to write its name."""


class Holder(NamedTuple):
    """Who holds a directory's lock: a process id and the wall-clock time it took the lock, each
    None if the holder has not written it (yet)."""

    pid: int | None
    since: float | None


class DirLock:
    """The exclusive lock of one output directory; ``acquire`` it before writing anything there."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, creating the directory if need be, or raise ``DirectoryLocked`` naming
        the holder. A failed attempt changes nothing in the directory."""
        if self._fd is not None:
            raise RuntimeError(f"the lock of {self.out} is already held by this object")
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"{self.out} is a file, not a directory; use another --out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise WriteFailed.from_os_error(e, self.path) from e
        try:
            if not _try_lock(fd, fcntl.LOCK_EX, patience=PATIENCE):
                raise DirectoryLocked(self.out, *_read_holder(fd))
            _write_holder(fd, self.path)
        except OSError as e:  # not "held": a file system without locks (ENOLCK, EOPNOTSUPP)
            os.close(fd)
            raise UsageError(
                f"cannot lock {self.path}: {e.strerror or e}; use an --out on a local disk"
            ) from e
        except BaseException:
            os.close(fd)  # drops the lock, if it was taken
            raise
        self._fd = fd

    def release(self) -> None:
        """Let the next run in. Safe to call when not held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder(out: Path) -> Holder | None:
    """Who holds the lock of ``out`` now, or None if no run holds it. Reads only: fit for
    ``batcher status`` beside a live run."""
    try:
        fd = os.open(Path(out) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH, patience=0.0):
            return None  # closing the file below drops the probe's lock
        deadline = time.monotonic() + PATIENCE
        who = _read_holder(fd)
        while who.pid is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the holder has the lock and is writing its name
            who = _read_holder(fd)
        return who
    finally:
        os.close(fd)


def _try_lock(fd: int, kind: int, *, patience: float) -> bool:
    """Lock ``fd`` without blocking, trying again for ``patience`` seconds; True once locked."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(0.01)


def _write_holder(fd: int, path: Path) -> None:
    line = json.dumps({"pid": os.getpid(), "since": time.time()}).encode() + b"\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, line, 0)
    except OSError as e:
        raise WriteFailed.from_os_error(e, path) from e


def _read_holder(fd: int) -> Holder:
    try:
        data = json.loads(os.pread(fd, 4096, 0))
        return Holder(int(data["pid"]), float(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return Holder(None, None)
