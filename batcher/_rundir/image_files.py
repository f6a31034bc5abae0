"""Images answered, saved as files under ``DIR/images/`` before their job is recorded.

Crash protocol: each image is written to a temporary name, flushed, fsynced and renamed to its
final name, and the folder is fsynced, all before the job's journal line is written. So a result
never points at a missing or partial file. A crash between the rename and the journal line leaves
an orphan file that no result names; the rerun sends that job again and overwrites it, as the
names depend only on the job's id and the image's place in the answer. Temporary files a crash
left are deleted when a run opens the folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core.errors import WriteFailed
from .._core.media import fetch
from .._core.sniff import sniff
from .._wire.providers import ImageOut

if TYPE_CHECKING:
    import urllib.request

__all__ = ["IMAGES", "clear_partial", "download", "save_images"]

IMAGES = "images"
"""The folder under the output directory that holds the images answered."""

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TMP = ".tmp"


def _stem(job_id: str) -> str:
    """A file name stem for a job: its id made safe, and a hash of the id so that two ids that
    are made the same (``a/b``, ``a:b``) never share files."""
    safe = _UNSAFE.sub("_", job_id)[:80].strip("._") or "job"
    return f"{safe}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}"


def download(
    images: Sequence[ImageOut], opener: urllib.request.OpenerDirector | None = None
) -> tuple[ImageOut, ...]:
    """The images with every URL downloaded through ``opener`` (the run's proxy and CAs; at most
    20 MB each, in at most 30 s; no key sent); ``OSError`` if one cannot be had. Run in a worker
    thread."""
    out = []
    for image in images:
        if image.data is None and image.url is not None:
            data = fetch(image.url, opener)
            image = ImageOut(image.mime_type or sniff(data[:64]) or "image/png", data)
        out.append(image)
    return tuple(out)


def save_images(out: Path, job_id: str, images: Sequence[ImageOut]) -> list[dict[str, Any]]:
    """Write a job's images durably under ``out/images/``; return the ``images`` column's
    entries ``{path (relative to out), mime_type, bytes, sha256}``. Raises ``WriteFailed``."""
    folder = out / IMAGES
    entries = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stem = _stem(job_id)
        for k, image in enumerate(images, start=1):
            assert image.data is not None  # URLs are downloaded first
            mime = image.mime_type or sniff(image.data[:64]) or "application/octet-stream"
            name = f"{stem}-{k}.{_EXT.get(mime, 'bin')}"
            _write_durably(folder / name, image.data)
            entries.append(
                {
                    "path": f"{IMAGES}/{name}",
                    "mime_type": mime,
                    "bytes": len(image.data),
                    "sha256": hashlib.sha256(image.data).hexdigest(),
                }
            )
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteFailed.from_os_error(e, folder) from e
    return entries


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + _TMP)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def clear_partial(out: Path) -> None:
    """Delete the temporary files a crash left in ``out/images/``."""
    folder = out / IMAGES
    if folder.is_dir():
        for tmp in folder.glob("*" + _TMP):
            tmp.unlink(missing_ok=True)
