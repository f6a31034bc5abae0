"""Token estimates that learn from the usage the provider reports.

Tokenizers differ, and text that is not English (CJK: about a token a character) breaks any fixed
characters-per-token rule. The estimate is linear in four features (a constant, the characters
outside CJK scripts, the CJK characters, the images' and files' tokens by the provider's own rule)
with weights fitted online by recursive least squares to the input tokens each answer reports; it
starts from the common rule (4 characters a token, one a CJK character, the provider's image rule
as it is) and needs a handful of answers to fit a model's tokenizer.
"""

from __future__ import annotations

import math
import re
from typing import TypeAlias

__all__ = ["Features", "TokenEstimator", "features"]

Features: TypeAlias = tuple[float, float, float, float]
"""A prompt's features: (1, characters outside CJK, CJK characters, media tokens by rule)."""

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def features(text: str, media_tokens: int = 0) -> Features:
    """(1, characters outside CJK, CJK characters, ``media_tokens``) of a prompt's ``text`` and the
    tokens its images and files count by the provider's rule."""
    cjk = len(_CJK.findall(text))
    return 1.0, float(len(text) - cjk), float(cjk), float(media_tokens)


_N = 4


CALIBRATED = 20
"""Answers after which the estimate is trusted as it is (by ``cautious`` estimates)."""
DOUBT = 1.0
"""How far a lane's charge allows the truth to exceed the estimate before any answer has
taught the estimator, and again after a 429 on tokens: a tokenizer unlike the starting rule
(another vocabulary, another script) counts half as much again."""
FORGET_DOUBT = 0.7
"""What each answer keeps of the doubt before it (at least its own shortfall): a well-fitted
estimator is trusted after a handful of answers, a noisy one stays doubted."""

_RULE = (0.0, 0.25, 1.0, 1.0)
"""The starting weights: the common rule (4 characters a token, a CJK character a token, the
provider's media rule as it is)."""
_PRIOR = (10.0, 0.01, 1.0, 1e-4)
"""The starting covariance's diagonal (nothing off it), and each diagonal entry's bound."""
_PRIOR_P = tuple(_PRIOR[i] if i == j else 0.0 for i in range(_N) for j in range(_N))
_HUGE = 10**15
"""Beyond any real prompt's tokens or features: a bound that keeps every sum finite."""


class TokenEstimator:
    """Online least squares (with slow forgetting) from text features to reported tokens.

    Forgetting divides the covariance by the factor on every answer; in a direction the prompts
    never excite (no CJK characters, no images, prompts all of one length) nothing shrinks it
    back, so unbounded it would grow as ``forgetting ** -n`` and overflow a float after about
    141,600 answers at 0.995 (then NaN, and every estimate after it). So each step bounds the
    covariance: no diagonal entry above its prior (the least certainty the estimator started
    with), scaling its row and column together (``D P D``, which keeps it positive
    semi-definite). A direction unexcited for long is then as open to learning as at the start,
    never more. Inputs that are not finite are ignored; a step that would make anything non-finite
    is undone and the covariance reset to its prior; an estimate that is not finite falls back
    to the starting rule.
    """

    def __init__(self, forgetting: float = 0.995) -> None:
        self.weights = list(_RULE)
        # The inverse-covariance estimate of RLS: how sure each starting weight is. Media tokens
        # come from the provider's published rule, so their weight starts nearly certain.
        # row-major 4x4, flat: ``learn`` runs once per answer, written out for speed
        self._p = list(_PRIOR_P)
        self._lam = forgetting
        self.samples = 0
        self.doubt = DOUBT
        """The share by which the truth may exceed an estimate (``charge`` adds it): at least
        the latest answer's shortfall, the ones before it fading by ``FORGET_DOUBT``."""

    def estimate(self, x: Features, *, cautious: bool = False) -> int:
        """Estimated tokens for features ``x`` (at least 1). ``cautious`` adds a quarter until
        the estimator has learned from ``CALIBRATED`` answers (a batch's size, a budget's
        reservation: before that, a tokenizer unlike the starting rule counts more)."""
        raw = self._raw(x)
        if not math.isfinite(raw):
            # never expected (``learn`` keeps the weights finite), but an estimate must not
            # crash a run: the starting rule, with the uncalibrated quarter
            raw = _rule(x) * 1.25
        elif cautious and self.samples < CALIBRATED:
            raw *= 1.25
        return _whole(raw)

    def charge(self, x: Features) -> int:
        """What a lane charges a request of features ``x`` until its answer says what it cost:
        the estimate plus the ``doubt``, so that a tokenizer the estimator has not learned yet
        does not overshoot the TPM with requests in flight (a slow start on tokens: the charge
        falls to the estimate as answers calibrate it)."""
        raw = self._raw(x)
        if not math.isfinite(raw):
            raw = _rule(x)  # as ``estimate``: never expected
        return _whole(raw * (1 + self.doubt))

    def _raw(self, x: Features) -> float:
        w = self.weights
        return w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3]

    def distrust(self) -> None:
        """A 429 on tokens: estimates may fall short again (the tokenizer, or the prompts,
        changed), so charges add at least the starting ``DOUBT`` until answers say."""
        self.doubt = max(self.doubt, DOUBT)

    def learn(self, x: Features, reported: int) -> None:
        """Fit the weights a step towards ``reported`` tokens for features ``x``."""
        x0, x1, x2, x3 = x
        if not (
            math.isfinite(reported)
            and reported >= 0
            and math.isfinite(x0 + x1 + x2 + x3)
            and max(abs(x0), abs(x1), abs(x2), abs(x3)) < _HUGE
        ):
            return  # not evidence of anything: a broken answer or a broken prompt's features
        # P stays symmetric (it starts diagonal; each step subtracts P x x' P / d), so x' P is
        # (P x)' and only P's upper triangle needs computing.
        p, w, lam = self._p, self.weights, self._lam
        a = p[0] * x0 + p[1] * x1 + p[2] * x2 + p[3] * x3
        b = p[4] * x0 + p[5] * x1 + p[6] * x2 + p[7] * x3
        c = p[8] * x0 + p[9] * x1 + p[10] * x2 + p[11] * x3
        d = p[12] * x0 + p[13] * x1 + p[14] * x2 + p[15] * x3
        denom = lam + x0 * a + x1 * b + x2 * c + x3 * d
        predicted = w[0] * x0 + w[1] * x1 + w[2] * x2 + w[3] * x3
        err = (reported - predicted) / denom
        short = min(1.0, (reported - predicted) / predicted) if predicted >= 1.0 else 0.0
        self.doubt = max(0.0, short, self.doubt * FORGET_DOUBT)
        weights = [w[0] + a * err, w[1] + b * err, w[2] + c * err, w[3] + d * err]
        f, inv = 1.0 / denom, 1.0 / lam
        ga, gb, gc = a * f, b * f, c * f
        p00, p11 = (p[0] - ga * a) * inv, (p[5] - gb * b) * inv
        p22, p33 = (p[10] - gc * c) * inv, (p[15] - d * d * f) * inv
        p01, p02, p03 = (p[1] - ga * b) * inv, (p[2] - ga * c) * inv, (p[3] - ga * d) * inv
        p12, p13, p23 = (p[6] - gb * c) * inv, (p[7] - gb * d) * inv, (p[11] - gc * d) * inv
        self.samples += 1
        if not (
            math.isfinite(weights[0] + weights[1] + weights[2] + weights[3])
            and 0.0 < p00 < _HUGE
            and 0.0 < p11 < _HUGE
            and 0.0 < p22 < _HUGE
            and 0.0 < p33 < _HUGE
            and math.isfinite(p01 + p02 + p03 + p12 + p13 + p23)
        ):
            self._p = list(_PRIOR_P)  # rounding broke the covariance: start its certainty over
            return
        self.weights = weights
        c0, c1, c2, c3 = _PRIOR
        if p00 > c0 or p11 > c1 or p22 > c2 or p33 > c3:
            # the bound: each diagonal entry at most its prior, row and column scaled together
            s0 = math.sqrt(c0 / p00) if p00 > c0 else 1.0
            s1 = math.sqrt(c1 / p11) if p11 > c1 else 1.0
            s2 = math.sqrt(c2 / p22) if p22 > c2 else 1.0
            s3 = math.sqrt(c3 / p33) if p33 > c3 else 1.0
            p00, p11, p22, p33 = p00 * s0 * s0, p11 * s1 * s1, p22 * s2 * s2, p33 * s3 * s3
            p01, p02, p03 = p01 * s0 * s1, p02 * s0 * s2, p03 * s0 * s3
            p12, p13, p23 = p12 * s1 * s2, p13 * s1 * s3, p23 * s2 * s3
        self._p = [
            p00, p01, p02, p03,
            p01, p11, p12, p13,
            p02, p12, p22, p23,
            p03, p13, p23, p33,
        ]  # fmt: skip


def _whole(raw: float) -> int:
    """A positive whole number of tokens, ``_HUGE`` at most."""
    return max(1, math.ceil(raw)) if raw < _HUGE else _HUGE


def _rule(x: Features) -> float:
    """The starting rule's estimate: 4 characters a token, one a CJK character, media by rule."""
    return _RULE[0] * x[0] + _RULE[1] * x[1] + _RULE[2] * x[2] + _RULE[3] * x[3]
