"""Durable writes under the run directory: whole writes, fsynced folders, and the system's
errors as ``WriteFailed`` naming the file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from io import FileIO
from pathlib import Path

from .._core.errors import WriteFailed

__all__ = ["fsync_dir", "write_all", "writing"]


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Raise what the system says while writing ``path`` as ``WriteFailed``, naming ``path``."""
    try:
        yield
    except OSError as e:
        raise WriteFailed.from_os_error(e, path) from e


def write_all(file: FileIO, data: bytes) -> None:
    """Write all of ``data``: a write to a filling disk may be short, then fail."""
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]  # a write to a filling disk may be short, then fail
