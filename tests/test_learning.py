"""A model that learns: a small HPDM trained for a fixed budget on two classes must use its class.

Slow (about a minute on one core): the one test that fails if training stops learning the
conditioning (an optimizer group that cannot move, a conditioning path that is cut, a sampler that
ignores the label), whatever the loss curve says.
"""

import json

import pytest
import torch

from hpdm_core.config import apply_overrides, preset
from hpdm_core.data.synthetic import COLOURS, class_appearance, make_synthetic
from hpdm_core.sampling import generate
from hpdm_core.training import Trainer

# Two classes, a red disc and a green square, 8x16x16 videos; 2 levels of 4x8x8 patches.
SMALL = ["model.patch=4x8x8", "model.num_levels=2", "model.token=1x2x2", "model.interface_dim=48",
         "model.latent_dim=32", "model.num_latents=16", "model.head_dim=16", "model.num_blocks=4",
         "model.levels_per_block=1,1,2,2", "model.fourier_features=4", "model.num_classes=2",
         "train.batch_size=16", "train.steps=250", "train.warmup_steps=20", "train.probe_every=250",
         "train.log_every=50", "train.checkpoint_every=250", "sample.steps=16",
         # The training noise the thresholds below were measured at (tiny's before it moved to -0.6: there the
         # gap at sigma 2 is 0.23, as low as a broken optimizer's, while the gap at sigma 30 rises to 0.57).
         "diffusion.p_mean=0"]


def object_colour(videos: torch.Tensor) -> torch.Tensor:
    """Index (0 red, 1 green) of the class colour the saturated pixels of each video are nearest to."""
    colours = torch.tensor([COLOURS[class_appearance(k)[1]] for k in range(2)])  # [2, 3] in [0, 1]
    pixels = ((videos.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).flatten(1, 3)  # [N, P, 3]
    distance = (pixels[:, :, None] - colours).norm(dim=-1)  # [N, P, 2]
    near = distance.min(-1).values < 0.3
    votes = torch.stack([((distance.argmin(-1) == k) & near).sum(1) for k in range(2)], 1)
    return votes.argmax(1)


@pytest.mark.slow
def test_a_small_model_learns_its_classes(tmp_path):
    data = make_synthetic(tmp_path / "two.h5", num_videos=64, frames=8, resolution=16, classes=2)
    cfg = apply_overrides(preset("tiny"), SMALL)
    cfg.data.path = str(data)
    trainer = Trainer(cfg.validate(), tmp_path / "run", device="cpu", tensorboard=False)
    trainer.fit()

    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # Measured: 0.34 / 0.48 / 0.49 at sigma 2 / 8 / 30; with the earlier optimizer and model
    # (train.trust_ratio=all, model.init=vit, model.interface_conditioning=false) 0.22 / 0.19 / 0.16.
    for sigma in (2, 8, 30):
        assert last[f"label_gap_sigma_{sigma}"] > 0.25, (sigma, last)

    labels = torch.arange(16) % 2
    options = cfg.sample
    level0 = generate(trainer.ema.model, labels, seed=0, options=options, batch_size=16, num_levels=1).videos
    accuracy = (object_colour(level0) == labels).float().mean().item()
    assert accuracy >= 0.85, accuracy
