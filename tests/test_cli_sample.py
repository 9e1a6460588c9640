"""`hpdm sample`: output formats, the consistency report and exit code 2 for bad input."""

import json
import sys

import numpy as np
import pytest

from hpdm_core import checkpoint as checkpoint_lib
from hpdm_core import config as config_lib
from hpdm_core.config import preset
from hpdm_core.data.h5store import VideoStore


def _tiny_config(latent_dim=16):
    cfg = preset("tiny")
    m = cfg.model
    m.patch, m.token, m.num_levels = [2, 8, 8], [1, 4, 4], 2
    m.interface_dim, m.latent_dim, m.num_latents, m.head_dim = 16, latent_dim, 4, 8
    m.num_blocks, m.latent_layers, m.levels_per_block, m.fourier_features = 2, 1, [1, 2], 2
    m.num_classes = 3
    cfg.sample.steps, cfg.sample.overlap = 2, "hw"
    return cfg.validate()


def _make_run(folder, cfg, step=5):
    from hpdm_core.diffusion import build_denoiser

    folder.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, folder / "config.toml")
    weights = build_denoiser(cfg).state_dict()
    checkpoint_lib.save_checkpoint(folder, {"config": cfg.to_dict(), "model": weights, "ema": weights,
                                            "optimizer": {}, "scheduler": {}, "step": step, "samples_seen": 0})
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("run"), _tiny_config())


def hpdm(capsys, *args):
    """Run the `hpdm` entry point in-process: (exit code, stdout, stderr)."""
    from hpdm_cli.app import main

    old = sys.argv
    sys.argv = ["hpdm", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_npz_with_levels_and_json_report(run_dir, tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, stdout, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 3, "--class", 2, "--class", 0,
                                "--class", 1, "--seed", 4, "--out", out, "--save-levels", "--json",
                                "--device", "cpu")
    assert code == 0, stderr
    summary = json.loads(stdout)
    data = np.load(out)
    assert data["videos"].dtype == np.uint8 and data["videos"].shape == (3, 4, 16, 16, 3)
    assert data["labels"].tolist() == [2, 0, 1] == summary["labels"]
    assert data["level_0"].shape == (3, 2, 8, 8, 3)
    report = summary["consistency"]
    assert len(report["coarse_mae"]) == 1 and report["coarse_mae"][0] >= 0
    assert set(report["seam"]) == {"f", "h", "w", "all"}
    # 3 videos x (level 0: 3 evaluations x 1 tile x 2 rows, since `tiny` guides level 0; level 1: 1 x 18 tiles)
    assert summary["guidance_levels"] == 1
    assert summary["tile_evaluations"] == 3 * (3 * 1 * 2 + 1 * (2 * 3 * 3))
    # the same seed gives the same videos with another batch size and without the cache
    again = tmp_path / "again.npz"
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 3, "--class", 2, "--class", 0, "--class", 1,
                           "--seed", 4, "--out", again, "--batch-size", 1, "--tile-batch", 3, "--no-cache",
                           "--device", "cpu")
    assert code == 0, stderr
    assert np.abs(np.load(again)["videos"].astype(int) - data["videos"].astype(int)).max() <= 1


def test_h5_output_is_a_dataset_file(run_dir, tmp_path, capsys):
    out = tmp_path / "gen.h5"
    code, stdout, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 4, "--format", "h5", "--out", out,
                                "--device", "cpu")
    assert code == 0, stderr
    store = VideoStore(out)
    assert len(store) == 4 and store.labels.tolist() == [0, 1, 2, 0]  # default classes cycle
    assert store.names == [f"sample_{i:06d}" for i in range(4)]
    assert store.video(0).shape == (4, 16, 16, 3)
    assert "seam score" in stdout and "tiles/s" in stderr


def test_mp4_grid_and_per_sample_files(run_dir, tmp_path, capsys):
    from hpdm_core.data.video_io import read_video

    out = tmp_path / "grid.mp4"
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 2, "--out", out, "--overlap", "fhw",
                           "--device", "cpu")
    assert code == 0, stderr
    assert read_video(out).shape[0] == 4
    assert (tmp_path / "grid_000.mp4").is_file() and (tmp_path / "grid_001.mp4").is_file()


@pytest.mark.parametrize("args,message", [
    (["--overlap", "fhx"], "overlap"),
    (["--class", "3"], "out of range"),
    (["--format", "avi"], "format"),
])
def test_bad_options_exit_2(run_dir, tmp_path, capsys, args, message):
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "x.npz", *args)
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_run_without_checkpoint_exits_2(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    config_lib.save(_tiny_config(), folder / "config.toml")
    code, _, stderr = hpdm(capsys, "sample", "--run", folder, "--out", tmp_path / "x.npz")
    assert code == 2 and "checkpoint" in stderr


def test_checkpoint_from_another_config_exits_2(run_dir, tmp_path, capsys):
    other = _make_run(tmp_path / "other", _tiny_config(latent_dim=24))
    foreign = checkpoint_lib.latest_checkpoint(other)
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--checkpoint", foreign, "--out", tmp_path / "x.npz")
    assert code == 2 and "config" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the command gets as far as loading the model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(checkpoint_lib, "load_for_inference", refuse)


@pytest.mark.parametrize("args,message", [
    (["--fps", "0"], "--fps must be a positive number"),
    (["--fps", "nan"], "--fps must be a positive number"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--cfg", "nan"], "--cfg must be a finite number"),
    (["--num", "0"], "--num must be at least 1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--overlap", "xyz"], "overlap"),
])
def test_bad_arguments_exit_2_before_the_model_loads(run_dir, tmp_path, capsys, no_model, args, message):
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--out", tmp_path / "x.npz", *args)
    stderr = " ".join(stderr.split())
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr


def test_out_that_is_a_folder_exits_2_before_sampling(run_dir, tmp_path, capsys, no_model):
    folder = tmp_path / "videos.npz"
    folder.mkdir()
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--out", folder)
    assert code == 2 and "is a folder" in " ".join(stderr.split())


def test_existing_outputs_need_overwrite(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.npz"
    out.write_bytes(b"someone's file")
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", out, "--device", "cpu")
    assert code == 2 and "--overwrite" in stderr and out.read_bytes() == b"someone's file"
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", out, "--device", "cpu",
                           "--overwrite")
    assert code == 0, stderr
    with np.load(out) as arrays:
        assert arrays["videos"].shape[0] == 1
    # A level file in the way is found before any tile is sampled.
    level = tmp_path / "g_level0.h5"
    level.write_bytes(b"x")
    import hpdm_core.sampling

    monkeypatch.setattr(hpdm_core.sampling, "generate", lambda *a, **k: pytest.fail("sampled before the check"))
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "g.h5",
                           "--save-levels", "--device", "cpu")
    assert code == 2 and "g_level0.h5 exists" in " ".join(stderr.split())


def test_plain_progress_lines_without_a_terminal(run_dir, tmp_path, capsys):
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 2, "--out", tmp_path / "p.npz",
                           "--device", "cpu")
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("tiles ")]
    assert lines and lines[-1].startswith("tiles ") and " 100% " in lines[-1] and "eta" in lines[-1]
    total = lines[-1].split()[1]
    assert total.split("/")[0] == total.split("/")[1]  # done/total, whole: not cut at 80 columns


def test_help_shows_boolean_options_as_flags_and_guidance(capsys):
    """`--save-levels` takes no value: --help must not show it as `--save-levels <bool>`."""
    from typer.testing import CliRunner

    from hpdm_cli.app import app

    result = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for name in ("--save-levels", "--no-save-levels", "--cache", "--no-cache", "--overwrite", "--raw", "--json",
                 "--guidance", "--cfg"):
        assert any(name in line for line in lines), name
    for name in ("--save-levels", "--no-cache", "--overwrite", "--raw", "--json"):
        assert all("<bool>" not in line for line in lines if name in line), name


@pytest.mark.parametrize("command", [[], ["sample"], ["prepare"], ["prepare", "synthetic"], ["eval-fvd"]])
def test_help_shows_help_itself_as_a_flag(command):
    """Click adds --help as a boolean option; every command and group shows it without `<bool>`."""
    from typer.testing import CliRunner

    from hpdm_cli.app import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    help_lines = [line for line in result.stdout.splitlines() if "--help" in line]
    assert help_lines and all("<bool>" not in line for line in help_lines)


def test_guidance_has_its_old_name_cfg(run_dir, tmp_path, capsys):
    for name in ("--guidance", "--cfg"):
        code, stdout, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / f"{name}.npz",
                                    name, "1.5", "--steps", 1, "--device", "cpu", "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["cfg"] == 1.5


def test_guidance_levels_flag(run_dir, tmp_path, capsys):
    code, stdout, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "g.npz",
                                "--guidance", "3", "--guidance-levels", "1", "--steps", 2, "--device", "cpu", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["cfg"] == 3.0 and summary["guidance_levels"] == 1
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "h.npz",
                           "--guidance-levels", "-1", "--device", "cpu")
    assert code == 2 and "--guidance-levels must be at least 0" in stderr


def test_tile_blend_flag(run_dir, tmp_path, capsys):
    code, stdout, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "t.npz",
                                "--tile-blend", "tent", "--steps", 2, "--device", "cpu", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["tile_blend"] == "tent"
    code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "u.npz",
                           "--tile-blend", "gaussian", "--device", "cpu")
    assert code == 2 and "--tile-blend must be one of uniform, tent" in stderr


def test_tile_shifts_flag(run_dir, tmp_path, capsys):
    import h5py

    code, stdout, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "s.h5",
                                "--tile-shifts", "0,1", "--overlap", "hw", "--steps", 2, "--device", "cpu", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["tile_shifts"] == [0, 1]
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["tile_shifts"] == "0,1"
    for bad, message in (("0,x", "give pixel shifts separated by commas"), ("1,1", "distinct shifts")):
        code, _, stderr = hpdm(capsys, "sample", "--run", run_dir, "--num", 1, "--out", tmp_path / "u.npz",
                               "--tile-shifts", bad, "--device", "cpu")
        assert code == 2 and message in stderr, stderr
