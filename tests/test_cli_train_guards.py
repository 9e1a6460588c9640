"""`hpdm train` under attack (issue 12): bad settings, bad files, two processes, moved data, cut-off logs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpdm_core.checkpoint import latest_checkpoint
from test_cli_train import hpdm, sets, write_videos

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path):
    return write_videos(tmp_path / "videos.h5")


def train(capsys, monkeypatch, data, run, *extra, steps=1, overrides=(), batch_size=2):
    args = ["train", "--preset", "tiny", "--run-dir", run, "--steps", steps, "--device", "cpu",
            *(["--batch-size", batch_size] if batch_size else []), *extra, *sets(*overrides)]
    if data is None:  # a resume from the run folder alone
        args = ["train", "--run-dir", run, "--steps", steps, *extra]
    return hpdm(capsys, monkeypatch, *args[:1], *(["--data", data] if data is not None else []), *args[1:])


@pytest.mark.parametrize("setting, expect", [
    ("train.checkpoint_every=0", "train.checkpoint_every must be at least 1"),
    ("train.log_every=0", "train.log_every must be at least 1"),
    ("data.num_workers=-1", "data.num_workers must be at least 0"),
    ("train.lr=-1", "train.lr must be positive"),
    ("train.ema_decay=2", "train.ema_decay must lie in [0, 1]"),
    ("train.warmup_steps=-10", "train.warmup_steps must be at least 0"),
    ("model.num_blocks=0", "model.num_blocks must be at least 1"),
    ("train.lr=nan", "train.lr must be a finite number"),
    ("sample.guidance=inf", "sample.guidance must be a finite number"),
    ("sample.cfg=inf", "sample.guidance must be a finite number"),  # the old name of the setting is still read
])
def test_bad_settings_exit_2_before_anything_is_written(setting, expect, data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, out, err = train(capsys, monkeypatch, data, run, overrides=[setting])
    assert code == 2, err
    assert expect in err and "Traceback" not in err and out == ""
    assert not run.exists()


@pytest.mark.parametrize("line, expect", [
    ('lr = "fast"', "train.lr must be a float, got 'fast'"),
    ("batch_size = 2.5", "train.batch_size must be an int, got 2.5"),
    ('[model]\npatch = "abc"', "model.patch must be a list of ints, got 'abc'"),
])
def test_bad_toml_values_exit_2_and_write_no_config(line, expect, data, tmp_path, capsys, monkeypatch):
    config = tmp_path / "bad.toml"
    config.write_text(line if line.startswith("[") else f"[train]\n{line}\n")
    run = tmp_path / "run"
    code, _, err = hpdm(capsys, monkeypatch, "train", "--data", data, "--preset", "tiny", "--config", config,
                        "--run-dir", run)
    assert code == 2 and expect in err and "Traceback" not in err, err
    assert not (run / "config.toml").exists()


def test_config_that_is_a_folder_or_binary_exits_2(data, tmp_path, capsys, monkeypatch):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)))
    for config, expect in ((tmp_path, "cannot read config file"), (binary, "is not valid TOML")):
        code, _, err = train(capsys, monkeypatch, data, tmp_path / "run", "--config", config)
        assert code == 2 and expect in err and "Traceback" not in err, err


def test_run_dir_that_is_a_file_exits_2(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.write_text("not a folder")
    code, _, err = train(capsys, monkeypatch, data, run)
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err


def test_read_only_run_folder_exits_2(data, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: play a user without write permission
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and not (
            mode & os.W_OK and Path(path) == parent))
    try:
        code, _, err = train(capsys, monkeypatch, data, parent / "run")
    finally:
        parent.chmod(0o700)
    assert code == 2 and "permission denied" in err and "Traceback" not in err


@pytest.mark.parametrize("frames", [np.zeros((20, 16, 16, 3), np.float32), np.zeros((20, 16, 16, 1), np.uint8)])
def test_frames_that_are_not_uint8_rgb_fail_info_and_train(frames, tmp_path, capsys, monkeypatch):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = frames
        f["offsets"], f["labels"], f["groups"] = np.array([0, 10, 20]), np.array([0, 1]), np.array([-1, -1])
        f["names"] = np.array([b"a", b"b"], dtype=object)
        f.attrs["completed"], f.attrs["class_names"] = True, json.dumps(["a", "b", "c"])
    code, _, err = hpdm(capsys, monkeypatch, "info", path)
    assert code == 2 and "frames must be uint8 [frames, H, W, 3]" in err
    code, _, err = train(capsys, monkeypatch, path, tmp_path / "run")
    assert code == 2 and "frames must be uint8 [frames, H, W, 3]" in err and "Traceback" not in err


def test_resume_accepts_moved_data_but_not_other_data(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, _, err = train(capsys, monkeypatch, data, run)
    assert code == 0, err
    moved = tmp_path / "elsewhere" / "renamed.h5"
    moved.parent.mkdir()
    data.rename(moved)
    code, _, err = train(capsys, monkeypatch, moved, run, steps=2)
    assert code == 0, err
    other = write_videos(tmp_path / "other.h5", count=2, labels=[0, 2])  # 2 videos instead of 4
    code, _, err = train(capsys, monkeypatch, other, run, steps=3)
    assert code == 2 and "is not the data" in err and "Traceback" not in err
    assert f'path = "{moved}"' in (run / "config.toml").read_text()  # the refused resume changed nothing
    assert latest_checkpoint(run).name == "step_00000002.pt"


def test_cut_off_metrics_line_does_not_break_resume(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train(capsys, monkeypatch, data, run, steps=2)[0] == 0
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.5, "lo')  # what a kill during the write leaves
    code, _, err = train(capsys, monkeypatch, None, run, steps=3)
    assert code == 0 and "Traceback" not in err, err
    assert "step 3/3 loss" in err and "eta" in err  # the plain progress line of a log without a terminal
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_second_process_on_a_run_folder_exits_2_until_the_first_is_gone(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train(capsys, monkeypatch, data, run)[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from hpdm_core.files import lock_run_dir
        lock_run_dir({str(run)!r})
        print("locked", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        config_before = (run / "config.toml").read_text()
        code, _, err = train(capsys, monkeypatch, data, run, steps=2, overrides=["train.seed=5"])
        assert code == 2 and f"in use by another hpdm process (pid {holder.pid})" in err, err
        assert (run / "config.toml").read_text() == config_before
    finally:
        holder.send_signal(signal.SIGKILL)  # the OS releases the lock of a killed process
        holder.wait()
    code, _, err = train(capsys, monkeypatch, None, run, steps=2)
    assert code == 0, err


def test_resume_refuses_other_frames_of_the_same_layout_and_upgrades_old_fingerprints(tmp_path, capsys, monkeypatch):
    import tomllib

    from hpdm_core.data.h5store import VideoStore, dataset_fingerprint, structural_fingerprint

    files = {}
    for seed in (0, 7):  # same videos, lengths, labels and names; other frames
        files[seed] = tmp_path / f"seed{seed}.h5"
        code, _, err = hpdm(capsys, monkeypatch, "prepare", "synthetic", "--out", files[seed], "--num-videos", 3,
                            "--frames", 10, "--resolution", 16, "--seed", seed)
        assert code == 0, err
    stores = {seed: VideoStore(path) for seed, path in files.items()}
    assert structural_fingerprint(stores[0]) == structural_fingerprint(stores[7])
    assert dataset_fingerprint(stores[0]) != dataset_fingerprint(stores[7])
    run = tmp_path / "run"
    assert train(capsys, monkeypatch, files[0], run)[0] == 0
    code, _, err = train(capsys, monkeypatch, files[7], run, steps=2)
    assert code == 2 and "is not the data" in err and "Traceback" not in err
    # A run folder from before version 2 holds the structural fingerprint: the same file resumes and upgrades it.
    config = run / "config.toml"
    recorded = tomllib.loads(config.read_text())["data"]["fingerprint"]
    assert recorded == dataset_fingerprint(stores[0]) and recorded.startswith("v2:")
    config.write_text(config.read_text().replace(recorded, structural_fingerprint(stores[0])))
    code, _, err = train(capsys, monkeypatch, files[0], run, steps=2)
    assert code == 0, err
    assert tomllib.loads(config.read_text())["data"]["fingerprint"] == recorded
