"""Resuming: which jobs of the inputs are done already, and which finished ones to send again.

Read once before a run sends anything (the inputs' first pass checks every job at the same time),
and again, compactly, before each later pass over the inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .._config.options import ResumeOptions
from .._core.idset import IdSet, id_hash
from .._jobs import Job, JobSource
from .._wire.providers import Provider, job_fingerprint
from .store import ResultStore

__all__ = ["ResumePlan", "done_now", "plan_resume"]

log = logging.getLogger("batcher")


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """How many jobs the inputs hold, which are done, and the finished ones whose request changed
    since but are kept (without ``redo_changed``)."""

    total: int
    done: IdSet
    changed: list[str] = field(default_factory=list)


def plan_resume(
    source: JobSource,
    store: ResultStore,
    provider: Provider,
    resume: ResumeOptions,
    scanned: int | None = None,
) -> ResumePlan:
    """Check every job, recover the store, and decide what is done and what to send again.

    ``scanned`` is the count of a scan made already (a new directory's inputs are checked before
    anything is written there); the inputs are read again only if the store holds finished jobs
    after all (another run wrote there meanwhile), whose requests must be compared.
    """
    store.open()
    finished, errors = store.finished()
    changed: list[str] = []

    def compare(job: Job) -> None:
        old = finished.get(job.id)
        if old is None:
            return
        model = job.model or ""
        # images and files count by their hashes, streamed: a changed image is a changed job
        if old != int(job_fingerprint(provider, job, model), 16):
            changed.append(job.id)

    if scanned is None or finished:
        total = source.scan(visit=compare if finished else None)
    else:
        total = scanned
    redo = set(changed) if resume.redo_changed else set()
    if resume.retry_errors:
        redo.update(errors)
    if redo:
        store.remove(redo)
        log.info("sending %d finished job(s) again (%s)", len(redo), resume.flags())
    again = {id_hash(i) for i in redo}
    keys = finished.hashes()
    done = IdSet(keys if not again else (k for k in keys if k not in again))
    kept = [] if resume.redo_changed else changed
    if kept:
        sample = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
        log.warning(
            "%d finished job(s) have a different request now (%s); their old results are "
            "kept: pass --redo-changed to send them again",
            len(kept),
            sample,
        )
    return ResumePlan(total, done, kept)


def done_now(store: ResultStore) -> IdSet:
    """Compact the journal and re-read what is done, before another pass over the inputs."""
    store.close()
    finished, _ = store.finished()
    return IdSet(finished.hashes())
