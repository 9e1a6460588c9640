"""`hpdm train --init-from` (issue 22): a deeper pyramid starts from a base run's EMA weights."""

import json
import math

import pytest
import tomli_w
import torch

from hpdm_core import config as config_lib
from hpdm_core import init_from
from hpdm_core.config import apply_overrides, preset
from hpdm_core.errors import BadInputError
from hpdm_core.model.hpdm import HPDM
from hpdm_core.model.layers import FourierFeatures
from hpdm_core.pyramid import PatchGeometry, sample_nested_offsets, token_centres
from test_cli_train import hpdm, sets
from test_training import TINY, trainer, write_smooth_videos

BASE = ["model.num_levels=1", "model.levels_per_block=1,1,1"]


@pytest.fixture
def data(tmp_path):
    return write_smooth_videos(tmp_path / "smooth.h5")


def config(data, *extra):
    cfg = apply_overrides(preset("tiny"), TINY + list(extra))
    cfg.data.path = str(data)
    return cfg.validate()


@pytest.fixture
def base_run(data, tmp_path):
    """A trained 1-level base (2 steps: its EMA differs from any fresh initialisation)."""
    t = trainer(config(data, *BASE, "train.steps=2"), tmp_path / "base")
    t.fit()
    return t


def old_rule(model_cfg) -> float:
    """The coordinate features' top frequency before model.coord_max_frequency existed."""
    return max(0.5, max(r // t for r, t in zip(model_cfg.target, model_cfg.token)) / 2)


# ----------------------------------------------------------------------------- coordinate features

@pytest.mark.parametrize("name, extra", [("tiny", []), ("tiny", TINY), ("tiny", ["model.num_levels=1",
                         "model.levels_per_block=1,1,1,1,1,1"]), ("hpdm-s", [])])
def test_a_config_without_the_key_builds_the_old_network(name, extra, tmp_path):
    values = apply_overrides(preset(name), extra).to_dict()
    del values["model"]["coord_max_frequency"]  # a config.toml written before the key existed
    config_lib.save(config_lib.from_dict(values), tmp_path / "config.toml")
    old = config_lib.load(tmp_path / "config.toml")
    assert old.model.coord_max_frequency == 0
    expected = FourierFeatures(old.model.fourier_features, 0.5, old_rule(old.model)).freqs
    if name == "hpdm-s":  # building HPDM-S costs seconds: the features alone
        assert old.model.coord_frequency == old_rule(old.model)
        return
    assert torch.equal(HPDM(old.model).coord_features.freqs, expected)


def test_an_old_run_resumes_under_its_preset(data, tmp_path):
    """A run folder from before the key resumes with the command that started it (no conflict)."""
    values = config(data, "train.steps=1").to_dict()
    del values["model"]["coord_max_frequency"]
    (tmp_path / "config.toml").write_text(tomli_w.dumps(values))
    saved = config_lib.load(tmp_path / "config.toml")
    assert saved.model.coord_max_frequency == 0 and old_rule(saved.model) == 4
    # The preset's fixed value is the old rule's (as tiny's 16 is for tiny's own patches).
    requested = config(data, "train.steps=2", "model.coord_max_frequency=4")
    assert not config_lib.config_conflicts(saved, requested)
    assert config_lib.config_conflicts(saved, apply_overrides(requested, ["model.coord_max_frequency=3"]))


def test_the_tiny_preset_keeps_its_network_and_output():
    cfg = preset("tiny")
    assert cfg.model.coord_frequency == old_rule(cfg.model)  # the preset's value is the old rule's
    legacy = apply_overrides(cfg, ["model.coord_max_frequency=0"])
    torch.manual_seed(3)
    new_model = HPDM(cfg.model)
    torch.manual_seed(3)
    old_model = HPDM(legacy.model)
    geometry = PatchGeometry.from_config(cfg.model)
    offsets = sample_nested_offsets(2, geometry, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 3, *cfg.model.patch)
    noise, labels = torch.randn(2, 3), torch.tensor([0, 4])
    with torch.no_grad():
        assert torch.equal(new_model(x, noise, offsets, labels), old_model(x, noise, offsets, labels))


def test_base_and_child_see_the_same_coordinates(data):
    """A 2-level base and a 3-level child: the features of a place in the video are the same at every
    shared level (they differed when the frequencies followed the target)."""
    base_cfg = config(data, "model.num_levels=2", "model.levels_per_block=1,2,2")
    child_cfg = config(data)
    child_geometry = PatchGeometry.from_config(child_cfg.model)
    offsets = sample_nested_offsets(6, child_geometry, generator=torch.Generator().manual_seed(1))
    token = tuple(child_cfg.model.token)
    child_coords = token_centres(offsets, child_geometry, token)[:, :2]
    base_coords = token_centres(offsets[:, :2], PatchGeometry.from_config(base_cfg.model), token)
    assert torch.equal(child_coords, base_coords)
    base, child = HPDM(base_cfg.model), HPDM(child_cfg.model)
    assert torch.equal(base.coord_features(base_coords), child.coord_features(child_coords))
    # Under the old rule the two networks would not agree: the test can tell.
    old_base = HPDM(apply_overrides(base_cfg, ["model.coord_max_frequency=0"]).model)
    old_child = HPDM(apply_overrides(child_cfg, ["model.coord_max_frequency=0"]).model)
    assert not torch.allclose(old_base.coord_features(base_coords), old_child.coord_features(child_coords))


# ----------------------------------------------------------------------------- carrying weights over

def test_init_from_copies_what_it_says_and_keeps_level_0(data, tmp_path, base_run):
    source = base_run.last_checkpoint
    child = trainer(config(data, f"train.init_from={source}"), tmp_path / "child")
    fresh = trainer(config(data), tmp_path / "fresh")  # same seed: the weights a fresh run starts from
    base_ema = base_run.ema.model.state_dict()
    state, fresh_state = child.raw_model.state_dict(), fresh.raw_model.state_dict()
    report = json.loads((tmp_path / "child" / init_from.REPORT_NAME).read_text())
    assert report == json.loads(json.dumps(child.init_report))
    statuses = {row["name"]: row["status"] for row in report["tensors"]}
    assert statuses.keys() == state.keys()
    for name, status in statuses.items():
        if status == "copied":
            assert torch.equal(state[name], base_ema[name]), name
        elif status == "new":
            assert torch.equal(state[name], fresh_state[name]), name
        else:
            assert status == "levels"
            assert torch.equal(state[name][:1], base_ema[name][:1])
            assert torch.equal(state[name][1:], base_ema[name][:1].expand_as(state[name][1:]))  # "top"
    assert statuses["model.latents"] == statuses["model.level_embedding.weight"] == "levels"
    assert statuses["model.fusions.0.proj.weight"] == "new"  # block 0 processed level 0 only in the base
    assert statuses["model.fusions.2.proj.weight"] == "new"  # ... as did every base block
    assert sum(s == "copied" for s in statuses.values()) > 0.7 * len(statuses)
    # The EMA restarts from the carried weights.
    assert all(torch.equal(a, b) for a, b in zip(child.ema.model.state_dict().values(), state.values()))

    # Information flows only upwards: the child's level 0 is the base at initialisation.
    geometry = child.geometry
    offsets = sample_nested_offsets(3, geometry, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 3, 3, *child.cfg.model.patch)
    sigma, labels = torch.tensor([[0.5, 1.0, 2.0], [3.0, 1.0, 1.0], [0.1, 9.0, 4.0]]), torch.tensor([0, 1, 3])
    with torch.no_grad():
        child_out = child.raw_model(x, sigma, offsets, labels)[:, 0]
        base_out = base_run.ema.model(x[:, :1], sigma[:, :1], offsets[:, :1], labels)[:, 0]
    # float32 noise: the child folds its levels into larger batches than the base does
    torch.testing.assert_close(child_out, base_out, atol=1e-5, rtol=1e-5)


def test_fresh_new_levels_and_another_patch_size(data, tmp_path, base_run):
    source = base_run.last_checkpoint
    child = trainer(config(data, f"train.init_from={source}", "train.init_new_levels=fresh", "model.patch=2x8x8"),
                    tmp_path / "child")
    fresh = trainer(config(data, "model.patch=2x8x8"), tmp_path / "fresh")
    base_ema = base_run.ema.model.state_dict()
    state = child.raw_model.state_dict()
    rows = {row["name"]: row for row in child.init_report["tensors"]}
    assert rows["model.position"]["status"] == "resampled"
    assert "2x2x2 -> 2x4x4" in rows["model.position"]["detail"]
    assert torch.equal(state["model.position"],
                       init_from.resample_position(base_ema["model.position"], (2, 2, 2), (2, 4, 4)))
    assert torch.equal(state["model.latents"][0], base_ema["model.latents"][0])
    assert torch.equal(state["model.latents"][1:], fresh.raw_model.state_dict()["model.latents"][1:])
    assert torch.equal(state["model.tokenizer.weight"], base_ema["model.tokenizer.weight"])


def test_resample_position_keeps_a_table_on_its_own_grid_and_a_constant():
    table = torch.randn(8, 5)
    assert torch.equal(init_from.resample_position(table, (2, 2, 2), (2, 2, 2)), table)
    constant = torch.ones(8, 5) * torch.arange(5.0)
    torch.testing.assert_close(init_from.resample_position(constant, (2, 2, 2), (4, 2, 6)),
                               torch.ones(48, 5) * torch.arange(5.0))


@pytest.mark.parametrize("setting, named", [("model.interface_dim=32", "model.interface_dim"),
                                            ("model.head_dim=4", "model.head_dim"),
                                            ("model.num_blocks=4", "model.num_blocks"),
                                            ("model.fusion=shallow", "model.fusion"),
                                            ("model.coord_max_frequency=3", "model.coord_max_frequency")])
def test_incompatible_settings_name_themselves(setting, named, data, tmp_path, base_run):
    extra = [setting, "model.levels_per_block=1,2,3,3"] if "num_blocks" in setting else [setting]
    with pytest.raises(BadInputError, match=named):
        trainer(config(data, f"train.init_from={base_run.last_checkpoint}", *extra), tmp_path / "child")


# ----------------------------------------------------------------------------- through the CLI

def test_cli_init_from_a_run_folder_and_its_refusals(capsys, monkeypatch, data, tmp_path):
    base, child = tmp_path / "base", tmp_path / "child"
    code, _, err = hpdm(capsys, monkeypatch, "train", "--preset", "tiny", "--data", data, "--run-dir", base,
                        "--steps", 1, "--batch-size", 2, "--device", "cpu", *sets(*BASE))
    assert code == 0, err
    run = ["train", "--preset", "tiny", "--data", data, "--run-dir", child, "--steps", 1, "--batch-size", 2,
           "--device", "cpu"]
    # Other widths cannot carry over: exit 2 naming the setting, nothing written.
    code, out, err = hpdm(capsys, monkeypatch, *run, "--init-from", base, *sets("model.interface_dim=32"))
    assert code == 2 and "model.interface_dim = 16 there, 32 here" in err and "Traceback" not in err
    assert not child.exists()
    code, _, err = hpdm(capsys, monkeypatch, *run, "--init-from", tmp_path / "nowhere", *sets())
    assert code == 3 and "does not exist" in err

    code, _, err = hpdm(capsys, monkeypatch, *run, "--init-from", base, *sets())
    assert code == 0, err
    assert "init from" in err and "model.latents" in err and "copied" in err
    saved = config_lib.load(child / "config.toml")
    assert saved.train.init_from.endswith("step_00000001.pt")
    assert (child / init_from.REPORT_NAME).is_file()
    # A run with a checkpoint resumes from it: --init-from is refused, and not needed to resume.
    code, _, err = hpdm(capsys, monkeypatch, *run[:8], 2, *run[9:], "--init-from", base, *sets())
    assert code == 2 and "drop --init-from" in err
    code, _, err = hpdm(capsys, monkeypatch, *run[:8], 2, *run[9:], *sets())
    assert code == 0 and "resuming from" in err, err
    code, _, err = hpdm(capsys, monkeypatch, "train", "--run-dir", base, "--init-from", child)
    assert code == 2 and "--preset" in err


def test_tiny_base_preset_is_tiny_on_one_level():
    base, tiny = preset("tiny-base"), preset("tiny")
    assert base.model.num_levels == 1 and base.model.target == base.model.patch == tiny.model.patch
    assert base.model.coord_frequency == tiny.model.coord_frequency
    init_from.check_compatible(base, tiny)  # the fine-tune of the recipe carries over
    assert math.isclose(base.train.lr, tiny.train.lr)
    # Its clips span the time of tiny's target, as tiny's level 0 does.
    assert base.data.frame_stride * base.model.patch[0] == tiny.model.target[0]
