import importlib.util
import json
import sys

import h5py
import numpy as np
import pytest
import torch

from hpdm_cli import app as app_module
from hpdm_cli import common
from hpdm_core.checkpoint import latest_checkpoint, list_checkpoints
from hpdm_core.data.h5store import VideoStoreWriter

SMALL = ["model.patch=2x4x4", "model.token=1x2x2", "model.interface_dim=16", "model.latent_dim=16",
         "model.num_latents=4", "model.head_dim=8", "model.latent_layers=1", "model.num_blocks=3",
         "model.levels_per_block=1,2,3", "model.fourier_features=2", "model.num_classes=3",
         "train.warmup_steps=2", "train.log_every=1", "train.checkpoint_every=2", "data.num_workers=0"]


def sets(*extra):
    out = []
    for item in SMALL + list(extra):
        out += ["--set", item]
    return out


def hpdm(capsys, monkeypatch, *args):
    """Run the CLI in this process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hpdm", *map(str, args)])
    monkeypatch.setattr(common.stderr, "width", 400)  # no wrapping inside paths
    try:
        app_module.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


def write_videos(path, count=4, frames=10, size=16, labels=None):
    rng = np.random.default_rng(0)
    with VideoStoreWriter(path, size, size) as writer:
        for i in range(count):
            writer.append(rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
                          label=(labels[i] if labels else i % 3))
        writer.finish(["a", "b", "c"], fps=8.0)
    return path


@pytest.fixture
def data(tmp_path):
    return write_videos(tmp_path / "videos.h5")


def test_train_writes_run_folder_and_resumes_to_new_total(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, out, err = hpdm(capsys, monkeypatch, "train", "--data", data, "--preset", "tiny", "--run-dir", run,
                          "--steps", 2, "--batch-size", 2, "--device", "cpu", "--json", *sets())
    assert code == 0, err
    summary = json.loads(out)
    assert summary["step"] == 2 and summary["samples_seen"] == 4
    assert f"{summary['parameters']:,} parameters" in err
    assert (run / "config.toml").is_file() and latest_checkpoint(run).name == "step_00000002.pt"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and "loss_level_2" in metrics[-1]
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # Resume with nothing but the run folder and a larger total: continues from step 2.
    code, out, err = hpdm(capsys, monkeypatch, "train", "--run-dir", run, "--steps", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == 3 and "resuming from" in err and "step_00000002.pt" in err
    assert [p.name for p in list_checkpoints(run)][-1] == "step_00000003.pt"

    # At its total already: nothing to do, nothing written.
    code, out, err = hpdm(capsys, monkeypatch, "train", "--run-dir", run, "--steps", 3, "--json")
    assert code == 0 and json.loads(out)["step"] == 3 and "nothing to do" in err

    # The same command line as the first run is accepted; a different setting is refused.
    code, _, err = hpdm(capsys, monkeypatch, "train", "--data", data, "--preset", "tiny", "--run-dir", run,
                        "--steps", 3, "--batch-size", 2, *sets())
    assert code == 0, err
    code, _, err = hpdm(capsys, monkeypatch, "train", "--run-dir", run, "--preset", "tiny", "--batch-size", 2,
                        *sets("train.lr=0.1"))
    assert code == 2 and "train.lr" in err and "different config" in err


def test_infinite_lr_is_refused_before_training(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    for lr in ("inf", "nan"):
        code, _, err = hpdm(capsys, monkeypatch, "train", "--data", data, "--preset", "tiny", "--run-dir", run,
                            "--steps", 4, "--batch-size", 2, *sets(f"train.lr={lr}"))
        assert code == 2 and "train.lr must be a finite number" in err
        assert not run.exists()  # nothing written for a refused run


def bad_data_file(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4, 3), np.uint8)
    return path


@pytest.mark.parametrize("case, expect", [
    ("foreign file", "missing frames"),
    ("unknown preset", "unknown preset 'huge'"),
    ("unknown key", "unknown config key 'model.width'"),
    ("token does not divide patch", "must divide model.patch"),
    ("levels_per_block length", "one per block"),
    ("levels_per_block decreasing", "non-decreasing"),
    ("too short", "shorter than the 8 frames"),
    ("too small", "holds 16x16 videos but the target is 32x32"),
    ("too many classes", "model.num_classes=5"),
    ("new run without preset", "start one with --preset"),
])
def test_bad_input_exits_2_with_what_to_fix(case, expect, data, tmp_path, capsys, monkeypatch):
    args = ["train", "--data", data, "--preset", "tiny", "--run-dir", tmp_path / "run", "--steps", 1,
            "--batch-size", 2]
    extra = []
    if case == "foreign file":
        args[2] = bad_data_file(tmp_path)
    elif case == "unknown preset":
        args[4] = "huge"
    elif case == "unknown key":
        extra = ["model.width=3"]
    elif case == "token does not divide patch":
        extra = ["model.token=1x3x3"]
    elif case == "levels_per_block length":
        extra = ["model.levels_per_block=1,3"]
    elif case == "levels_per_block decreasing":
        extra = ["model.levels_per_block=2,1,3"]
    elif case == "too short":
        args[2] = write_videos(tmp_path / "short.h5", frames=6)
    elif case == "too small":
        extra = ["model.patch=2x8x8"]
    elif case == "too many classes":
        args[2] = write_videos(tmp_path / "labels.h5", labels=[0, 1, 4, 2])
    elif case == "new run without preset":
        args = ["train", "--data", data, "--run-dir", tmp_path / "run"]
    code, out, err = hpdm(capsys, monkeypatch, *args, *(sets(*extra) if "--preset" in args else []))
    assert code == 2, err
    assert expect in err
    assert "Traceback" not in err and out == ""
    assert latest_checkpoint(tmp_path / "run") is None


def test_missing_data_file_exits_3(tmp_path, capsys, monkeypatch):
    code, _, err = hpdm(capsys, monkeypatch, "train", "--data", tmp_path / "nope.h5", "--preset", "tiny",
                        "--run-dir", tmp_path / "run", *sets())
    assert code == 3 and "does not exist" in err


def test_checkpoints_hold_plain_tensors(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, _, err = hpdm(capsys, monkeypatch, "train", "--data", data, "--preset", "tiny", "--run-dir", run,
                        "--steps", 1, "--batch-size", 2, *sets())
    assert code == 0, err
    state = torch.load(latest_checkpoint(run), weights_only=True)
    assert state["step"] == 1 and state["config"]["model"]["latent_dim"] == 16
    assert isinstance(state["rng"]["torch"], torch.Tensor)
