import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpdm_core import checkpoint as ckpt
from hpdm_core import config as config_lib
from hpdm_core import training
from hpdm_core.config import apply_overrides, preset
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.errors import TrainingDivergedError
from hpdm_core.pyramid import is_nested

# A network of a few thousand parameters on 2x4x4 patches, 3 levels: target 8x16x16.
TINY = ["model.patch=2x4x4", "model.token=1x2x2", "model.interface_dim=16", "model.latent_dim=16",
        "model.num_latents=4", "model.head_dim=8", "model.latent_layers=1", "model.num_blocks=3",
        "model.levels_per_block=1,2,3", "model.fourier_features=2", "model.num_classes=3",
        "train.batch_size=4", "train.warmup_steps=2", "train.steps=4", "train.log_every=1",
        "train.checkpoint_every=2", "train.ema_decay=0.9", "data.num_workers=0"]


def write_smooth_videos(path, count=5, frames=10, size=16, seed=0):
    """Random videos, smooth in space and time (trilinear upsampling of coarse noise)."""
    rng = np.random.default_rng(seed)
    with VideoStoreWriter(path, size, size) as writer:
        for i in range(count):
            coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 3, 4, 4))).float()
            video = F.interpolate(coarse, size=(frames, size, size), mode="trilinear", align_corners=True)
            writer.append(video[0].permute(1, 2, 3, 0).round().clamp(0, 255).byte().numpy(), label=i % 3)
        writer.finish(["a", "b", "c"], fps=8.0)
    return path


@pytest.fixture
def data(tmp_path):
    return write_smooth_videos(tmp_path / "smooth.h5")


def tiny_config(data, *extra):
    cfg = apply_overrides(preset("tiny"), TINY + list(extra))
    cfg.data.path = str(data)
    return cfg.validate()


def trainer(cfg, run_dir):
    return training.Trainer(cfg, run_dir, device="cpu", tensorboard=False)


def assert_states_close(a, b, atol=1e-6):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_states_close(a[key], b[key], atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_states_close(x, y, atol)
    elif isinstance(a, torch.Tensor):
        assert torch.allclose(a.double(), b.double(), atol=atol, rtol=0), (a - b).abs().max()
    else:
        assert a == b


def test_resume_after_kill_continues_exactly(data, tmp_path):
    cfg = tiny_config(data)
    straight = trainer(cfg, tmp_path / "straight")
    assert straight.fit() == 4

    killed = trainer(cfg, tmp_path / "resumed")
    killed.fit(stop_at=2)  # the process dies after its step-2 checkpoint
    del killed
    resumed = trainer(cfg, tmp_path / "resumed")
    assert resumed.resume() == 2
    assert resumed.fit() == 4

    a, b = straight.state_dict(), resumed.state_dict()
    for part in ("model", "ema", "optimizer", "scheduler"):
        assert_states_close(a[part], b[part], atol=0)  # bit for bit on CPU
    assert a["samples_seen"] == b["samples_seen"] == 16
    # The metrics log of the resumed run holds each step once, with a loss per level.
    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert all({"loss_level_0", "loss_level_1", "loss_level_2", "videos_per_s"} <= m.keys() for m in lines)


def test_training_moves_weights_and_ema_lags(data, tmp_path):
    t = trainer(tiny_config(data, "train.steps=2"), tmp_path / "run")
    before = {k: v.clone() for k, v in t.raw_model.state_dict().items()}
    t.fit()
    after, ema = t.raw_model.state_dict(), t.ema.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved, "no parameter changed"
    assert all(not torch.equal(ema[k], after[k]) for k in moved)
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_00000002.pt"


def test_batches_depend_only_on_seed_rank_step(data, tmp_path):
    cfg = tiny_config(data, "data.flip=true")
    t = trainer(cfg, tmp_path / "run")
    direct = [t.batches(0, 4).dataset[s] for s in range(4)]
    torch.manual_seed(123)  # the global RNG state must not matter
    t.cfg.data.num_workers = 2
    via_workers = list(t.batches(1, 4))
    for a, b in zip(direct[1:], via_workers):
        assert_states_close(a, b, atol=0)
    assert not torch.equal(direct[1]["patches"], direct[2]["patches"])
    assert is_nested(direct[0]["offsets"], t.geometry).all()
    assert direct[0]["patches"].shape == (4, 3, 3, 2, 4, 4)


def test_accumulation_equals_full_batch(data, tmp_path, monkeypatch):
    # A noise-free loss, so the only difference is how the batch is split.
    def fixed_loss(self, patches, offsets, labels, noise):
        sigma = torch.ones(patches.shape[:2])
        per_level = (self.model(patches, sigma, offsets, labels) - patches).square().mean(dim=(0, 2, 3, 4, 5))
        return per_level.mean(), per_level.detach()

    monkeypatch.setattr(training.Trainer, "compute_loss", fixed_loss)
    whole = trainer(tiny_config(data, "train.steps=2"), tmp_path / "whole")
    split = trainer(tiny_config(data, "train.steps=2", "train.accumulation=2"), tmp_path / "split")
    batch = whole.batches(0, 1).dataset[0]
    a, b = whole.train_step(batch), split.train_step(batch)
    assert a.loss == pytest.approx(b.loss, abs=1e-6)
    assert a.per_level == pytest.approx(b.per_level, abs=1e-6)
    assert_states_close(whole.raw_model.state_dict(), split.raw_model.state_dict(), atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    real = training.Trainer.compute_loss

    def poisoned(self, *args):
        loss, per_level = real(self, *args)
        return (loss * float("nan"), per_level) if self.step == 2 else (loss, per_level)

    monkeypatch.setattr(training.Trainer, "compute_loss", poisoned)
    t = trainer(tiny_config(data), tmp_path / "run")
    with pytest.raises(TrainingDivergedError, match="diverged at step 3.*step_00000002.pt is kept"):
        t.fit()
    good = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))
    assert good["step"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert t.step == 2  # the poisoned step changed nothing


def test_config_conflicts_ignore_runtime_keys(data):
    saved = tiny_config(data)
    assert config_lib.config_conflicts(saved, tiny_config(data, "train.steps=99", "train.log_every=5")) == []
    assert config_lib.config_conflicts(saved, tiny_config(data, "train.lr=3e-3")) == ["train.lr"]


def test_metrics_log_the_label_gap_and_update_sizes(data, tmp_path):
    t = trainer(tiny_config(data, "train.probe_every=2"), tmp_path / "run")
    t.fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    updates = {"update_matrices", "update_other", "update_class_embedding", "update_latents", "update_position"}
    assert all(updates <= m.keys() and all(m[k] > 0 for k in updates) for m in lines)
    probed = [m["step"] for m in lines if "label_gap_sigma_8" in m]
    assert probed == [2, 4]
    gaps = {k for k in lines[-1] if k.startswith("label_gap_sigma_")}
    assert gaps == {"label_gap_sigma_0.5", "label_gap_sigma_2", "label_gap_sigma_8", "label_gap_sigma_30"}
    # The probe is a fixed batch: the same model gives the same gap.
    again = t.probe()
    assert again["label_gap_sigma_8"] == pytest.approx(lines[-1]["label_gap_sigma_8"], abs=1e-7)


@pytest.mark.parametrize("trust_ratio", ["decayed", "all"])
def test_every_parameter_group_moves_by_a_meaningful_amount(data, tmp_path, trust_ratio):
    # LAMB's trust ratio moves a tensor by lr x its own norm: the weight matrices by exactly lr per
    # step. Small tensors (the class embedding starts at std 0.02) need the plain Adam step of the
    # non-decayed group to move at all within a short run; with trust_ratio="all" they move by lr.
    t = trainer(tiny_config(data, "train.warmup_steps=0", "train.steps=3", f"train.trust_ratio={trust_ratio}"),
                tmp_path / "run")
    t.fit()
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    lr = last["lr"]
    assert last["update_matrices"] == pytest.approx(lr, rel=0.02)
    for name in ("class_embedding", "latents", "position"):
        if trust_ratio == "all":
            assert last[f"update_{name}"] == pytest.approx(lr, rel=0.02)
        else:
            assert last[f"update_{name}"] > 10 * lr, name


def test_the_old_name_of_sample_guidance_is_still_read(tmp_path):
    """sample.cfg was renamed sample.guidance: run folders of older versions and --set keep working."""
    path = tmp_path / "config.toml"
    path.write_text("[sample]\ncfg = 2.5\n")
    assert config_lib.load(path).sample.guidance == 2.5
    assert config_lib.apply_overrides(config_lib.Config(), ["sample.cfg=3"]).sample.guidance == 3.0
    config_lib.save(config_lib.load(path), path)
    assert "guidance = 2.5" in path.read_text() and "cfg" not in path.read_text()
