"""The report's bounded summaries (``_cli/report_sketches.py``) against the same figures worked out
from every value: fed in pieces as a report feeds them a part at a time."""

from __future__ import annotations

import itertools
import math

import numpy as np

from batcher._cli.report_sketches import Gaps, Latencies, Thinned


def _pieces(values: np.ndarray, n: int = 7) -> list[np.ndarray]:
    return np.array_split(values, n)


def _nearest_rank(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def test_latencies_are_exact_while_few_and_within_half_a_percent_after() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(np.log(800), 0.9, size=30_000)
    exact, bucketed = Latencies(exact=100_000), Latencies(exact=1_000)
    for piece in _pieces(values):
        exact.add(piece)
        bucketed.add(piece)
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        truth = _nearest_rank(values, q)
        assert exact.percentile(q) == truth
        assert abs(bucketed.percentile(q) - truth) <= truth * 0.005, q
    assert bucketed.percentile(1.0) == values.max() and bucketed.count == len(values)
    bins = bucketed.bins()
    assert sum(c for *_, c in bins) == len(values) == sum(c for *_, c in exact.bins())
    # the same histogram but at the edges of its bins, where a bucket 1% wide may fall either way
    for (_, _, a), (_, _, b) in zip(exact.bins(), bins, strict=True):
        assert abs(a - b) <= max(30, a * 0.05)


def test_thinned_events_keep_every_one_while_few_and_exact_counts_after() -> None:
    rng = np.random.default_rng(2)
    times = np.sort(rng.uniform(1000.0, 5000.0, size=20_000))
    values = rng.exponential(2.0, size=len(times))
    few = Thinned(1000.0, 5000.0)
    few.add(times[:600], values[:600])
    assert not few.thinned and few.pairs() == list(zip(times[:600], values[:600], strict=True))
    assert few.cumulative()[-1] == (times[599], 600)

    many = Thinned(1000.0, 5000.0)
    for t, v in zip(_pieces(times), _pieces(values), strict=True):
        many.add(t, v)
    assert many.thinned and many.count == len(times)
    cumulative = many.cumulative()
    assert len(cumulative) == 600
    for end, count in cumulative:  # the count at each bin's end is every event up to it
        assert count == np.searchsorted(times, end, side="right")
    pairs = many.pairs()
    assert len(pairs) <= 600
    width = 4000.0 / 600
    for t, v in pairs:  # each bin's largest value, at its own time
        b = min(599, int((t - 1000.0) / width))
        inside = (times >= 1000.0 + b * width) & (times < 1000.0 + (b + 1) * width)
        assert v == values[inside].max() and values[times == t][0] == v


def test_gaps_are_found_to_the_second_whatever_the_order_of_the_parts() -> None:
    rng = np.random.default_rng(3)
    times = np.concatenate(
        [rng.uniform(0, 3600, 5000), rng.uniform(5000, 9000, 5000), rng.uniform(9299.5, 9400, 50)]
    )
    times = np.append(times, [20_000.0])
    ordered = np.sort(times)
    gaps = Gaps(float(ordered[0]), float(ordered[-1]), 300.0)
    for piece in _pieces(rng.permutation(times)):
        gaps.add(piece)
    expected = [(float(a), float(b)) for a, b in itertools.pairwise(ordered) if b - a >= 300.0]
    assert gaps.stretches() == expected and len(expected) >= 2
