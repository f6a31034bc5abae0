"""What every run does to its directory before it sends, whichever way it sends (``Runner`` on
this machine, the driver of ``batcher run --ray``): check a new directory's inputs before anything
is written there, take the lock, refuse a directory another run wrote (another provider or model,
another schema), plan the resume (what is done, what changed), then write ``run.json`` and clear
the image files a killed run left half-written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._config.options import RunOptions
from .._config.pool_file import EndpointSpec
from .._jobs import JobSource
from .._wire.providers import Provider
from .dirlock import DirLock
from .image_files import clear_partial
from .manifest import Manifest
from .resume import ResumePlan, plan_resume
from .store import ResultStore

__all__ = ["RunStart"]


class RunStart:
    """One run's start in ``out``: ``scan_if_fresh``, then ``acquire`` (the lock, before anything
    in the directory is read or written), ``plan``, ``begin``; ``release`` at the end."""

    def __init__(self, out: Path, store: ResultStore, source: JobSource) -> None:
        self.out = out
        self.store = store
        self.source = source
        self.lock = DirLock(out)

    def scan_if_fresh(self) -> int | None:
        """Into a directory no run has written to, check the inputs now, before the lock and the
        store write there, so that bad input leaves nothing in it: the jobs' count. None for a
        directory with results (``plan`` checks the inputs as it compares them)."""
        store = self.store
        if store.journal_dir.exists() or store.results_dir.exists():
            return None
        return self.source.scan()

    def acquire(self) -> None:
        self.lock.acquire()

    def release(self) -> None:
        self.lock.release()

    def plan(
        self,
        provider: Provider,
        provider_name: str,
        options: RunOptions,
        schema: dict[str, Any] | None,
        scanned: int | None,
    ) -> ResumePlan:
        """Refuse a directory another run wrote (``run.json``: another provider or model, or
        another ``schema``, unless ``--redo-changed``), then recover the store and decide what is
        done and what is sent again (``plan_resume``). Under the lock."""
        old = Manifest.read(self.out)
        if old is not None:
            old.check_same_run(provider_name, options.requests.model, self.out)
            old.check_same_schema(schema, self.out, options.resume.redo_changed)
        return plan_resume(self.source, self.store, provider, options.resume, scanned)

    def begin(
        self,
        options: RunOptions,
        *,
        provider: str,
        base_url: str,
        total: int,
        schema: dict[str, Any] | None,
        pool: Sequence[EndpointSpec] | None,
    ) -> None:
        """Write ``run.json`` for this run (``base_url``: ``"mock"`` for the embedded mock;
        ``pool``: the ``--pool`` file's endpoints, None for a run of one), and clear the image
        files a killed run left half-written: the run is about to send."""
        Manifest(
            provider=provider,
            model=options.requests.model,
            base_url=base_url,
            total=total,
            inputs=self.source.inputs,
            quota_day=options.limits.quota_day,
            limits=pool[0].limits if pool else options.limits.table(),
            schema=schema,
            endpoints={spec.name: spec.limits for spec in pool} if pool else {},
        ).write(self.out)
        clear_partial(self.out)
