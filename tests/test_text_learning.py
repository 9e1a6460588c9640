"""A text-conditional model that learns: two captions told apart, end to end.

Captions in the dataset file -> the small random T5 (built locally, no download) -> `encode_text` into
the file -> a small text model trained for a fixed budget -> a positive label gap (the loss with
another video's caption minus the loss with its own) and samples whose colour follows the prompt.
Slow (a minute or two on one core).
"""

import json

import pytest
import torch

from hpdm_core.config import apply_overrides, preset
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.data.synthetic import class_names, synthetic_video
from hpdm_core.prompts import encode_prompts
from hpdm_core.sampling import generate
from hpdm_core.text.encoder import build_random_t5, load_text_encoder
from hpdm_core.text.store import encode_file
from hpdm_core.training import Trainer, setup_run
from tests.test_learning import SMALL, object_colour

CAPTIONS = ["a red disc moving across", "a green square gliding by"]


def captioned_file(path, num_videos=64):
    with VideoStoreWriter(path, 16, 16) as writer:
        for i in range(num_videos):
            video, label = synthetic_video(i, frames=8, resolution=16, classes=2)
            writer.append(video, label=label, name=f"v{i:03d}", caption=CAPTIONS[label])
        return writer.finish(class_names(2), fps=8.0, source="test")


@pytest.mark.slow
def test_a_small_text_model_learns_two_captions_apart(tmp_path):
    data = captioned_file(tmp_path / "captioned.h5")
    encoder = load_text_encoder(build_random_t5(tmp_path / "t5"))
    encode_file(data, encoder)
    cfg = apply_overrides(preset("tiny-t2v"), SMALL + [f"model.text_dim={encoder.dim}"])
    cfg, _ = setup_run(tmp_path / "run", cfg.validate(), data=data)
    assert cfg.data.text_fingerprint == encoder.fingerprint
    trainer = Trainer(cfg, tmp_path / "run", device="cpu", tensorboard=False)
    trainer.fit()

    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # As for classes (tests/test_learning.py), at the noise levels where the text must decide the colour.
    for sigma in (8, 30):
        assert last[f"label_gap_sigma_{sigma}"] > 0.1, (sigma, last)

    labels = torch.arange(16) % 2
    text = encode_prompts(encoder, [CAPTIONS[k] for k in labels.tolist()], cfg.data.text_fingerprint)
    level0 = generate(trainer.ema.model, text, seed=0, options=cfg.sample, batch_size=16, num_levels=1).videos
    accuracy = (object_colour(level0) == labels).float().mean().item()
    assert accuracy >= 0.8, accuracy
