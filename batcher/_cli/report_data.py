"""What ``batcher report`` draws: a run directory read once, and the figures each section shows.

``read_run`` reads ``run.json``, the results and the attempt log (beside a live run, moving
nothing); the functions below sum them per lane, model, error kind and quota day. Times stay
epoch seconds here; ``report`` turns them into minutes since the first request and into HTML.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .._config.limits import Limits
from .._core.clock import QUOTA_TZ
from .._core.errors import UsageError
from .._rundir.manifest import Manifest
from .._rundir.results import iter_rows

__all__ = [
    "ErrorKind",
    "LaneLoad",
    "ModelUsage",
    "QuotaDay",
    "RunData",
    "Totals",
    "error_kinds",
    "finish_times",
    "lane_loads",
    "latencies",
    "latency_bins",
    "long_gaps",
    "model_usage",
    "outcomes",
    "percentile",
    "quota_days",
    "read_run",
    "totals",
    "waits",
]

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
ATTEMPT_COLUMNS = [
    "job_id",
    "attempt",
    "model",
    "endpoint",
    "sent_at",
    "waited_ms",
    "latency_ms",
    "outcome",
    "http_status",
    "input_tokens",
    "output_tokens",
    "retry_after",
    "error",
    "host",
]
EXAMPLES = 3
"""Examples kept per error kind."""
LONG_GAP = 300.0
"""Seconds without a request sent that the report lists as a wait (a quota reset, an outage)."""


@dataclass(frozen=True, slots=True)
class RunData:
    """What a report is drawn from: the results and the attempts (sorted by when they were sent)."""

    out: Path
    manifest: Manifest
    results: list[dict[str, Any]]
    attempts: list[dict[str, Any]]

    def span(self) -> tuple[float, float]:
        """(first, last) time a request was sent or a job finished; (0, 0) if none was."""
        times = [a["sent_at"] for a in self.attempts if a["sent_at"]]
        times += [r["finished_at"] for r in self.results if r["finished_at"]]
        return min(times, default=0.0), max(times, default=0.0)


def read_run(out: Path) -> RunData:
    """Read ``out``'s manifest, results and attempt log (beside a live run, moving nothing)."""
    manifest = Manifest.read(out)
    if manifest is None:
        raise UsageError(f"{out} holds no batcher run (no run.json)")
    results = list(iter_rows(out, RESULT_COLUMNS))
    attempts = sorted(
        iter_rows(out, ATTEMPT_COLUMNS, stream="attempts"), key=lambda a: a["sent_at"] or 0.0
    )
    return RunData(out, manifest, results, attempts)


# --- totals ---------------------------------------------------------------------------------------


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


def totals(data: RunData) -> Totals:
    ok = sum(1 for r in data.results if r["status"] == "ok")
    costs = [r["cost_usd"] for r in data.results if r["cost_usd"] is not None]
    return Totals(
        jobs=data.manifest.total,
        ok=ok,
        errors=len(data.results) - ok,
        remaining=max(0, data.manifest.total - len(data.results)),
        requests=len(data.attempts),
        rate_limited=sum(1 for a in data.attempts if a["http_status"] == 429),
        input_tokens=sum(r["input_tokens"] or 0 for r in data.results),
        output_tokens=sum(r["output_tokens"] or 0 for r in data.results),
        cost=sum(costs) if costs else None,
    )


def finish_times(data: RunData) -> list[float]:
    """When each job that has a result finished, in order."""
    return sorted(r["finished_at"] for r in data.results if r["finished_at"])


# --- pace against the limits ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaneLoad:
    """One lane's requests and input tokens sent, counted in buckets of ``width`` seconds."""

    endpoint: str
    """The pool endpoint, or ``default`` outside a pool."""
    model: str
    limits: Limits
    width: float
    centres: list[float]
    """The time at the middle of each bucket."""
    requests: list[int]
    tokens: list[int]
    rate_limited: list[float]
    """When each request answered 429 was sent."""
    retries: list[float]
    """When each retry was sent."""

    @property
    def name(self) -> str:
        return self.model if self.endpoint == "default" else f"{self.model} at {self.endpoint}"


def lane_loads(data: RunData, t0: float, t1: float) -> list[LaneLoad]:
    """Each lane's load from ``t0`` to ``t1`` in about 48 buckets, by endpoint then model."""
    # one lane per endpoint and model (one endpoint, "default", outside a pool)
    by_lane: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for a in data.attempts:
        by_lane[(a["endpoint"] or "default", a["model"])].append(a)
    span = max(t1 - t0, 1.0)
    width = max(1.0, span / 48)  # seconds per bucket: about 48 points across the run
    buckets = math.floor(span / width) + 1
    loads = []
    for (endpoint, model), attempts in sorted(by_lane.items()):
        # run.json holds the run's own limits, and each of a pool's endpoints' (a run.json
        # written before it kept them has none for them)
        limits = data.manifest.limits_for(model, None if endpoint == "default" else endpoint)
        reqs, toks = [0] * buckets, [0] * buckets
        for a in attempts:
            b = min(buckets - 1, int((a["sent_at"] - t0) / width))
            reqs[b] += 1
            toks[b] += a["input_tokens"] or 0
        loads.append(
            LaneLoad(
                endpoint,
                model,
                limits,
                width,
                [t0 + (b + 0.5) * width for b in range(buckets)],
                reqs,
                toks,
                [a["sent_at"] for a in attempts if a["http_status"] == 429],
                [a["sent_at"] for a in attempts if (a["attempt"] or 1) > 1],
            )
        )
    return loads


# --- latency --------------------------------------------------------------------------------------


def latencies(data: RunData) -> list[float]:
    """Milliseconds to answer, sorted: of the successful attempts, else of the results."""
    values = sorted(a["latency_ms"] for a in data.attempts if a["outcome"] == "ok")
    if not values:
        values = sorted(r["latency_ms"] for r in data.results if r["latency_ms"])
    return values


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values``, by nearest rank."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def latency_bins(values: Sequence[float], n: int = 24) -> list[tuple[float, float, int]]:
    """(from, to, count) of ``n`` equal bins up to the 99th percentile of sorted ``values``; the
    last bin holds everything above it."""
    top = percentile(values, 0.99) or 1.0
    step = top / n
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int(v / step))] += 1
    return [(i * step, (i + 1) * step, c) for i, c in enumerate(counts)]


# --- models and errors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's jobs and tokens; ``cost`` is None if none of its results has a price."""

    model: str
    jobs: int
    input_tokens: int
    output_tokens: int
    cost: float | None


def model_usage(data: RunData) -> list[ModelUsage]:
    """Per model (``?`` for results without one), by name."""
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
    priced: set[str] = set()
    for r in data.results:
        row = rows[r["model"] or "?"]
        row[0] += 1
        row[1] += r["input_tokens"] or 0
        row[2] += r["output_tokens"] or 0
        if r["cost_usd"] is not None:
            row[3] += r["cost_usd"]
            priced.add(r["model"] or "?")
    return [
        ModelUsage(m, int(v[0]), int(v[1]), int(v[2]), v[3] if m in priced else None)
        for m, v in sorted(rows.items())
    ]


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """The jobs that ended in one kind of error: how many, and the first few."""

    kind: str
    count: int
    examples: list[dict[str, Any]]


def error_kinds(data: RunData) -> list[ErrorKind]:
    """Each kind of error the jobs ended in, the commonest first."""
    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in data.results:
        if r["status"] == "error":
            kinds[r["error_kind"] or "unknown"].append(r)
    ordered = sorted(kinds.items(), key=lambda kv: -len(kv[1]))
    return [ErrorKind(kind, len(rows), rows[:EXAMPLES]) for kind, rows in ordered]


def outcomes(data: RunData) -> Counter[str]:
    """Requests by how they ended: the outcome and the HTTP status (or ``no answer``)."""
    return Counter(
        f"{a['outcome']} ({a['http_status'] if a['http_status'] is not None else 'no answer'})"
        for a in data.attempts
    )


# --- quota days and waits -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuotaDay:
    """One model's requests on one quota day (Pacific time) against its requests-per-day limit."""

    day: str
    model: str
    requests: int
    ok: int
    rate_limited: int
    rpd: int | None


def quota_days(data: RunData) -> list[QuotaDay]:
    """By day, then model."""
    days: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for a in data.attempts:
        day = datetime.fromtimestamp(a["sent_at"], QUOTA_TZ).strftime("%Y-%m-%d")
        row = days[(day, a["model"])]
        row[0] += 1
        row[1] += a["outcome"] == "ok"
        row[2] += a["http_status"] == 429
    return [
        QuotaDay(day, model, v[0], v[1], v[2], data.manifest.limits_for(model).rpd)
        for (day, model), v in sorted(days.items())
    ]


def waits(data: RunData) -> list[tuple[float, float]]:
    """(when sent, seconds it waited for its lane) of each request."""
    return [(a["sent_at"], (a["waited_ms"] or 0) / 1000) for a in data.attempts]


def long_gaps(data: RunData) -> list[tuple[float, float]]:
    """(from, to) of each stretch of ``LONG_GAP`` or more without a request sent."""
    sent = [a["sent_at"] for a in data.attempts]
    return [
        (before, after) for before, after in itertools.pairwise(sent) if after - before >= LONG_GAP
    ]
