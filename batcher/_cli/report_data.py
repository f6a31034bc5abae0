"""What ``batcher report`` draws: a run directory read and summed, a Parquet part at a time.

``read_run`` reads ``run.json``, then the results and the attempt log (beside a live run, moving
nothing) twice, only the columns it needs: once for the span of the run, once to sum them with
Arrow and numpy, the results per model and error kind here, the attempts per lane, outcome and
quota day in ``report_attempts``. Every figure it keeps is bounded (series thinned to ``POINTS``,
latencies in buckets past 100,000: ``report_sketches``), so memory and the report's size stay the
same whatever the number of rows. Times stay epoch seconds here; ``report`` turns them into
minutes since the first request and into HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import UsageError
from .._rundir.manifest import Manifest
from .._rundir.results import iter_tables
from .report_attempts import ATTEMPT_COLUMNS, AttemptSums, LaneLoad, QuotaDay
from .report_sketches import Latencies, Thinned, codes, equals, floats, running_sum, truthy

__all__ = ["ErrorKind", "ModelUsage", "RunData", "Totals", "read_run"]

RESULT_COLUMNS = [
    "id",
    "status",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "finished_at",
    "error_kind",
    "error",
]
EXAMPLES = 3
"""Examples kept per error kind."""


@dataclass(frozen=True, slots=True)
class Totals:
    """The run's counts; ``cost`` is None if no result has a price."""

    jobs: int
    ok: int
    errors: int
    remaining: int
    requests: int
    rate_limited: int
    input_tokens: int
    output_tokens: int
    cost: float | None


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's jobs and tokens; ``cost`` is None if none of its results has a price."""

    model: str
    jobs: int
    input_tokens: int
    output_tokens: int
    cost: float | None


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """The jobs that ended in one kind of error: how many, and the first few."""

    kind: str
    count: int
    examples: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RunData:
    """What a report is drawn from: a run's figures, each of a bounded size."""

    out: Path
    manifest: Manifest
    t0: float
    """When the first request was sent or job finished (0 if none was)."""
    t1: float
    """When the last was."""
    totals: Totals
    finishes: Thinned
    """When each job that has a result finished."""
    lanes: list[LaneLoad]
    """Each lane's load, by endpoint then model."""
    latencies: Latencies
    """Milliseconds to answer: of the successful attempts, else of the results."""
    models: list[ModelUsage]
    """Per model (``?`` for results without one), by name."""
    errors: list[ErrorKind]
    """Each kind of error the jobs ended in, the commonest first."""
    outcomes: list[tuple[str, int]]
    """Requests by how they ended (the outcome and the HTTP status, or ``no answer``), the
    commonest first (ties: the first sent first)."""
    quota_days: list[QuotaDay]
    """By day, then model."""
    waits: Thinned
    """(when sent, seconds it waited for its lane) of each request."""
    total_wait: float
    longest_wait: float
    gaps: list[tuple[float, float]]
    """(from, to) of each stretch of ``LONG_GAP`` or more without a request sent."""


def read_run(out: Path) -> RunData:
    """Read and sum ``out``'s manifest, results and attempt log (beside a live run, moving
    nothing), a part at a time."""
    manifest = Manifest.read(out)
    if manifest is None:
        raise UsageError(f"{out} holds no batcher run (no run.json)")
    t0, t1 = _span(out)
    results = _Results(t0, t1)
    for t in iter_tables(out, RESULT_COLUMNS):
        results.add(t)
    attempts = AttemptSums(manifest, t0, t1)
    for t in iter_tables(out, ATTEMPT_COLUMNS, stream="attempts"):
        attempts.add(t)
    return RunData(
        out=out,
        manifest=manifest,
        t0=t0,
        t1=t1,
        totals=Totals(
            jobs=manifest.total,
            ok=results.ok,
            errors=results.count - results.ok,
            remaining=max(0, manifest.total - results.count),
            requests=attempts.count,
            rate_limited=attempts.rate_limited,
            input_tokens=results.input_tokens,
            output_tokens=results.output_tokens,
            cost=results.cost if results.priced else None,
        ),
        finishes=results.finishes,
        lanes=attempts.lane_loads(),
        latencies=attempts.latencies if attempts.latencies.count else results.latencies,
        models=results.model_usage(),
        errors=results.error_kinds(),
        outcomes=attempts.outcome_counts(),
        quota_days=attempts.quota_days(),
        waits=attempts.waits,
        total_wait=attempts.total_wait,
        longest_wait=attempts.longest_wait,
        gaps=attempts.gaps.stretches(),
    )


def _span(out: Path) -> tuple[float, float]:
    """(first, last) time a request was sent or a job finished; (0, 0) if none was."""
    lo, hi = math.inf, -math.inf
    for name, stream in (("finished_at", "results"), ("sent_at", "attempts")):
        for t in iter_tables(out, [name], stream=stream):
            times = truthy(floats(t, name))
            if len(times):
                lo, hi = min(lo, float(times.min())), max(hi, float(times.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


# --- the results ----------------------------------------------------------------------------------


class _Results:
    """The results' sums, a table at a time."""

    def __init__(self, t0: float, t1: float) -> None:
        self.count = self.ok = self.input_tokens = self.output_tokens = self.priced = 0
        self.cost = 0.0
        self.finishes = Thinned(t0, t1)
        self.latencies = Latencies()
        # model -> [jobs, input tokens, output tokens, cost, results priced]
        self.models: dict[str, list[Any]] = {}
        # kind -> [jobs, examples], in the order the kinds first came
        self.kinds: dict[str, list[Any]] = {}

    def add(self, t: Any) -> None:
        self.count += t.num_rows
        ok = equals(t, "status", "ok")
        self.ok += int(ok.sum())
        inputs = np.nan_to_num(floats(t, "input_tokens")).astype(np.int64)
        outputs = np.nan_to_num(floats(t, "output_tokens")).astype(np.int64)
        self.input_tokens += int(inputs.sum())
        self.output_tokens += int(outputs.sum())
        cost = floats(t, "cost_usd")
        priced = ~np.isnan(cost)
        self.priced += int(priced.sum())
        self.cost = running_sum(self.cost, cost[priced])
        self.finishes.add(truthy(floats(t, "finished_at")))
        self.latencies.add(truthy(floats(t, "latency_ms")))
        names, which = codes(t, "model", "?")
        for i, name in enumerate(names):
            rows = which == i
            row = self.models.setdefault(name, [0, 0, 0, 0.0, 0])
            row[0] += int(rows.sum())
            row[1] += int(inputs[rows].sum())
            row[2] += int(outputs[rows].sum())
            row[3] = running_sum(row[3], cost[rows & priced])
            row[4] += int((rows & priced).sum())
        errors = t.filter(equals(t, "status", "error"))
        if errors.num_rows:
            self._add_errors(errors)

    def _add_errors(self, errors: Any) -> None:
        kinds, which = codes(errors, "error_kind", "unknown")
        counts = np.bincount(which, minlength=len(kinds))
        for kind, n in zip(kinds, counts.tolist(), strict=True):
            self.kinds.setdefault(kind, [0, []])[0] += n
        if all(len(self.kinds[k][1]) >= EXAMPLES for k in kinds):
            return
        for row in errors.select(["id", "model", "error", "error_kind"]).to_pylist():
            examples = self.kinds[row["error_kind"] or "unknown"][1]
            if len(examples) < EXAMPLES:
                examples.append(row)

    def model_usage(self) -> list[ModelUsage]:
        return [
            ModelUsage(m, v[0], v[1], v[2], v[3] if v[4] else None)
            for m, v in sorted(self.models.items())
        ]

    def error_kinds(self) -> list[ErrorKind]:
        ordered = sorted(self.kinds.items(), key=lambda kv: -kv[1][0])
        return [ErrorKind(kind, n, examples) for kind, (n, examples) in ordered]
