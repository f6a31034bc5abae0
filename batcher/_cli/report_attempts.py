"""The attempt log's part of ``batcher report``: every request summed a Parquet part at a time,
per lane (endpoint and model), outcome and quota day, with the waits and the long pauses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from .._config.limits import Limits
from .._core.clock import QUOTA_TZ
from .._rundir.manifest import Manifest
from .report_sketches import Gaps, Latencies, Thinned, codes, equals, floats, running_sum

__all__ = ["ATTEMPT_COLUMNS", "AttemptSums", "LaneLoad", "QuotaDay"]

ATTEMPT_COLUMNS = [
    "attempt",
    "model",
    "endpoint",
    "sent_at",
    "waited_ms",
    "latency_ms",
    "outcome",
    "http_status",
    "input_tokens",
]
LONG_GAP = 300.0
"""Seconds without a request sent that the report lists as a wait (a quota reset, an outage)."""
LANE_BUCKETS = 48
"""Buckets a lane's requests and tokens per minute are counted in, across the run."""


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
    rate_limited: Thinned
    """When each request answered 429 was sent."""
    retries: Thinned
    """When each retry was sent."""

    @property
    def name(self) -> str:
        return self.model if self.endpoint == "default" else f"{self.model} at {self.endpoint}"


@dataclass(frozen=True, slots=True)
class QuotaDay:
    """One model's requests on one quota day (Pacific time) against its requests-per-day limit."""

    day: str
    model: str
    requests: int
    ok: int
    rate_limited: int
    rpd: int | None


@dataclass(slots=True)
class _Lane:
    """One lane's counts so far."""

    requests: Any
    tokens: Any
    rate_limited: Thinned
    retries: Thinned


class AttemptSums:
    """The attempt log's sums, a table at a time."""

    def __init__(self, manifest: Manifest, t0: float, t1: float) -> None:
        self.manifest, self.t0, self.t1 = manifest, t0, t1
        self.count = self.rate_limited = 0
        self.total_wait = self.longest_wait = 0.0
        self.latencies = Latencies()
        self.waits = Thinned(t0, t1)
        self.gaps = Gaps(t0, t1, LONG_GAP)
        span = max(t1 - t0, 1.0)
        self.width = max(1.0, span / LANE_BUCKETS)
        """Seconds per bucket of a lane's load: about ``LANE_BUCKETS`` across the run."""
        self.buckets = math.floor(span / self.width) + 1
        self.lanes: dict[tuple[str, str], _Lane] = {}
        # (outcome, HTTP status) -> [requests, when the first was sent]
        self.outcomes: dict[tuple[str, int | None], list[Any]] = {}
        # (quota day, model) -> [requests, ok, 429s]
        self.quota: dict[tuple[str, str], list[int]] = {}
        # the quota days from the run's first to the day after its last (a request logged
        # since the span was read may fall on it), and when each after the first begins
        first = datetime.fromtimestamp(t0, QUOTA_TZ).date()
        last = datetime.fromtimestamp(t1, QUOTA_TZ).date() + timedelta(days=1)
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        self.day_names = [d.isoformat() for d in days]
        self.day_starts = np.array([_midnight(d) for d in days[1:]])

    def add(self, t: Any) -> None:
        if not t.num_rows:
            return
        self.count += t.num_rows
        limited = floats(t, "http_status") == 429
        self.rate_limited += int(limited.sum())
        ok = equals(t, "outcome", "ok")
        sent = floats(t, "sent_at")
        timed = ~np.isnan(sent)
        waited = np.nan_to_num(floats(t, "waited_ms")) / 1000
        self.total_wait = running_sum(self.total_wait, waited)
        if len(waited):
            self.longest_wait = max(self.longest_wait, float(waited.max()))
        self.waits.add(sent[timed], waited[timed])
        self.gaps.add(sent[timed])
        latency = floats(t, "latency_ms")
        self.latencies.add(latency[ok & ~np.isnan(latency)])
        self._add_outcomes(t, sent)
        models, model = codes(t, "model", "?")
        endpoints, endpoint = codes(t, "endpoint", "default")
        self._add_lanes(t, sent, timed, limited, models, model, endpoints, endpoint)
        self._add_days(sent, timed, ok, limited, models, model)

    def _add_outcomes(self, t: Any, sent: Any) -> None:
        import pyarrow as pa

        groups = (
            t.append_column("when", pa.array(np.nan_to_num(sent, nan=np.inf)))
            .group_by(["outcome", "http_status"], use_threads=False)
            .aggregate([([], "count_all"), ("when", "min")])
        )
        for g in groups.to_pylist():
            row = self.outcomes.setdefault((g["outcome"], g["http_status"]), [0, math.inf])
            row[0] += g["count_all"]
            row[1] = min(row[1], g["when_min"])

    def _add_lanes(
        self,
        t: Any,
        sent: Any,
        timed: Any,
        limited: Any,
        models: list[str],
        model: Any,
        endpoints: list[str],
        endpoint: Any,
    ) -> None:
        bucket = np.clip(((sent - self.t0) / self.width), 0, self.buckets - 1)
        bucket = np.where(timed, bucket, 0).astype(np.int64)
        tokens = np.nan_to_num(floats(t, "input_tokens"))
        retry = np.nan_to_num(floats(t, "attempt"), nan=1.0) > 1
        lane = endpoint * len(models) + model
        for code in np.unique(lane[timed]).tolist():
            key = (endpoints[code // len(models)], models[code % len(models)])
            if key not in self.lanes:
                self.lanes[key] = _Lane(
                    np.zeros(self.buckets, np.int64),
                    np.zeros(self.buckets),
                    Thinned(self.t0, self.t1),
                    Thinned(self.t0, self.t1),
                )
            acc, rows = self.lanes[key], timed & (lane == code)
            acc.requests += np.bincount(bucket[rows], minlength=self.buckets)
            acc.tokens += np.bincount(bucket[rows], weights=tokens[rows], minlength=self.buckets)
            acc.rate_limited.add(sent[rows & limited])
            acc.retries.add(sent[rows & retry])

    def _add_days(
        self, sent: Any, timed: Any, ok: Any, limited: Any, models: list[str], model: Any
    ) -> None:
        day = np.searchsorted(self.day_starts, sent[timed], side="right")
        key = day * len(models) + model[timed]
        codes, which = np.unique(key, return_inverse=True)
        requests = np.bincount(which)
        oks = np.bincount(which, weights=ok[timed])
        limits = np.bincount(which, weights=limited[timed])
        for i, code in enumerate(codes.tolist()):
            row = self.quota.setdefault(
                (self.day_names[code // len(models)], models[code % len(models)]), [0, 0, 0]
            )
            row[0] += int(requests[i])
            row[1] += int(oks[i])
            row[2] += int(limits[i])

    def lane_loads(self) -> list[LaneLoad]:
        centres = [self.t0 + (b + 0.5) * self.width for b in range(self.buckets)]
        return [
            LaneLoad(
                endpoint,
                model,
                # run.json holds the run's own limits, and each of a pool's endpoints' (a
                # run.json written before it kept them has none for them)
                self.manifest.limits_for(model, None if endpoint == "default" else endpoint),
                self.width,
                centres,
                acc.requests.tolist(),
                [round(x) for x in acc.tokens.tolist()],
                acc.rate_limited,
                acc.retries,
            )
            for (endpoint, model), acc in sorted(self.lanes.items())
        ]

    def outcome_counts(self) -> list[tuple[str, int]]:
        ordered = sorted(self.outcomes.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        return [
            (f"{outcome} ({status if status is not None else 'no answer'})", n)
            for (outcome, status), (n, _) in ordered
        ]

    def quota_days(self) -> list[QuotaDay]:
        return [
            QuotaDay(day, model, n, ok, limited, self.manifest.limits_for(model).rpd)
            for (day, model), (n, ok, limited) in sorted(self.quota.items())
        ]


def _midnight(day: date) -> float:
    """When ``day`` begins, Pacific time, as epoch seconds."""
    return datetime(day.year, day.month, day.day, tzinfo=QUOTA_TZ).timestamp()
