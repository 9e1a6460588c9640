"""`hpdm ablate` end to end on a micro model: tables with every variant and level, resume, Table 3."""

import json
import time
import sys

import pytest
import torch
from typer.testing import CliRunner

from hpdm_cli import app as app_module
from hpdm_cli import common
from hpdm_core.checkpoint import list_checkpoints
from hpdm_core.data.synthetic import make_synthetic

MICRO = ["model.patch=4,8,8", "model.num_levels=2", "model.num_blocks=2", "model.levels_per_block=1,2",
         "model.interface_dim=32", "model.latent_dim=32", "model.num_latents=4", "model.head_dim=16",
         "model.latent_layers=1", "model.fourier_features=2", "model.num_classes=2", "train.batch_size=2",
         "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=1"]


def ablate(out, data, *extra):
    args = ["ablate", "--out", out, "--data", data, "--preset", "tiny", "--num", "3", "--sample-steps", "2",
            "--device", "cpu", "--json", *extra]
    for item in MICRO:
        args += ["--set", item]
    result = CliRunner().invoke(app_module.app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    data = root / "d.h5"
    make_synthetic(data, num_videos=6, frames=8, resolution=16, classes=2, seed=0)
    first = ablate(root / "out", data, "--steps", "2", "--variants", "default,shallow")
    return root, data, first


def test_architecture_suite_writes_every_variant_and_level(suite):
    root, _, results = suite
    out = root / "out"
    assert [r["variant"] for r in results["rows"]] == ["shallow", "default"]  # the paper's row order
    assert results["metric"] == "FD (random I3D)" and results["proxy"] is True
    for row in results["rows"]:
        assert set(row["fd"]) == {"0", "1"} and all(v >= 0 for v in row["fd"].values())
        assert row["videos_per_s"] > 0 and row["checkpoint_step"] == 2
        assert len(row["consistency"]["coarse_mae"]) == 1 and "all" in row["consistency"]["seam"]
        # Each variant is a normal run folder: config, checkpoint, its own result.
        assert list_checkpoints(out / row["variant"]) and (out / row["variant"] / "config.toml").is_file()
        assert json.loads((out / row["variant"] / "result.json").read_text())["fd"] == row["fd"]
    assert "fusion = \"shallow\"" in (out / "shallow" / "config.toml").read_text()
    table = (out / "table.md").read_text()
    assert "| Shallow fusion |" in table and "| Default model |" in table
    assert "FD (random I3D)@3 4×8²" in table and "FD (random I3D)@3 8×16²" in table and "NOT FVD" in table
    assert json.loads((out / "results.json").read_text())["rows"][0]["variant"] == "shallow"


def test_rerun_skips_finished_variants_and_resumes_a_half_done_one(suite, monkeypatch):
    from hpdm_core import ablation

    root, data, first = suite
    out = root / "out"
    trained = []
    real_train = ablation.train_variant
    monkeypatch.setattr(ablation, "train_variant", lambda cfg, run_dir, *a, **k: trained.append(run_dir.name)
                        or real_train(cfg, run_dir, *a, **k))
    again = ablate(out, data, "--steps", "2", "--variants", "default,shallow")
    assert trained == [] and all(r["reused"] for r in again["rows"])
    assert [r["fd"] for r in again["rows"]] == [r["fd"] for r in first["rows"]]

    (out / "default" / "result.json").unlink()  # as if interrupted after training, before scoring
    third = ablate(out, data, "--steps", "2", "--variants", "default,shallow")
    assert trained == ["default"]
    row = {r["variant"]: r for r in third["rows"]}
    assert row["shallow"]["reused"] and not row["default"]["reused"]
    assert row["default"]["trained_steps"] == 0  # resumed from its checkpoint: nothing left to train
    assert row["default"]["fd"] == first["rows"][1]["fd"]  # same weights, seed and labels: same number


class PooledFeatures(torch.nn.Module):
    """A cheap stand-in for the I3D (the suite's logic is under test, not the detector)."""

    feature_dim, min_frames = 6, 1

    def forward(self, videos):  # uint8 [B, F, H, W, 3]
        x = videos.float() / 255
        return torch.cat([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], 1)


def test_inference_suite_lists_all_overlap_strategies(suite, monkeypatch):
    from hpdm_core import ablation

    monkeypatch.setattr(ablation, "make_scorer", lambda i3d, device="cpu": ablation.Scorer(
        PooledFeatures(), "FD (test features)", "pooled", proxy=True, min_size=0))
    root, _, _ = suite
    out = root / "inference"
    started = time.perf_counter()
    result = CliRunner().invoke(app_module.app, ["ablate", "--suite", "inference", "--run", str(root / "out" / "default"),
                                                 "--out", str(out), "--num", "2", "--sample-steps", "2",
                                                 "--device", "cpu", "--json"])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, (result.output, result.exception)
    results = json.loads(result.stdout)
    assert [r["overlap"] for r in results["rows"]] == ["none", "w", "h", "hw", "f", "fw", "fh", "fhw"]
    assert sum(r["sample_seconds"] for r in results["rows"]) < elapsed  # seconds of this run, not another unit
    assert results["levels"] == [1]  # level 0 is one tile: overlap cannot change it
    for row in results["rows"]:
        assert set(row["fd"]) == {"1"} and row["sample_seconds"] > 0 and row["tile_evaluations"] > 0
    evals = {r["overlap"]: r["tile_evaluations"] for r in results["rows"]}
    assert evals["none"] < evals["w"] < evals["hw"] < evals["fhw"]  # overlap costs more tiles
    table = (out / "table.md").read_text()
    assert "| No overlapping |" in table and "| 50% f/h/w-overlapping |" in table and "Sampling time" in table


def test_bad_input_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common.stderr, "width", 400)
    cases = [["ablate", "--out", str(tmp_path), "--preset", "tiny"],  # no --data / --steps
             ["ablate", "--suite", "inference", "--out", str(tmp_path)],  # no --run
             ["ablate", "--out", str(tmp_path), "--data", "x.h5", "--steps", "1", "--preset", "tiny",
              "--variants", "default,bogus"]]
    for argv in cases:
        monkeypatch.setattr(sys, "argv", ["hpdm", *argv])
        with pytest.raises(SystemExit) as exit_:
            app_module.main()
        assert exit_.value.code == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "error:" in err and "Traceback" not in err


def test_bad_overlap_exits_2_before_training(tmp_path, capsys, monkeypatch):
    """`--overlap xyz` used to fail after every variant had trained (7 minutes on the tiny preset)."""
    from hpdm_core import ablation

    monkeypatch.setattr(common.stderr, "width", 400)
    monkeypatch.setattr(ablation, "train_variant", lambda *a, **k: pytest.fail("trained before checking --overlap"))
    data = tmp_path / "d.h5"
    make_synthetic(data, num_videos=2, frames=8, resolution=16, classes=2, seed=0)
    for extra, message in ((["--overlap", "xyz"], "overlap"), (["--batch-size", "0"], "--batch-size >= 1"),
                           (["--sample-steps", "0"], "--sample-steps >= 1")):
        monkeypatch.setattr(sys, "argv", ["hpdm", "ablate", "--out", str(tmp_path / "out"), "--data", str(data),
                                          "--steps", "1", "--preset", "tiny", *extra])
        with pytest.raises(SystemExit) as exit_:
            app_module.main()
        err = " ".join(capsys.readouterr().err.split())
        assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
