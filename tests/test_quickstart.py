"""examples/quickstart.sh, scaled down through its environment knobs: every stage runs through the CLI
and leaves valid videos, a PNG and a labelled proxy distance; a second run reuses the data and run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpdm_core import config as config_lib
from hpdm_core.data.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))[::2, ::2]  # render_samples repeats each pixel twice


def scaled_down_env(tmp_path, **knobs) -> dict:
    """The quickstart's knobs for a run of seconds: 6 videos of 16x32x32, a 2-level model, 2 steps."""
    return {**os.environ, "DEMO_DIR": str(tmp_path / "demo"), "HPDM": f"{sys.executable} -m hpdm_cli",
            "TRAIN_STEPS": "2", "NUM_VIDEOS": "6", "FRAMES": "16", "RESOLUTION": "32", "NUM_SAMPLES": "2",
            "SAMPLE_STEPS": "2", "OVERLAP": "hw", "FVD_NUM": "2", "CLASSIFIER_STEPS": "2", "CLASSES": "4",
            "EXTRA_SET": "model.num_levels=2 model.num_blocks=2 model.levels_per_block=1,2 train.batch_size=2 "
                         "model.interface_dim=32 model.latent_dim=32 model.head_dim=16 model.latent_layers=1",
            **knobs}


def run_quickstart(tmp_path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "examples" / "quickstart.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the quickstart is a bash script")
def test_quickstart_pipeline_scaled_down(tmp_path):
    env = scaled_down_env(tmp_path)
    run = run_quickstart(tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    demo = tmp_path / "demo"
    grid = read_video(demo / "samples.mp4")
    gif = read_video(demo / "samples.gif")
    assert grid.shape[0] == 16 and gif.shape[0] == 16 and grid.shape[-1] == 3  # 16 frames of 16x32x32 videos
    assert grid.shape[1] >= 32 and grid.shape[2] >= 64  # two 32x32 videos side by side
    png = read_png(demo / "samples_frames.png")
    assert png.shape == (2 * 34 + 2, 8 * 34 + 2, 3)  # a row per video, 8 frames, 2-pixel padding
    with np.load(demo / "samples.npz") as arrays:
        videos = arrays["videos"]
    assert videos.shape == (2, 16, 32, 32, 3)
    assert np.array_equal(png[2:34, 2:34], videos[0, 0])  # the first frame of the first video, unchanged
    assert "proxy" in run.stdout.lower() and "random_i3d" in run.stdout  # the distance is labelled as a proxy
    assert "classifier accuracy" in run.stdout and (demo / "classifier.pt").exists()
    assert "consistency:" in run.stdout

    again = run_quickstart(tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kept" in again.stderr and "nothing to do" in again.stderr  # data and training reused


@pytest.mark.skipif(shutil.which("bash") is None, reason="the quickstart is a bash script")
def test_quickstart_gpu_schedule_trains_on_more_clips_and_knobs_still_win(tmp_path):
    """SCHEDULE=gpu (what auto picks where torch sees CUDA): batches of 32 with loader workers; TRAIN_STEPS
    and EXTRA_SET given by the user still win. Run here on the CPU, scaled down."""
    env = scaled_down_env(tmp_path, SCHEDULE="gpu")
    run = run_quickstart(tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gpu schedule" in run.stderr
    cfg = config_lib.load(tmp_path / "demo" / "run" / "config.toml")
    assert cfg.data.num_workers == 4  # from the gpu schedule
    assert cfg.train.batch_size == 2 and cfg.train.steps == 2  # EXTRA_SET and TRAIN_STEPS beat the schedule's


@pytest.mark.skipif(shutil.which("bash") is None, reason="the quickstart is a bash script")
def test_quickstart_refuses_an_unknown_schedule_before_any_work(tmp_path):
    run = run_quickstart(tmp_path, scaled_down_env(tmp_path, SCHEDULE="tpu"), timeout=60)
    assert run.returncode == 2
    assert "SCHEDULE must be auto, cpu or gpu, got 'tpu'" in run.stderr
    assert not (tmp_path / "demo" / "data.h5").exists()
