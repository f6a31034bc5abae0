"""The token estimator: its written-out step is recursive least squares, step for step, with the
covariance bounded; estimates stay finite and positive over millions of answers."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher._admission.estimate import TokenEstimator, features

PRIOR = (10.0, 0.01, 1.0, 1e-4)


class _Reference:
    """Textbook RLS with forgetting, in the general matrix form, then the bound: P := D P D with
    D diagonal, D_ii = sqrt(prior_i / P_ii) where P_ii is over its prior."""

    def __init__(self, weights: list[float], p: list[list[float]], lam: float) -> None:
        self.w, self.p, self.lam = list(weights), [list(r) for r in p], lam

    def learn(self, x: tuple[float, ...], y: float) -> None:
        r = range(len(x))
        px = [sum(self.p[i][k] * x[k] for k in r) for i in r]
        denom = self.lam + sum(x[k] * px[k] for k in r)
        gain = [v / denom for v in px]
        err = y - sum(self.w[k] * x[k] for k in r)
        self.w = [self.w[i] + gain[i] * err for i in r]
        xp = [sum(x[k] * self.p[k][j] for k in r) for j in r]
        self.p = [[(self.p[i][j] - gain[i] * xp[j]) / self.lam for j in r] for i in r]
        d = [math.sqrt(PRIOR[i] / self.p[i][i]) if self.p[i][i] > PRIOR[i] else 1.0 for i in r]
        self.p = [[d[i] * self.p[i][j] * d[j] for j in r] for i in r]


_answers = st.lists(
    st.tuples(
        st.text(alphabet=st.sampled_from("ab 字語カ한"), max_size=400),
        st.sampled_from([0, 0, 85, 258, 1105]),
        st.integers(1, 5_000),
    ),
    min_size=1,
    max_size=300,
)


@given(_answers)
def test_each_step_is_the_textbook_recursive_least_squares_step(answers: list) -> None:
    estimator = TokenEstimator()
    p = [[estimator._p[4 * i + j] for j in range(4)] for i in range(4)]
    reference = _Reference(estimator.weights, p, estimator._lam)
    for text, media, reported in answers:
        x = features(text, media)
        estimator.learn(x, reported)
        reference.learn(x, reported)
        for got, want in zip(estimator.weights, reference.w, strict=True):
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
        for i in range(4):
            for j in range(4):
                want = reference.p[i][j]
                assert math.isclose(estimator._p[4 * i + j], want, rel_tol=1e-7, abs_tol=1e-12)
    assert estimator.samples == len(answers)


def _bounded(estimator: TokenEstimator) -> None:
    p = estimator._p
    assert all(math.isfinite(v) for v in p) and all(math.isfinite(w) for w in estimator.weights)
    for i in range(4):
        assert 0.0 < p[5 * i] <= PRIOR[i] * (1 + 1e-12)
        for j in range(4):
            assert p[4 * i + j] == p[4 * j + i]
            assert p[4 * i + j] ** 2 <= p[5 * i] * p[5 * j] * (1 + 1e-9)  # positive semi-definite


def test_a_million_english_answers_stay_finite_and_keep_estimating() -> None:
    """The overnight run that died at about 141,600 answers: English only, so the CJK and media
    directions are never excited, and the forgetting factor alone would overflow them."""
    estimator = TokenEstimator()
    rng = random.Random(7)
    lengths = [rng.randrange(20, 4000) for _ in range(1024)]
    learn = estimator.learn
    for n in range(1_000_000):  # seven times the old overflow point
        chars = lengths[n & 1023]
        learn((1.0, float(chars), 0.0, 0.0), chars // 3 + 7)  # a tokenizer of 3 chars a token
    _bounded(estimator)
    for chars in (1, 100, 3999, 100_000):
        assert abs(estimator.estimate((1.0, float(chars), 0.0, 0.0)) - (chars / 3 + 7)) <= 2
    # the unexcited directions are as open to learning as at the start, never more: a first
    # CJK prompt moves the CJK weight as it would have on the first answer of a run
    assert 1 <= estimator.estimate((1.0, 0.0, 500.0, 0.0)) < 10**6
    assert estimator.estimate((1.0, 0.0, 0.0, 258.0)) >= 1


_pattern = st.tuples(
    st.sampled_from([0.0, 1.0]),  # the constant feature is always 1; 0 here is a broken input
    st.integers(0, 50_000),
    st.sampled_from([0, 0, 0, 30, 2000]),
    st.sampled_from([0, 0, 0, 258, 1105]),
    st.floats(0.0, 4.0),  # reported tokens per rule token: any tokenizer, even a silly one
)


@settings(max_examples=8, deadline=None)
@given(st.lists(_pattern, min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_any_answers_for_a_long_time_keep_every_estimate_finite_and_positive(
    patterns: list, seed: int
) -> None:
    """Prompts cycling through a few shapes (most features never excited, some prompts all of
    one length), for 150,000 answers each: the covariance stays bounded and every estimate is a
    positive whole number of tokens."""
    estimator = TokenEstimator()
    rng = random.Random(seed)
    shapes = [
        ((one, float(c), float(k), float(m)), max(0, round(ratio * (c / 4 + k + m))))
        for one, c, k, m, ratio in patterns
    ]
    for _ in range(150_000):  # a million and more steps in all
        x, reported = shapes[rng.randrange(len(shapes))]
        estimator.learn(x, reported)
    _bounded(estimator)
    for x, _ in shapes:
        got = estimator.estimate(x)
        assert isinstance(got, int) and got >= 1
        assert estimator.estimate(x, cautious=True) >= 1
        assert estimator.charge(x) >= 1
    assert 0.0 <= estimator.doubt <= 1.0


def test_nothing_it_is_fed_makes_an_estimate_fail() -> None:
    estimator = TokenEstimator()
    for x, reported in [
        ((1.0, math.nan, 0.0, 0.0), 10),
        ((1.0, math.inf, 0.0, 0.0), 10),
        ((1.0, 10.0, 0.0, 0.0), math.nan),
        ((1.0, 10.0, 0.0, 0.0), -5),
        ((1.0, 1e300, 0.0, 0.0), 10),
    ]:
        estimator.learn(x, reported)  # type: ignore[arg-type]
    assert estimator.samples == 0  # none of those is evidence
    assert estimator.weights == [0.0, 0.25, 1.0, 1.0]
    estimator.weights = [math.nan, math.inf, 0.0, 0.0]  # however it got there
    assert estimator.estimate((1.0, 400.0, 0.0, 0.0)) == 125  # the starting rule, and a quarter
    assert estimator.charge((1.0, 400.0, 0.0, 0.0)) == 200  # the starting rule, doubted
    assert estimator.estimate((1.0, math.inf, 0.0, 0.0)) >= 1


def test_a_charge_doubts_the_estimate_until_answers_say_how_far_estimates_fall_short() -> None:
    """Before any answer a lane's charge is double the estimate (a tokenizer unlike the rule
    may count up to twice as much); each answer keeps at least its own shortfall and lets the
    doubt before it fade, so a fitted tokenizer is trusted within a handful of answers; a 429 on
    tokens brings the doubt back."""
    estimator = TokenEstimator()
    x = features("word " * 400)  # 500 tokens by the rule
    assert (estimator.estimate(x), estimator.charge(x)) == (500, 1_000)
    estimator.learn(x, 900)  # the server's tokenizer counts 1.8 times the rule
    assert estimator.doubt == pytest.approx(0.8)  # that answer's shortfall
    for _ in range(12):
        estimator.learn(x, 900)
    assert estimator.estimate(x) == pytest.approx(900, rel=0.01)
    assert estimator.charge(x) <= 900 * 1.02  # learned, and trusted
    estimator.distrust()
    assert estimator.charge(x) == pytest.approx(1_800, rel=0.01)
