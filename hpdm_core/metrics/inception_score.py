"""Video Inception Score from class probabilities, as StyleGAN-V's `isv2048_ucf` computes it.

Rules (universome/stylegan-v, src/metrics/video_inception_score.py, `compute_isv`):
- shuffle the rows of the probability table with `np.random.RandomState(42).shuffle` before
  splitting, so the splits do not follow the order the videos were generated in;
- 10 splits, split i = rows [i * N // 10, (i + 1) * N // 10) of the shuffled table;
- per split exp(mean over rows of KL(p(y|x) || mean of the split's rows)); report the mean and
  the population std (np.std) of the 10 split scores.
Two details differ on purpose, both below the precision papers report: the table is float64
(StyleGAN-V keeps the detector's float32), and 0 * log 0 counts as 0 (StyleGAN-V would give NaN
for a probability that underflowed to exactly 0).
TGAN (pfnet-research/tgan, evaluation/calc_inception.py) scores all samples as one split, and TGANv2
(pfnet-research/tgan2, scripts/compute_inception_score.py) averages 10 runs of 2048 fresh samples
with splits=1; neither fits a fixed set of generated videos, so both protocols use StyleGAN-V's.
"""

from __future__ import annotations

import numpy as np

IS_SPLITS = 10
IS_SHUFFLE_SEED = 42


def shuffled_rows(probs: np.ndarray, seed: int) -> np.ndarray:
    """The rows of `probs` in the order `np.random.RandomState(seed).shuffle(probs)` leaves them."""
    # RandomState.permutation(n) shuffles arange(n) with the same draws shuffle() uses on the rows.
    return probs[np.random.RandomState(seed).permutation(len(probs))]


def split_score(part: np.ndarray) -> float:
    marginal = part.mean(axis=0, keepdims=True)
    # 0 * log 0 = 0: a class a sample never predicts adds nothing to its KL term.
    safe_part, safe_marginal = np.where(part > 0, part, 1), np.where(marginal > 0, marginal, 1)
    kl = np.where(part > 0, part * (np.log(safe_part) - np.log(safe_marginal)), 0)
    return float(np.exp(kl.sum(axis=1).mean()))


def inception_score(probs, splits: int = IS_SPLITS, shuffle_seed: int | None = IS_SHUFFLE_SEED) -> tuple[float, float]:
    """(mean, std) of the IS over `splits`; shuffle_seed=None splits in the given order (not a protocol)."""
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    if probs.ndim != 2 or n < splits:
        raise ValueError(f"need probabilities [N >= {splits}, classes], got {list(probs.shape)}")
    if shuffle_seed is not None:
        probs = shuffled_rows(probs, shuffle_seed)
    scores = [split_score(probs[i * n // splits:(i + 1) * n // splits]) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))
