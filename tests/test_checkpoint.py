import copy

import pytest
import torch

from hpdm_core import checkpoint as ckpt
from hpdm_core import config as config_lib
from hpdm_core import training
from hpdm_core.config import apply_overrides, preset
from hpdm_core.errors import BadInputError, TrainingDivergedError

SMALL = ["model.patch=2x4x4", "model.token=1x2x2", "model.interface_dim=16", "model.latent_dim=16",
         "model.num_latents=4", "model.head_dim=8", "model.latent_layers=1", "model.num_blocks=3",
         "model.levels_per_block=1,2,3", "model.fourier_features=2", "model.num_classes=3"]


def small_config(*extra):
    return apply_overrides(preset("tiny"), SMALL + list(extra)).validate()


def test_save_is_atomic_keeps_last_n_and_loads_weights_only(tmp_path):
    for step in (1, 2, 3, 4, 5):
        path = ckpt.save_checkpoint(tmp_path, {"step": step, "samples_seen": 4 * step,
                                               "model": {"w": torch.full((2,), float(step))},
                                               "rng": {"torch": torch.get_rng_state()}}, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000005.pt"]
    assert ckpt.latest_checkpoint(tmp_path) == path
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    state = torch.load(path, weights_only=True)
    assert state["format"] == "hpdm-checkpoint" and state["version"] == 1 and state["step"] == 5
    assert torch.equal(state["model"]["w"], torch.full((2,), 5.0))


def test_leftover_temp_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000009.pt.tmp").write_bytes(b"half written")
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_foreign_or_missing_checkpoints_are_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="holds no checkpoint"):
        ckpt.load_for_inference(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="not an hpdm checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a readable"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


def test_trainer_checkpoint_loads_for_inference_with_ema(tmp_path):
    cfg = small_config()
    trainer = training.Trainer(cfg, tmp_path, device="cpu", tensorboard=False)
    config_lib.save(cfg, tmp_path / "config.toml")
    with torch.no_grad():  # make raw and EMA weights differ visibly
        for p in trainer.raw_model.parameters():
            p.add_(1.0)
    trainer.step = 7
    trainer.save()

    state = torch.load(ckpt.latest_checkpoint(tmp_path), weights_only=True)
    assert {"config", "model", "ema", "optimizer", "scheduler", "step", "samples_seen", "rng"} <= state.keys()
    loaded_cfg, denoiser, info = ckpt.load_for_inference(tmp_path)
    assert loaded_cfg == cfg and info["step"] == 7 and info["ema"]
    assert not denoiser.training
    for name, value in denoiser.state_dict().items():
        assert torch.equal(value, trainer.ema.state_dict()[name])
    _, raw, _ = ckpt.load_for_inference(tmp_path, use_ema=False)
    for name, value in raw.state_dict().items():
        assert torch.equal(value, trainer.raw_model.state_dict()[name])

    # A run folder whose config.toml describes another network is refused.
    config_lib.save(small_config("model.latent_dim=32"), tmp_path / "config.toml")
    with pytest.raises(BadInputError, match="different model/diffusion config"):
        ckpt.load_for_inference(tmp_path)


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = training.Trainer(small_config(), tmp_path, device="cpu", tensorboard=False)
    trainer.step = 1
    trainer.save()
    with torch.no_grad():  # what a NaN lr leaves after one step whose loss was still finite
        next(trainer.raw_model.parameters()).fill_(float("nan"))
    trainer.step = 2
    with pytest.raises(TrainingDivergedError, match="not finite after step 2"):
        trainer.save()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000001.pt"


def test_resume_passes_over_truncated_and_non_finite_checkpoints(tmp_path):
    cfg = small_config("train.keep_last=0")
    trainer = training.Trainer(cfg, tmp_path, device="cpu", tensorboard=False)
    trainer.step = 2
    good = trainer.save()
    nan_state = trainer.state_dict()
    nan_state["step"] = 3
    nan_state["ema"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in nan_state["ema"].items()}
    ckpt.save_checkpoint(tmp_path, nan_state, keep_last=0)  # e.g. written by an older hpdm
    data = good.read_bytes()
    ckpt.checkpoint_path(tmp_path, 4).write_bytes(data[:len(data) // 2])  # cut short: a full disk
    ckpt.checkpoint_path(tmp_path, 5).write_bytes(b"")

    resumed = training.Trainer(cfg, tmp_path, device="cpu", tensorboard=False)
    assert resumed.resume() == 2 and resumed.last_checkpoint == good
    notes = " ".join(resumed.resume_notes)
    assert "step_00000005.pt" in notes and "file is empty" in notes
    assert "step_00000004.pt" in notes and "step_00000003.pt" in notes and "not finite" in notes
    assert f"using {good}" in notes
    config_lib.save(cfg, tmp_path / "config.toml")
    _, _, info = ckpt.load_for_inference(tmp_path)  # sampling falls back the same way
    assert info["step"] == 2 and info["notes"] == resumed.resume_notes


def test_unreadable_checkpoints_give_a_reason(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BadInputError, match="is not a readable hpdm checkpoint: the file is empty"):
        ckpt.load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000001.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(BadInputError, match=r"no usable checkpoint .*step_00000001.pt .*\(\w+"):
        training.Trainer(small_config(), tmp_path, device="cpu", tensorboard=False).resume()


def test_nan_setting_is_not_a_config_conflict():
    cfg = small_config()
    cfg.sample.s_noise = cfg.diffusion.p_std = float("nan")  # an old run saved before values were checked
    assert config_lib.config_conflicts(cfg, copy.deepcopy(cfg)) == []
