"""The token estimator's written-out step is recursive least squares, step for step."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from batcher._estimate import TokenEstimator, features


class _Reference:
    """Textbook RLS with forgetting, in the general matrix form."""

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


_answers = st.lists(
    st.tuples(
        st.text(alphabet=st.sampled_from("ab 字語カ한"), max_size=400),
        st.sampled_from([0, 0, 85, 258, 1105]),
        st.integers(1, 5_000),
    ),
    min_size=1,
    max_size=60,
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
    assert estimator.samples == len(answers)
