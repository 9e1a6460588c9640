"""benchmarks/denoiser_quality.py's tables pinned with two known denoisers: an oracle that returns the
clean chains and one that returns its noisy input unchanged."""

import sys
from pathlib import Path

import pytest
import torch

from hpdm_core.config import apply_overrides, preset
from hpdm_core.data.dataset import ClipDataset
from hpdm_core.data.synthetic import make_synthetic
from hpdm_core.pyramid import PatchGeometry
from hpdm_core.training import StepBatches

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from denoiser_quality import background_mottling, quality_tables  # noqa: E402

SIGMAS = [0.05, 0.3, 1.0]


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    cfg = apply_overrides(preset("tiny"), ["model.patch=8x16x16", "model.num_levels=2"])
    data = make_synthetic(tmp_path_factory.mktemp("dq") / "set.h5", num_videos=8, frames=16, resolution=32, classes=8)
    geometry = PatchGeometry.from_config(cfg.model)
    frames, height, width = geometry.canvas(geometry.num_levels - 1)
    clips = ClipDataset(data, frames, (height, width))
    return cfg, StepBatches(clips, geometry, range(8), 0, 1, cfg.model.num_classes)[0]


def test_an_oracle_denoiser_keeps_the_clean_mottling_and_a_pass_through_one_adds_noise(chains):
    cfg, batch = chains
    clean = batch["patches"]
    oracle = lambda noisy, sigma, offsets, labels: clean  # noqa: E731
    errors, mosaic, mottle = quality_tables(oracle, batch, SIGMAS, cfg.diffusion, tuple(cfg.model.token),
                                            torch.Generator().manual_seed(0), mottled=True)
    assert all(e == 0 for row in errors for e in row) and all(m == 1 for row in mosaic for m in row)
    for level, row in enumerate(mottle):
        assert row == [background_mottling(clean[:, level], batch["labels"])] * (1 + len(SIGMAS))
        assert row[0] < 0.02  # the set's gradient is the plane the measure fits

    same = lambda noisy, sigma, offsets, labels: noisy  # noqa: E731
    errors, _, mottle = quality_tables(same, batch, SIGMAS, cfg.diffusion, tuple(cfg.model.token),
                                       torch.Generator().manual_seed(0), mottled=True)
    # Returning the noisy input leaves an error of exactly sigma^2 in expectation (here within sampling noise).
    assert errors[0] == pytest.approx([1.0] * len(SIGMAS), rel=0.05)
    # Noise of sigma s on [-1, 1] is s / 2 on the 0-1 scale, single pixels; clipping to [0, 1] trims the largest.
    for row in mottle:
        assert row[1] == pytest.approx(0.025, rel=0.2) and row[1] < row[2] < row[3]
