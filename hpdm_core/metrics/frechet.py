"""Fréchet distance between Gaussians fitted to features, with mergeable float64 statistics.

FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)). The trace of sqrtm(S1 S2) equals the sum of the
square roots of the eigenvalues of A S2 A with A = sqrt(S1): that matrix is symmetric positive
semi-definite, so two symmetric eigen-decompositions give a real, finite answer even when the
covariances are singular (fewer samples than feature dimensions), where scipy's sqrtm of the
non-symmetric product S1 S2 can return complex noise or NaNs.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpdm_core.errors import DiskFullError
from hpdm_core.files import atomic_write


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


# ----------------------------------------------------------------------------- the real-statistics cache

def cache_file(folder: str | os.PathLike, fields: dict) -> Path:
    """Where statistics are cached: folder/<hash of `fields`, everything that changes them>.npz."""
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    return Path(folder) / f"{key}.npz"


def load_stats(path: Path) -> list[FeatureStats] | None:
    """The cached statistics (one set or one per pyramid level), or None when missing or unreadable
    (an entry cut short by a kill is recomputed)."""
    try:
        with np.load(path) as arrays:
            if not any("/" in k for k in arrays.files):
                return [FeatureStats.from_arrays(arrays)]
            count = 1 + max(int(k.split("/", 1)[0]) for k in arrays.files)
            return [FeatureStats.from_arrays({k.split("/", 1)[1]: arrays[k] for k in arrays.files
                                              if k.startswith(f"{i}/")}) for i in range(count)]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def save_stats(path: Path, stats: list[FeatureStats]) -> str | None:
    """Cache statistics (one set is stored flat, several as 0/..., 1/...); a note instead of an error
    when the file cannot be written: a read-only cache folder must not cost the statistics."""
    arrays = stats[0].to_arrays() if len(stats) == 1 else \
        {f"{i}/{k}": v for i, s in enumerate(stats) for k, v in s.to_arrays().items()}
    try:
        with atomic_write(path) as tmp, tmp.open("wb") as f:  # a file object: numpy appends no suffix
            np.savez(f, **arrays)
    except DiskFullError as err:  # the statistics are computed: a note, not a failure
        return f"real statistics not cached: {err}"
    except OSError as err:
        return f"real statistics not cached: cannot write {path} ({err.strerror or err})"
    return None
