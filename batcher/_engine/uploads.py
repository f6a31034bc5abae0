"""Files sent through the provider's Files API instead of inline (``--upload``).

Each distinct file (by SHA-256) is uploaded once per run and account: a lock per digest makes
the jobs that need it at once wait for one upload. Its id goes to ``DIR/uploads.jsonl``
(``_rundir.uploads``), so a rerun within the file's lifetime names it again; one that has
expired, or is about to, is uploaded again. ``auto`` uploads a file too big to go inline, and a
file a job sends that an earlier job of the run sent (the second use on: the first went inline);
on Gemini audio always. ``always`` uploads every file that can be; ``never`` none. When an
upload ``auto`` chose is refused (a compatible server without a Files API), what can go inline
goes inline from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal, TypeAlias

import anyio

from .._core.errors import ProviderError
from .._core.media import INLINE_LIMIT, Media, probe, sha256_of, uploadable
from .._jobs import Job
from .._rundir.uploads import UploadLog, UploadRecord
from .._wire.providers._base import Provider
from .._wire.providers._files import gemini_upload, openai_upload
from .._wire.transport import Transport

__all__ = ["UPLOAD_MODES", "UploadMode", "Uploads"]

UploadMode: TypeAlias = Literal["auto", "always", "never"]
UPLOAD_MODES: tuple[UploadMode, ...] = ("auto", "always", "never")

_MARGIN = 3600.0
"""Seconds a recorded file must still live to be named again: a job may wait and retry a while
after its file was chosen."""


class Uploads:
    """The files of one account (an endpoint and its key) uploaded for a run's jobs."""

    def __init__(
        self,
        mode: UploadMode,
        provider: Provider,
        transport: Transport,
        account: str,
        log: UploadLog,
        clock: Callable[[], float],
    ) -> None:
        self.mode = mode
        self.provider = provider
        self.transport = transport
        self.account = account
        self.log = log
        self.clock = clock
        self._locks: dict[str, anyio.Lock] = {}  # digest -> held while it is being uploaded
        self._seen: set[str] = set()  # digests a job of this run has sent, inline or not
        self._digests: dict[str, str] = {}  # a path -> its digest (hashed once per run)
        self._mine: dict[str, UploadRecord] = {}  # digest -> this run's upload of it
        self._refused = False  # an upload failed: send inline what can go inline

    async def prepare(self, job: Job) -> Job:
        """``job`` with the files it should not send inline marked uploaded, uploading them
        first where no live upload of them is known; ``job`` itself if none."""
        if self.mode == "never" or not job.media:
            return job
        chosen = await anyio.to_thread.run_sync(self._choose, job)
        if not chosen:
            return job
        named: dict[Media, tuple[str, str]] = {}
        for media, (digest, mime, needed) in chosen.items():
            if self._refused and not needed:
                continue
            try:
                named[media] = (await self._upload(media, digest, mime), mime)
            except ProviderError:
                if needed:
                    raise
                # a compatible server without a Files API (or a key without it): inline, as
                # before, what can go inline
                self._refused = True
        if not named:
            return job
        return job.with_media(lambda m: replace(m, uploaded=named[m]) if m in named else m)

    def forget(self, job: Job) -> None:
        """The provider said a file ``job`` named is unknown: upload it again next time."""
        for m in job.media:
            if m.uploaded is not None:
                self.log.forget(m.uploaded[0])
                for digest, rec in list(self._mine.items()):
                    if rec.ref == m.uploaded[0]:
                        del self._mine[digest]

    def _choose(self, job: Job) -> dict[Media, tuple[str, str, bool]]:
        """The files of ``job`` to upload, with (digest, MIME type, whether it cannot go inline
        instead): read off the event loop."""
        found: list[tuple[Media, str, str, int]] = []
        total = 0
        for m in job.media:
            p = probe(m, dims=False)
            total += p.size
            if p.mime is None or not uploadable(m, p.mime, self.provider.name):
                continue
            digest = self._digests.get(m.ref)
            if digest is None:
                digest = self._digests[m.ref] = sha256_of(m)
            found.append((m, digest, p.mime, p.size))
        over = total * 4 // 3 > INLINE_LIMIT.get(self.provider.name, 1 << 62)
        chosen: dict[Media, tuple[str, str, bool]] = {}
        for m, digest, mime, _size in found:
            audio = self.provider.name == "gemini" and mime.startswith(("audio/", "video/"))
            if self.mode == "always" or over or audio or digest in self._seen:
                chosen[m] = (digest, mime, self.mode == "always" or over)
            self._seen.add(digest)
        return chosen

    async def _upload(self, media: Media, digest: str, mime: str) -> str:
        """What a request names the file by: a live recorded upload's, else a new one's."""
        lock = self._locks.setdefault(digest, anyio.Lock())
        async with lock:
            # this run's own upload while it lives; an earlier run's only with time to spare
            now = self.clock()
            rec = self._mine.get(digest) or self.log.find(digest, self.account, now, _MARGIN)
            if rec is not None and (rec.expires is None or rec.expires > now):
                return rec.ref
            path = Path(media.ref)
            size = (await anyio.Path(path).stat()).st_size
            what = f"uploading {media.ref}"
            if self.provider.name == "gemini":
                up = await gemini_upload(
                    self.transport,
                    self.provider,
                    path,
                    size=size,
                    mime=mime,
                    name=digest,
                    what=what,
                )
            else:
                up = await openai_upload(
                    self.transport,
                    self.provider,
                    path,
                    purpose="user_data",
                    filename=path.name,
                    mime=mime,
                    what=what,
                )
            rec = UploadRecord(digest, self.account, up.ref, up.name, mime, up.expires, now)
            self.log.add(rec)
            self._mine[digest] = rec
            return rec.ref
