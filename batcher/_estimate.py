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
"""Answers after which the estimate is trusted as it is."""


class TokenEstimator:
    """Online least squares (with slow forgetting) from text features to reported tokens."""

    def __init__(self, forgetting: float = 0.995) -> None:
        self.weights = [0.0, 0.25, 1.0, 1.0]
        # The inverse-covariance estimate of RLS: how sure each starting weight is. Media tokens
        # come from the provider's published rule, so their weight starts nearly certain.
        prior = (10.0, 0.01, 1.0, 1e-4)
        # row-major 4x4, flat: ``learn`` runs once per answer, written out for speed
        self._p = [prior[i] if i == j else 0.0 for i in range(_N) for j in range(_N)]
        self._lam = forgetting
        self.samples = 0

    def estimate(self, x: Features, *, cautious: bool = False) -> int:
        """Estimated tokens for features ``x`` (at least 1). ``cautious`` adds a quarter until
        the estimator has learned from ``CALIBRATED`` answers: before that, a tokenizer unlike
        the starting rule (another language, another vocabulary) would overshoot the TPM."""
        w = self.weights
        raw = w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3]
        if cautious and self.samples < CALIBRATED:
            raw *= 1.25
        return max(1, math.ceil(raw))

    def learn(self, x: Features, reported: int) -> None:
        """Fit the weights a step towards ``reported`` tokens for features ``x``."""
        # P stays symmetric (it starts diagonal; each step subtracts P x x' P / d), so x' P is
        # (P x)' and only P's upper triangle needs computing.
        p, w, lam = self._p, self.weights, self._lam
        x0, x1, x2, x3 = x
        a = p[0] * x0 + p[1] * x1 + p[2] * x2 + p[3] * x3
        b = p[4] * x0 + p[5] * x1 + p[6] * x2 + p[7] * x3
        c = p[8] * x0 + p[9] * x1 + p[10] * x2 + p[11] * x3
        d = p[12] * x0 + p[13] * x1 + p[14] * x2 + p[15] * x3
        denom = lam + x0 * a + x1 * b + x2 * c + x3 * d
        err = (reported - (w[0] * x0 + w[1] * x1 + w[2] * x2 + w[3] * x3)) / denom
        self.weights = [w[0] + a * err, w[1] + b * err, w[2] + c * err, w[3] + d * err]
        f, inv = 1.0 / denom, 1.0 / lam
        ga, gb, gc = a * f, b * f, c * f
        p01, p02, p03 = (p[1] - ga * b) * inv, (p[2] - ga * c) * inv, (p[3] - ga * d) * inv
        p12, p13, p23 = (p[6] - gb * c) * inv, (p[7] - gb * d) * inv, (p[11] - gc * d) * inv
        self._p = [
            (p[0] - ga * a) * inv, p01, p02, p03,
            p01, (p[5] - gb * b) * inv, p12, p13,
            p02, p12, (p[10] - gc * c) * inv, p23,
            p03, p13, p23, (p[15] - d * d * f) * inv,
        ]  # fmt: skip
        self.samples += 1
