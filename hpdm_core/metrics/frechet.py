"""Fréchet distance between Gaussians fitted to features, with mergeable float64 statistics.

FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)). The trace of sqrtm(S1 S2) equals the sum of the
square roots of the eigenvalues of A S2 A with A = sqrt(S1): that matrix is symmetric positive
semi-definite, so two symmetric eigen-decompositions give a real, finite answer even when the
covariances are singular (fewer samples than feature dimensions), where scipy's sqrtm of the
non-symmetric product S1 S2 can return complex noise or NaNs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; round-off negative eigenvalues count as 0."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for covariance matrices, computed stably."""
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigvals, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    # The exact value is >= 0; round-off can leave a tiny negative number for identical inputs.
    return float(max(value, 0.0))


@dataclass
class FeatureStats:
    """Count, sum and sum of outer products of feature vectors, all float64.

    Sums merge exactly across batches and processes (`a + b`, or all-reduce `to_tensor()` and
    rebuild with `from_tensor`), so the final mean and covariance do not depend on how the samples
    were split.
    """

    dim: int
    count: int = 0
    total: np.ndarray = field(default=None)  # type: ignore[assignment]
    outer: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = np.zeros(self.dim, np.float64)
        if self.outer is None:
            self.outer = np.zeros((self.dim, self.dim), np.float64)

    def update(self, features) -> "FeatureStats":
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().double().numpy()
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got {list(x.shape)}")
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {self.dim} and {other.dim}")
        return FeatureStats(self.dim, self.count + other.count, self.total + other.total, self.outer + other.outer)

    __add__ = merge

    def mean(self) -> np.ndarray:
        return self.total / self.count

    def covariance(self, unbiased: bool) -> np.ndarray:
        """1/(N-1) (unbiased, the TF FVD) or 1/N (biased, StyleGAN-V) sample covariance."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, have {self.count}")
        mean = self.mean()
        scatter = self.outer - self.count * np.outer(mean, mean)
        return scatter / (self.count - 1 if unbiased else self.count)

    def to_tensor(self) -> torch.Tensor:
        """[1 + D + D*D] float64 tensor: sum it across ranks, then `from_tensor`."""
        return torch.from_numpy(np.concatenate([[float(self.count)], self.total, self.outer.ravel()]))

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, dim: int) -> "FeatureStats":
        flat = tensor.detach().cpu().double().numpy()
        if flat.size != 1 + dim + dim * dim:
            raise ValueError(f"tensor of {flat.size} values does not hold statistics of dimension {dim}")
        return cls(dim, int(round(flat[0])), flat[1:1 + dim].copy(), flat[1 + dim:].reshape(dim, dim).copy())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"count": np.asarray(self.count, np.int64), "total": self.total, "outer": self.outer}

    @classmethod
    def from_arrays(cls, arrays) -> "FeatureStats":
        total = np.asarray(arrays["total"], np.float64)
        return cls(total.size, int(arrays["count"]), total, np.asarray(arrays["outer"], np.float64))


def fid_from_stats(a: FeatureStats, b: FeatureStats, unbiased: bool) -> float:
    return frechet_distance(a.mean(), a.covariance(unbiased), b.mean(), b.covariance(unbiased))
