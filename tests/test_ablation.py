"""hpdm_core.ablation / report: the variants pin the paper's switches, the per-level scoring pins the
pyramid (level l = the target box-downsampled by 2**(L-l)), the tables keep the paper's format."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpdm_core import ablation, report
from hpdm_core.config import apply_overrides, preset
from hpdm_core.errors import BadInputError


def micro_config(path=""):
    cfg = apply_overrides(preset("tiny"), [
        "model.patch=4,8,8", "model.num_levels=2", "model.num_blocks=2", "model.levels_per_block=1,2",
        "model.interface_dim=32", "model.latent_dim=32", "model.num_latents=4", "model.head_dim=16",
        "model.latent_layers=1", "model.num_classes=2"])
    cfg.data.path = str(path)
    return cfg


def test_variants_switch_exactly_one_thing():
    base = preset("tiny")
    made = {name: v.apply(base) for name, v in ablation.ARCHITECTURE_VARIANTS.items()}
    assert made["shallow"].model.fusion == "shallow"
    assert made["detach"].model.detach_context is True
    assert made["no-coords"].model.use_coords is False
    # "No adaptive computation" = every block processes all L+1 levels.
    assert made["no-adaptive"].model.block_levels == [base.model.num_levels] * base.model.num_blocks
    default = made["default"].to_dict()
    for name, cfg in made.items():
        changed = {k for k, v in cfg.to_dict()["model"].items() if v != default["model"][k]}
        assert len(changed) == (0 if name == "default" else 1), (name, changed)
        assert cfg.train == made["default"].train  # equal budgets and seeds
    assert list(ablation.ARCHITECTURE_VARIANTS)[-1] == "default"  # the paper lists the default model last


def test_parse_names_keeps_table_order_and_rejects_unknown():
    assert ablation.parse_names("default,shallow", ablation.ARCHITECTURE_VARIANTS, "variant") == ["shallow", "default"]
    assert ablation.parse_names(None, ablation.OVERLAP_STRATEGIES, "s") == \
        ["none", "w", "h", "hw", "f", "fw", "fh", "fhw"]
    with pytest.raises(BadInputError, match="no-such"):
        ablation.parse_names("default,no-such", ablation.ARCHITECTURE_VARIANTS, "variant")


def test_detector_input_repeats_up_to_the_minimum_size():
    scorer = ablation.Scorer(detector=torch.nn.Identity(), metric="FD", detector_id="x", proxy=True, min_size=32)
    scorer.detector.min_frames = 9
    video = torch.rand(2, 3, 4, 8, 16) * 2 - 1
    out = ablation.detector_input(video, scorer)
    assert out.dtype == torch.uint8 and out.shape == (2, 12, 32, 64, 3)  # factors 3 (frames) and 4 (space)
    # Nearest repetition by integer factors: every block of the output is one input pixel.
    assert torch.equal(out[:, ::3, ::4, ::4], out[:, 2::3, 3::4, 3::4])


def test_real_levels_are_box_downsampled_targets(tmp_path):
    from hpdm_core.data.synthetic import make_synthetic

    path = tmp_path / "d.h5"
    make_synthetic(path, num_videos=3, frames=10, resolution=16, classes=2, seed=0)
    cfg = micro_config(path)
    batches = list(ablation.real_level_batches(cfg, num=5, seed=1, chunk=2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    level0, level1 = batches[0]
    assert level1.shape == (2, 3, 8, 16, 16) and level0.shape == (2, 3, 4, 8, 8)
    assert torch.allclose(level0, F.avg_pool3d(level1, 2))
    again = list(ablation.real_level_batches(cfg, num=5, seed=1, chunk=5))[0][1]
    assert torch.equal(torch.cat([b[1] for b in batches]), again)  # seeded, independent of the chunking


def test_training_speed_is_the_median_of_logged_intervals(tmp_path):
    lines = [{"step": i, "videos_per_s": v} for i, v in enumerate([1.0, 40.0, 50.0, 45.0])]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert ablation.training_speed(tmp_path) == 42.5
    assert ablation.training_speed(tmp_path / "missing") is None


def test_markdown_table_in_the_papers_format():
    results = {"suite": "architecture", "metric": "FD (random I3D)", "proxy": True, "num": 512, "levels": [0, 1, 2],
               "resolutions": {"0": [16, 64, 64], "1": [32, 128, 128], "2": [64, 256, 256]},
               "notes": report.notes(True, 512),
               "rows": [{"label": "Default model", "fd": {"0": 287.6, "1": 376.6, "2": 378.2}, "videos_per_s": 4.4,
                         "consistency": {"coarse_mae": [0.01, 0.02], "seam": {"all": 1.01}}}]}
    text = report.to_markdown(results)
    assert "| Setup | FD (random I3D)@512 16×64² | FD (random I3D)@512 32×128² | FD (random I3D)@512 64×256² |" in text
    assert "| Default model | 287.60 | 376.60 | 378.20 | 4.40 | 0.0100/0.0200 | 1.010 |" in text
    assert "NOT FVD" in text
    assert report.resolution_label([8, 36, 64]) == "8×36×64"


def test_consistency_average_over_chunks_weights_by_size():
    a = {"coarse_mae": [1.0], "seam": {"f": None, "all": 2.0}}
    b = {"coarse_mae": [4.0], "seam": {"f": None, "all": 5.0}}
    mean = ablation._mean_report([(2, a), (1, b)])
    assert mean["coarse_mae"] == [2.0] and mean["seam"] == {"f": None, "all": 3.0}
    assert np.isclose(mean["seam"]["all"], 3.0)


def test_real_level_batches_leave_the_global_rng_alone(tmp_path):
    from hpdm_core.data.synthetic import make_synthetic

    path = make_synthetic(tmp_path / "d.h5", num_videos=3, frames=12, resolution=16, classes=2, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    batches = list(ablation.real_level_batches(micro_config(path), num=4, seed=1))
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream goes on as if nothing happened
    torch.manual_seed(999)  # ... and the clips do not depend on it
    again = list(ablation.real_level_batches(micro_config(path), num=4, seed=1))
    assert torch.equal(batches[0][1], again[0][1])


def test_cut_off_metrics_line_does_not_break_training_speed(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "videos_per_s": 4.0}\n{"step": 2, "videos_')
    assert ablation.training_speed(tmp_path) == 4.0
