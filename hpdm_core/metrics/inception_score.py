"""Inception Score from class probabilities: exp(E_x KL(p(y|x) || p(y))), mean and std over splits,
split as StyleGAN-V and TGAN do (consecutive equal parts, no shuffling)."""

from __future__ import annotations

import numpy as np


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    if probs.ndim != 2 or n < splits:
        raise ValueError(f"need probabilities [N >= {splits}, classes], got {list(probs.shape)}")
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: a class a sample never predicts adds nothing to its KL term.
        kl = np.where(part > 0, part * (np.log(np.where(part > 0, part, 1)) - np.log(np.where(marginal > 0, marginal, 1))), 0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
