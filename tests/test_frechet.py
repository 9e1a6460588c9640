import numpy as np
import pytest
import scipy.linalg
import torch

from hpdm_core.metrics.frechet import FeatureStats, fid_from_stats, frechet_distance


def _gaussian_samples(rng, n, d, shift=0.0):
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def _scipy_fd(mu1, s1, mu2, s2):
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)))


def test_matches_scipy_sqrtm_when_well_conditioned():
    rng = np.random.default_rng(0)
    a, b = _gaussian_samples(rng, 2000, 24), _gaussian_samples(rng, 2000, 24, shift=0.3)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    assert ours > 1.0


def test_closed_form_for_diagonal_covariances():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-12)


def test_identity_and_symmetry():
    rng = np.random.default_rng(1)
    a, b = _gaussian_samples(rng, 300, 32), _gaussian_samples(rng, 300, 32, shift=0.1)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_finite_and_real_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    a, b = _gaussian_samples(rng, 6, 400), _gaussian_samples(rng, 6, 400, shift=0.5)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_streaming_stats_merge_and_covariance_conventions():
    rng = np.random.default_rng(3)
    x = _gaussian_samples(rng, 257, 16, shift=2.0)
    whole = FeatureStats(16).update(x)
    parts = [FeatureStats(16).update(torch.from_numpy(chunk)) for chunk in np.array_split(x, 5)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged + part
    assert merged.count == 257
    np.testing.assert_allclose(merged.mean(), x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.covariance(unbiased=True), np.cov(x, rowvar=False, ddof=1), atol=1e-10)
    np.testing.assert_allclose(merged.covariance(unbiased=False), np.cov(x, rowvar=False, ddof=0), atol=1e-10)
    np.testing.assert_allclose(whole.outer, merged.outer, rtol=1e-12)
    # An all-reduce sums the flat tensors of every rank.
    summed = sum(p.to_tensor() for p in parts)
    restored = FeatureStats.from_tensor(summed, 16)
    assert restored.count == 257 and restored.total.dtype == np.float64
    np.testing.assert_allclose(restored.covariance(False), whole.covariance(False), atol=1e-10)


def test_biased_and_unbiased_distances_differ_as_expected():
    rng = np.random.default_rng(4)
    a, b = FeatureStats(8).update(rng.normal(size=(20, 8))), FeatureStats(8).update(rng.normal(size=(20, 8)) + 1)
    biased, unbiased = fid_from_stats(a, b, unbiased=False), fid_from_stats(a, b, unbiased=True)
    direct = frechet_distance(a.mean(), a.covariance(True), b.mean(), b.covariance(True))
    assert unbiased == pytest.approx(direct) and biased != pytest.approx(unbiased)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        FeatureStats(4).update(np.zeros((2, 5)))
    with pytest.raises(ValueError):
        FeatureStats(4).update(np.zeros((1, 4))).covariance(True)
