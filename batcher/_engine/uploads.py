"""Files sent through the provider's Files API instead of inline (``--upload``).

Each distinct file (by SHA-256) is uploaded once per run and account: a lock per digest makes
the jobs that need it at once wait for one upload. Its id goes to ``DIR/uploads.jsonl``
(``_rundir.uploads``), so a rerun within the file's lifetime names it again; one that has
expired, or is about to, is uploaded again. ``auto`` uploads a file too big to go inline, and a
file a job sends that an earlier job of the run sent (the second use on: the first went inline);
on Gemini audio and video always. ``always`` uploads every file that can be; ``never`` none.
When an upload ``auto`` chose is refused (a compatible server without a Files API), what can go
inline goes inline from then on.

A batch's requests name files too (``prepare(job, batch=True)``, as its input file is cut): such a
file must outlive the batch, which may run 24 h, so only one with ``BATCH_MARGIN`` left is named
again. An upload that fails retryably (a 5xx, a 429, a timeout, a reset connection) is retried as
a request is, with the run's retry settings; a file that cannot go inline round after round
until ``--max-outage`` has passed: then the run ends as for an endpoint's outage (a rerun goes
on); one ``auto`` chose but could send inline goes inline after one round. A refusal (another
4xx) fails the jobs that need that file, naming it, once per run.
A Gemini file still ``PROCESSING`` (a video) is read again, at growing intervals, until it is
``ACTIVE``; ``FAILED``, or ``PROCESSING_LIMIT`` seconds on, fails its jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Literal, TypeAlias

import anyio

from .._admission.retry import RetryPolicy
from .._core.clock import Clock
from .._core.errors import Outage, PermanentJobError, ProviderError, RetryableError
from .._core.media import INLINE_LIMIT, Media, probe, sha256_of, uploadable
from .._jobs import Job
from .._rundir.uploads import UploadLog, UploadRecord
from .._wire.providers._base import Provider
from .._wire.providers._files import Uploaded, gemini_file, gemini_upload, openai_upload
from .._wire.transport import Transport

__all__ = [
    "BATCH_MARGIN",
    "PROCESSING_LIMIT",
    "UPLOAD_MODES",
    "FileRefused",
    "FileUnusable",
    "UploadMode",
    "Uploads",
    "file_unknown",
]

log = logging.getLogger("batcher")

UploadMode: TypeAlias = Literal["auto", "always", "never"]
UPLOAD_MODES: tuple[UploadMode, ...] = ("auto", "always", "never")

_MARGIN = 3600.0
"""Seconds a recorded file must still live to be named again: a job may wait and retry a while
after its file was chosen."""

BATCH_MARGIN = 25 * 3600.0
"""Seconds a file a batch request names must still live: a batch may take its whole 24 h window
(both providers'), and Gemini keeps a file 48 h, so an upload more than about 23 h old goes up
again rather than expire under a running batch."""

PROCESSING_LIMIT = 900.0
"""Seconds a Gemini file may stay ``PROCESSING`` after its upload before its jobs fail."""

_FIRST_LOOK = 1.0
_LONGEST_LOOK = 10.0
"""Seconds between looks at a file ``PROCESSING``: 1, doubling, at most 10 (Google's examples
look every 10 s at a video)."""


class FileRefused(PermanentJobError):
    """The provider refused to take a file (a 4xx): the jobs that need it uploaded fail."""


class FileUnusable(FileRefused):
    """The provider took a file but cannot use it (Gemini's ``FAILED``, or ``PROCESSING`` for
    too long): its jobs fail, even those that could have sent it inline."""


class Uploads:
    """The files of one account (an endpoint and its key) uploaded for a run's jobs."""

    def __init__(
        self,
        mode: UploadMode,
        provider: Provider,
        transport: Transport,
        account: str,
        log: UploadLog,
        clock: Clock,
        policy: RetryPolicy | None = None,
        where: str = "the Files API",
        max_outage: float = 1800.0,
        api: str = "chat",
    ) -> None:
        self.mode = mode
        self.provider = provider
        self.transport = transport
        self.account = account
        self.log = log
        self.clock = clock
        self.policy = policy or RetryPolicy(paced=False)
        """How a failed upload is retried: the run's settings, with no lane to pace a 429."""
        self.where = where
        """The endpoint, as an outage of its Files API names it."""
        self.max_outage = max_outage
        """Seconds an upload is tried again before the run ends as an outage (``--max-outage``)."""
        self.api = api
        """The run's API (``chat``, ``responses``): the Responses API names images by id too."""
        self._locks: dict[str, anyio.Lock] = {}  # digest -> held while it is being uploaded
        self._seen: set[str] = set()  # digests a job of this run has sent, inline or not
        self._digests: dict[str, str] = {}  # a path -> its digest (hashed once per run)
        self._mine: dict[str, UploadRecord] = {}  # digest -> this run's upload of it
        self._refused = False  # an upload failed: send inline what can go inline
        self._refusals: dict[str, FileRefused] = {}  # digest -> why it cannot go up (this run)

    async def prepare(self, job: Job, *, batch: bool = False) -> Job:
        """``job`` with the files it should not send inline marked uploaded, uploading them
        first where no live upload of them is known; ``job`` itself if none. ``batch``: its
        request goes into a batch, so each file must live ``BATCH_MARGIN`` more."""
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
                ref = await self._upload(media, digest, mime, batch, needed)
            except (ProviderError, Outage) as e:
                if needed or isinstance(e, FileUnusable):
                    raise
                # a compatible server without a Files API (or a key without it), or one down:
                # inline, as before, what can go inline
                self._refused = True
                continue
            if ref is not None:
                named[media] = (ref, mime)
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
            if p.mime is None or not uploadable(m, p.mime, self.provider.name, self.api):
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

    async def _upload(
        self, media: Media, digest: str, mime: str, batch: bool, needed: bool
    ) -> str | None:
        """What a request names the file by: a live recorded upload's, else a new one's; None
        if it need not go up and the Files API failed while this job waited for the lock.
        ``needed``: it cannot go inline, so a failing Files API is waited for (``_retried``)."""
        lock = self._locks.setdefault(digest, anyio.Lock())
        async with lock:
            refused = self._refusals.get(digest)
            if refused is not None:
                raise refused
            if self._refused and not needed:
                return None
            # this run's own upload while it lives; an earlier run's only with time to spare;
            # for a batch, either only if it outlives the batch (or, where the provider keeps
            # files less long than that, this run's within the hour after its upload)
            now = self.clock.time()
            rec = self._mine.get(digest)
            if rec is not None and rec.expires is not None:
                left = min(BATCH_MARGIN, rec.expires - rec.at - _MARGIN) if batch else 0.0
                if rec.expires - left <= now:
                    rec = None
            if rec is None:
                rec = self.log.find(digest, self.account, now, BATCH_MARGIN if batch else _MARGIN)
            if rec is not None:
                return rec.ref
            try:
                up = await self._retried(partial(self._send, media, digest, mime), needed)
                if up.state != "ACTIVE":
                    up = await self._until_active(media, up, needed)
            except FileRefused as e:
                self._refusals[digest] = e
                raise
            except ProviderError as e:
                if isinstance(e, RetryableError):
                    raise
                refused = FileRefused(e.message, status=e.status, body=e.body)
                self._refusals[digest] = refused
                raise refused from e
            rec = UploadRecord(digest, self.account, up.ref, up.name, mime, up.expires, now)
            self.log.add(rec)
            self._mine[digest] = rec
            return rec.ref

    async def _retried(self, call: Callable[[], Awaitable[Uploaded]], patient: bool) -> Uploaded:
        """``call`` retried as a request is; ``patient`` (a file that cannot go inline), round
        after round of the run's attempts (a pause of the longest backoff between), until
        ``max_outage`` has passed: then, or after one round if not ``patient`` (its job sends
        it inline instead), ``Outage``, which ends the run as for an endpoint's."""
        start = self.clock.monotonic()
        while True:
            try:
                return await self.policy.call(call, clock=self.clock)
            except RetryableError as e:
                lasted = self.clock.monotonic() - start
                if not patient or lasted >= self.max_outage:
                    raise Outage(self.where, lasted, e.message) from e
                log.info("%s: %s; trying again", self.where, e.message)
            await self.clock.sleep(self.policy.max_wait)

    async def _send(self, media: Media, digest: str, mime: str) -> Uploaded:
        """Upload the file of ``media`` once."""
        path = Path(media.ref)
        size = (await anyio.Path(path).stat()).st_size
        what = f"uploading {media.ref}"
        if self.provider.name == "gemini":
            return await gemini_upload(
                self.transport, self.provider, path, size=size, mime=mime, name=digest, what=what
            )
        # an image the Responses API names is uploaded for "vision"
        # (https://platform.openai.com/docs/guides/images-vision?api-mode=responses)
        return await openai_upload(
            self.transport,
            self.provider,
            path,
            purpose="vision" if mime.startswith("image/") else "user_data",
            filename=path.name,
            mime=mime,
            what=what,
        )

    async def _until_active(self, media: Media, up: Uploaded, patient: bool) -> Uploaded:
        """``up`` once the Files API has it ``ACTIVE``, read again at growing intervals while it
        is ``PROCESSING``; ``FileUnusable`` if it ``FAILED`` or is still not ready after
        ``PROCESSING_LIMIT`` seconds."""
        start = self.clock.monotonic()
        wait = _FIRST_LOOK
        what = f"reading the state of {media.ref} ({up.name})"
        while up.state == "PROCESSING":
            if self.clock.monotonic() - start >= PROCESSING_LIMIT:
                raise FileUnusable(
                    f"{media.ref} is still PROCESSING at the Files API ({up.name}) "
                    f"{PROCESSING_LIMIT:.0f} s after its upload"
                )
            await self.clock.sleep(wait)
            wait = min(2 * wait, _LONGEST_LOOK)
            up = await self._retried(
                partial(gemini_file, self.transport, self.provider, up.name, what), patient
            )
        if up.state != "ACTIVE":
            why = f": {up.error}" if up.error else ""
            raise FileUnusable(f"{media.ref} is {up.state} at the Files API ({up.name}){why}")
        return up


def file_unknown(error: ProviderError, sent: Job) -> bool:
    """Whether ``error`` refuses a request for naming an uploaded file the provider no longer
    has (expired or deleted before its recorded expiry): OpenAI answers 400/404 naming the file,
    Gemini 400/403/404 ("File ... not exist" or no permission to it)."""
    if isinstance(error, RetryableError) or not any(m.uploaded for m in sent.media):
        return False
    return error.status in (400, 403, 404) and "file" in error.message.lower()
