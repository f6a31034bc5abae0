"""``batcher status``: where a run stands, read from its directory while it runs or after."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from .._admission.ledger import DailyCount, Ledger
from .._admission.quota import Spent, spent_today
from .._config.limits import Limits
from .._config.prices import usd
from .._core.clock import QUOTA_TZ
from .._core.errors import UsageError
from .._progress import duration
from .._rundir.batchlog import BatchLog, Chunk
from .._rundir.dirlock import Holder, holder
from .._rundir.manifest import Manifest
from .._rundir.results import damaged_files, iter_tables, read_costs
from .exits import EXIT_OK

__all__ = ["RunStatus", "read_status", "status_command"]

PACE_WINDOW = 600.0
"""The pace is measured over the last ten minutes of finished jobs."""


@dataclass(frozen=True, slots=True)
class RunStatus:
    """Totals, today's quota per model, and how long the rest will take."""

    total: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    spent_today: dict[str, int]
    limits: dict[str, Limits]
    next_reset: float
    pace: float | None
    """Jobs finished per minute over the last ten minutes of the run, if any."""
    running: Holder | None = None
    """The run holding the directory now (pid, since), if one does."""
    damaged: tuple[Path, ...] = ()
    """Results parts that could not be read (set aside in ``DIR/damaged/`` or not yet)."""
    spent_usd: dict[str, float] = field(default_factory=dict)
    """Dollars per model of the results so far (those whose model has a known price)."""
    batches: tuple[Chunk, ...] = ()
    """Provider batches not yet collected, as the run last saw them."""
    now: float = 0.0
    """When the status was read (for the batches' ages)."""
    shared: tuple[Spent, ...] = ()
    """What all runs counted today in the quota store, per account and model."""
    tier: str | None = None
    """The tier the run was given (``run.json``), if any: whose ceiling its RPM is."""

    @property
    def done(self) -> int:
        return self.ok + self.errors

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)

    @property
    def eta_at_pace(self) -> float | None:
        """Seconds left at the recent pace."""
        return self.remaining / self.pace * 60 if self.pace else None

    @property
    def ceiling(self) -> int | None:
        """The one per-minute request limit of the models counted today, if one model has one."""
        rpms = [lim.rpm for lim in self.limits.values() if lim.rpm]
        return rpms[0] if len(rpms) == 1 else None

    @property
    def eta_at_tier(self) -> float | None:
        """Seconds left at one model's per-minute ceiling, when one model has one."""
        return self.remaining / self.ceiling * 60 if self.ceiling else None

    @property
    def quota_spent(self) -> list[str]:
        """The models whose daily request quota is spent today."""
        rpd = {m: lim.rpd for m, lim in self.limits.items() if lim.rpd}
        return sorted(m for m, n in self.spent_today.items() if m in rpd and n >= rpd[m])

    def lines(self) -> list[str]:
        """The report ``batcher status`` prints."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.error_kinds.items()))
        out = []
        if self.running is not None:
            pid, since = self.running
            when = f" since {_local(since)}" if since is not None else ""
            out.append(f"running now (pid {pid if pid is not None else '?'}{when})")
        out += [
            f"done {self.done} / {self.total}",
            f"ok {self.ok}",
            f"error {self.errors}" + (f" ({kinds})" if kinds else ""),
            f"remaining {self.remaining}",
        ]
        if self.spent_usd:
            models = ", ".join(f"{m} {usd(c)}" for m, c in sorted(self.spent_usd.items()))
            out.append(f"cost so far {usd(sum(self.spent_usd.values()))} ({models})")
        for model, spent in sorted(self.spent_today.items()):
            rpd = self.limits[model].rpd
            of = f" of {rpd:,} requests" if rpd else " requests"
            out.append(f"quota today {model}: {spent:,}{of}")
        for row in self.shared:
            out.append(f"all runs today, {row.label}, {row.model}: {row.count:,} requests")
        reset = datetime.fromtimestamp(self.next_reset, QUOTA_TZ).strftime("%Y-%m-%d %H:%M %Z")
        out.append(f"next quota reset {reset}")
        if self.remaining and self.quota_spent:
            # the pace of the jobs before the quota ran out says nothing of the rest: they wait
            wait = duration(max(0.0, self.next_reset - self.now))
            out.append(
                f"daily quota spent ({', '.join(self.quota_spent)}): the remaining "
                f"{self.remaining} jobs wait for the reset, {wait} from now"
            )
        elif self.remaining:
            if self.pace:
                left = duration(self.eta_at_pace)
                out.append(f"at the recent pace ({self.pace:,.0f} jobs/min): {left} left")
            if self.eta_at_tier is not None:
                whose = f"the {self.tier} ceiling" if self.tier else "the RPM limit"
                left = duration(self.eta_at_tier)
                out.append(f"at {whose} ({self.ceiling:,} RPM): {left} left")
        for path in self.damaged:
            out.append(f"damaged: {path} (its jobs are sent again by the next run)")
        for chunk in self.batches:
            age = duration(max(0.0, self.now - (chunk.submitted or chunk.created)))
            total, succeeded, failed = chunk.counts
            counts = f", {succeeded or 0} ok / {failed or 0} failed of {total}" if total else ""
            state = chunk.state or ("submitted" if chunk.batch else "not yet submitted")
            out.append(
                f"batch {chunk.batch or chunk.tag}: {state}, age {age}, {len(chunk.hashes)} jobs"
                f" of {chunk.model}{counts}"
            )
        return out


def _local(wall: float) -> str:
    return datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S")


def read_status(out: Path, now: float) -> RunStatus:
    """Read the run in ``out`` as it stands at wall-clock ``now``."""
    manifest = Manifest.read(out)
    if manifest is None:
        raise UsageError(f"{out} holds no batcher run (no run.json)")
    unreadable: list[Path] = []
    counts, kinds, pace = _read_results(out, unreadable)
    spent = Ledger(out).spent(now, rolling=manifest.quota_day == "rolling")
    return RunStatus(
        total=manifest.total,
        ok=counts["ok"],
        errors=counts["error"],
        error_kinds=dict(kinds),
        spent_today=spent,
        limits={m: manifest.limits_for(m) for m in spent},
        next_reset=DailyCount(rolling=False).resets_at(now),
        pace=pace.per_minute(),
        running=holder(out),
        damaged=tuple(damaged_files(out, unreadable=unreadable)),
        spent_usd=read_costs(out),
        batches=tuple(BatchLog(out).open_chunks()),
        now=now,
        tier=manifest.limits.tier.name if manifest.limits.tier else None,
    )


def _read_results(out: Path, unreadable: list[Path]) -> tuple[Counter[str], Counter[str], _Pace]:
    """Finished jobs by status, errors by kind, and the pace of the last of them: summed a part
    at a time (``iter_tables``), as ``iter_status`` reads them; unreadable parts are skipped and
    appended to ``unreadable``."""
    import pyarrow.compute as pc

    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    pace = _Pace()
    columns = ["status", "error_kind", "finished_at"]
    for t in iter_tables(out, columns, unreadable=unreadable):
        for row in pc.value_counts(t["status"]).to_pylist():
            counts[row["values"]] += row["counts"]
        errors = t.filter(pc.coalesce(pc.equal(t["status"], "error"), False))
        for row in pc.value_counts(errors["error_kind"]).to_pylist():
            kinds[row["values"] or "unknown"] += row["counts"]
        finished = t["finished_at"].drop_null().to_numpy()
        pace.add(finished)
    return counts, kinds, pace


class _Pace:
    """The finish times within ``PACE_WINDOW`` of the last one seen, fed a part at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.recent = np.zeros(0)

    def add(self, times: Any) -> None:
        if not len(times):
            return
        self.count += len(times)
        recent = np.concatenate((self.recent, times))
        self.recent = recent[recent >= recent.max() - PACE_WINDOW]

    def per_minute(self) -> float | None:
        """Jobs finished per minute over the last ten minutes of finished jobs, if measurable."""
        if self.count < 2:
            return None
        span = float(self.recent.max() - self.recent.min())
        return (len(self.recent) - 1) / span * 60 if span > 0 else None


def status_command(args: argparse.Namespace) -> int:
    """Print where the run in ``args.dir`` stands, with what all runs counted today in the quota
    store."""
    now = time.time()
    status = read_status(Path(args.dir), now)  # first: a DIR that holds no run is the error
    shared = anyio.run(spent_today, args.quota_store, now, backend="asyncio")
    status = dataclasses.replace(status, shared=tuple(shared))
    print("\n".join(status.lines()))
    return EXIT_OK
