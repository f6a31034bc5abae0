"""Bounded summaries of a run's many values, for ``batcher report``: whatever the number of rows,
each holds a fixed number of figures, fed one Parquet part at a time (numpy arrays).

``Thinned`` keeps events over time as a chart draws them (every one while they are few, else per
bin of a fixed count), ``Latencies`` answer times for percentiles and a histogram, ``Gaps`` the
long stretches without a request; the functions at the end turn a part's Arrow columns into the
numpy arrays they are fed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "POINTS",
    "Gaps",
    "Latencies",
    "Thinned",
    "codes",
    "equals",
    "floats",
    "running_sum",
    "truthy",
]

POINTS = 600
"""Points a series is drawn with at most (a chart is 640 pixels wide)."""


class Thinned:
    """Events at times in ``[t0, t1]``, each with a value (its time, if none is given), as a chart
    draws them: every one while there are at most ``points``, else, for each of ``points`` equal
    bins of the span, how many fell in it and its largest value with that value's time.

    Times outside the span (rows written since it was measured) count in the bin at its edge."""

    def __init__(self, t0: float, t1: float, points: int = POINTS) -> None:
        self.t0 = t0
        self.points = points
        self.width = max(t1 - t0, 1e-6) / points
        self.count = 0
        # every event while count <= points: (times, values) arrays in the order added
        self._exact: list[tuple[Any, Any]] | None = []
        self._n = np.zeros(points, np.int64)  # events per bin
        self._top = np.full(points, -np.inf)  # the largest value in each bin
        self._at = np.zeros(points)  # the time of that value

    @property
    def thinned(self) -> bool:
        """Whether there were too many events to keep each: the figures are per bin."""
        return self._exact is None

    def add(self, times: Any, values: Any = None) -> None:
        """Count events at ``times`` (a float array) with ``values`` (default: the times)."""
        if len(times) == 0:
            return
        values = times if values is None else values
        self.count += len(times)
        if self._exact is not None:
            self._exact.append((times, values))
            if self.count > self.points:
                self._exact = None
        b = np.clip(((times - self.t0) / self.width).astype(np.int64), 0, self.points - 1)
        self._n += np.bincount(b, minlength=self.points)
        order = np.lexsort((values, b))  # by bin, then value: each bin's largest comes last
        last = order[np.append(b[order][1:] != b[order][:-1], True)]
        bins = b[last]
        higher = values[last] > self._top[bins]
        self._top[bins[higher]] = values[last][higher]
        self._at[bins[higher]] = times[last][higher]

    def _sorted(self) -> tuple[Any, Any]:
        assert self._exact is not None
        if not self._exact:
            return np.zeros(0), np.zeros(0)
        times = np.concatenate([t for t, _ in self._exact])
        values = np.concatenate([v for _, v in self._exact])
        order = np.argsort(times, kind="stable")
        return times[order], values[order]

    def pairs(self) -> list[tuple[float, float]]:
        """(time, value) of every event in time order; thinned, of each bin's largest value."""
        if self._exact is not None:
            times, values = self._sorted()
        else:
            full = self._n > 0
            times, values = self._at[full], self._top[full]
        return list(zip(times.tolist(), values.tolist(), strict=True))

    def times(self) -> list[float]:
        """When each event came, in order; thinned, one time in each bin that had any."""
        return [t for t, _ in self.pairs()]

    def cumulative(self) -> list[tuple[float, int]]:
        """(time, events up to it): at each event; thinned, at the end of each bin."""
        if self._exact is not None:
            times, _ = self._sorted()
            return [(t, i + 1) for i, t in enumerate(times.tolist())]
        ends = self.t0 + self.width * np.arange(1, self.points + 1)
        return list(zip(ends.tolist(), np.cumsum(self._n).tolist(), strict=True))


class Latencies:
    """Milliseconds to answer, for percentiles and a histogram. Every value is kept while there
    are at most ``exact``; past that they are counted in buckets 1% wide on a log scale, so a
    percentile is the middle of its bucket: within 0.5% of the value by nearest rank."""

    LOW = 0.01
    """Milliseconds where the first bucket starts (anything below counts in a bucket of its own)."""
    RATIO = 1.01
    BUCKETS = 2600
    """Buckets up to about 0.01 x 1.01^2600, some 50 years: enough for any answer."""

    def __init__(self, exact: int = 100_000) -> None:
        self.exact = exact
        self.count = 0
        self.max = -math.inf
        self.min = math.inf
        self._values: list[Any] | None = []  # every value while count <= exact
        self._sorted_values: Any = None  # those values sorted, once asked for
        self._counts = np.zeros(self.BUCKETS, np.int64)

    def add(self, values: Any) -> None:
        """Count ``values`` (a float array without NaN)."""
        if len(values) == 0:
            return
        self.count += len(values)
        self.max = max(self.max, float(values.max()))
        self.min = min(self.min, float(values.min()))
        self._sorted_values = None
        if self._values is not None:
            self._values.append(values)
            if self.count <= self.exact:
                return
            values = np.concatenate(self._values)
            self._values = None
        self._counts += np.bincount(self._bucket(values), minlength=self.BUCKETS)

    def _bucket(self, values: Any) -> Any:
        # bucket 0: below LOW; bucket i >= 1: [LOW * RATIO^(i-1), LOW * RATIO^i)
        with np.errstate(divide="ignore", invalid="ignore"):
            i = np.floor(np.log(np.maximum(values, self.LOW) / self.LOW) / math.log(self.RATIO))
        i = np.where(values < self.LOW, 0, i + 1)
        return np.clip(i, 0, self.BUCKETS - 1).astype(np.int64)

    def _middles(self) -> Any:
        """The value each bucket stands for: its geometric middle, within the values seen."""
        i = np.arange(self.BUCKETS)
        middles = self.LOW * self.RATIO ** (i - 0.5)
        middles[0] = self.min
        return np.clip(middles, self.min, self.max)

    def _sorted(self) -> Any:
        assert self._values is not None
        if self._sorted_values is None:
            self._sorted_values = np.sort(np.concatenate(self._values or [np.zeros(0)]))
        return self._sorted_values

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1), by nearest rank."""
        rank = min(self.count - 1, max(0, math.ceil(q * self.count) - 1))
        if q >= 1.0:
            return self.max
        if self._values is not None:
            return float(self._sorted()[rank])
        bucket = int(np.searchsorted(np.cumsum(self._counts), rank, side="right"))
        return float(self._middles()[bucket])

    def bins(self, n: int = 24) -> list[tuple[float, float, int]]:
        """(from, to, count) of ``n`` equal bins up to the 99th percentile; the last bin holds
        everything above it."""
        top = self.percentile(0.99) or 1.0
        step = top / n
        if self._values is not None:
            values, weights = self._sorted(), None
        else:
            full = self._counts > 0
            values, weights = self._middles()[full], self._counts[full]
        which = np.minimum(n - 1, (values / step).astype(np.int64))
        counts = np.bincount(which, weights=weights, minlength=n).astype(np.int64)
        return [(i * step, (i + 1) * step, int(c)) for i, c in enumerate(counts.tolist())]


class Gaps:
    """The stretches of ``least`` seconds or more without an event, exactly, in bins of at most
    half of ``least`` over ``[t0, t1]``: no such stretch fits inside one bin, so each lies
    between the last event of one bin that had any and the first of the next. (Over a span of
    years the bins, a million at most, grow wider and a stretch inside one goes unseen.)"""

    def __init__(self, t0: float, t1: float, least: float) -> None:
        self.t0 = t0
        self.least = least
        span = max(t1 - t0, 0.0)
        self.width = max(least / 2, span / 1_000_000)
        bins = int(span / self.width) + 1
        self._first = np.full(bins, np.inf)  # each bin's first and last event
        self._last = np.full(bins, -np.inf)

    def add(self, times: Any) -> None:
        b = np.clip(((times - self.t0) / self.width).astype(np.int64), 0, len(self._first) - 1)
        np.minimum.at(self._first, b, times)
        np.maximum.at(self._last, b, times)

    def stretches(self) -> list[tuple[float, float]]:
        """(from, to) of each stretch, in order."""
        full = np.flatnonzero(self._last >= self._first)
        before, after = self._last[full[:-1]], self._first[full[1:]]
        long = after - before >= self.least
        return list(zip(before[long].tolist(), after[long].tolist(), strict=True))


# --- a part's columns as numpy -------------------------------------------------------------------


def floats(t: Any, name: str) -> Any:
    """Column ``name`` of ``t`` as float64, NaN where null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(t[name], pa.float64()).to_numpy()


def codes(t: Any, name: str, empty: str) -> tuple[list[str], Any]:
    """Column ``name`` of ``t`` as (its distinct values, each row's index among them); null and
    the empty string read as ``empty``, which may then appear more than once."""
    import pyarrow.compute as pc

    coded = pc.dictionary_encode(t[name].combine_chunks(), null_encoding="encode")
    values = [v or empty for v in coded.dictionary.to_pylist()]
    return values, coded.indices.to_numpy(zero_copy_only=False)


def running_sum(start: float, values: Any) -> float:
    """``start`` plus ``values`` one at a time in order, as Python adds them (not pairwise): the
    sums a run prints come out the same."""
    return float(np.add.accumulate(np.concatenate(([start], values)))[-1]) if len(values) else start


def equals(t: Any, name: str, value: str) -> Any:
    """Whether each row's ``name`` is ``value`` (false where null), as a numpy bool array."""
    import pyarrow.compute as pc

    return pc.coalesce(pc.equal(t[name], value), False).to_numpy(zero_copy_only=False)


def truthy(values: Any) -> Any:
    """The values neither NaN (null) nor 0."""
    return values[~np.isnan(values) & (values != 0)]
