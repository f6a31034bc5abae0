"""Token estimates that learn from the usage the provider reports.

Tokenizers differ, and text that is not English (CJK: about a token a character) breaks any fixed
characters-per-token rule. The estimate is linear in three features (a constant, the characters
outside CJK scripts, the CJK characters) with weights fitted online by recursive least squares to
the input tokens each answer reports; it starts from the common rule (4 characters a token, one a
CJK character) and needs a handful of answers to fit a model's tokenizer.
"""

from __future__ import annotations

import math
import re
from typing import TypeAlias

__all__ = ["Features", "TokenEstimator", "features"]

Features: TypeAlias = tuple[float, float, float]
"""A text's features: (1, characters outside CJK, CJK characters)."""

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def features(text: str) -> Features:
    """(1, characters outside CJK, CJK characters) of ``text``."""
    cjk = len(_CJK.findall(text))
    return 1.0, float(len(text) - cjk), float(cjk)


CALIBRATED = 20
"""Answers after which the estimate is trusted as it is."""


class TokenEstimator:
    """Online least squares (with slow forgetting) from text features to reported tokens."""

    def __init__(self, forgetting: float = 0.995) -> None:
        self.weights = [0.0, 0.25, 1.0]
        self._p = [[10.0, 0.0, 0.0], [0.0, 0.01, 0.0], [0.0, 0.0, 1.0]]
        self._lam = forgetting
        self.samples = 0

    def estimate(self, x: Features, *, cautious: bool = False) -> int:
        """Estimated tokens for features ``x`` (at least 1). ``cautious`` adds a quarter until
        the estimator has learned from ``CALIBRATED`` answers: before that, a tokenizer unlike
        the starting rule (another language, another vocabulary) would overshoot the TPM."""
        w = self.weights
        raw = w[0] * x[0] + w[1] * x[1] + w[2] * x[2]
        if cautious and self.samples < CALIBRATED:
            raw *= 1.25
        return max(1, math.ceil(raw))

    def learn(self, x: Features, reported: int) -> None:
        """Fit the weights a step towards ``reported`` tokens for features ``x``."""
        p, w, lam = self._p, self.weights, self._lam
        px = [p[i][0] * x[0] + p[i][1] * x[1] + p[i][2] * x[2] for i in range(3)]
        denom = lam + x[0] * px[0] + x[1] * px[1] + x[2] * px[2]
        gain = [v / denom for v in px]
        err = reported - (w[0] * x[0] + w[1] * x[1] + w[2] * x[2])
        self.weights = [w[i] + gain[i] * err for i in range(3)]
        xp = [x[0] * p[0][j] + x[1] * p[1][j] + x[2] * p[2][j] for j in range(3)]
        self._p = [[(p[i][j] - gain[i] * xp[j]) / lam for j in range(3)] for i in range(3)]
        self.samples += 1
