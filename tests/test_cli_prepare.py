"""`hpdm prepare ucf101|synthetic` and `hpdm info`: output streams and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from test_ucf101 import CORRUPT, VIDEOS, build_mini_ucf101
from tests.helpers import hpdm




def test_synthetic_then_info(tmp_path, monkeypatch, capsys):
    out = tmp_path / "syn.h5"
    code, stdout, _ = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(out), "--num-videos", "5",
                           "--frames", "6", "--resolution", "16", "--classes", "3", "--seed", "2")
    assert code == 0 and "videos" in stdout
    code, stdout, _ = hpdm(monkeypatch, capsys, "info", str(out), "--json")
    summary = json.loads(stdout)
    assert code == 0
    assert {k: summary[k] for k in ("videos", "frames", "classes", "resolution", "fps", "split")} == {
        "videos": 5, "frames": 30, "classes": 3, "resolution": [16, 16], "fps": 8.0, "split": "all"}


def test_ucf101_reports_skipped_video(tmp_path, monkeypatch, capsys):
    src = build_mini_ucf101(tmp_path / "ucf")
    out = tmp_path / "ucf.h5"
    code, stdout, stderr = hpdm(monkeypatch, capsys, "prepare", "ucf101", str(src), "--out", str(out),
                                "--resolution", "16", "--workers", "1", "--split", "train", "--max-frames", "3",
                                "--compression", "lzf", "--json")
    result = json.loads(stdout)
    assert code == 0 and CORRUPT in stderr and "skipped" in stderr
    # decoded counts videos that were decoded, not the one that failed (issue 25: "4 decoded, 2 written")
    assert result["failed"][0]["name"] == CORRUPT and result["videos"] == 5 and result["decoded"] == 5
    with h5py.File(out) as f:
        assert f["frames"].compression == "lzf" and f["frames"].shape == (15, 16, 16, 3)
    code, stdout, _ = hpdm(monkeypatch, capsys, "info", str(out), "--json")
    assert code == 0 and json.loads(stdout)["unreadable_skipped"] == 1
    assert len(VIDEOS) == 9


def test_bad_input_exit_codes(tmp_path, monkeypatch, capsys):
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "ucf101", str(tmp_path / "nope"), "--out",
                           str(tmp_path / "x.h5"))
    assert code == 2 and "does not exist" in stderr and "Traceback" not in stderr
    src = build_mini_ucf101(tmp_path / "ucf")
    (src / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n")
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "ucf101", str(src), "--out", str(tmp_path / "x.h5"))
    assert code == 2 and "classInd.txt" in stderr
    code, _, _ = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(tmp_path / "s.h5"),
                      "--classes", "99")
    assert code == 2
    code, _, stderr = hpdm(monkeypatch, capsys, "info", str(tmp_path / "missing.h5"))
    assert code == 3 and "hpdm prepare" in stderr
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2, 3]
    code, _, stderr = hpdm(monkeypatch, capsys, "info", str(tmp_path / "other.h5"))
    assert code == 2 and "missing" in stderr
    (tmp_path / "text.h5").write_text("not hdf5")
    assert hpdm(monkeypatch, capsys, "info", str(tmp_path / "text.h5"))[0] == 2


def test_module_entry_point_exit_code(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "hpdm_cli", "info", str(tmp_path / "missing.h5")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 3 and "does not exist" in " ".join(result.stderr.split()) and result.stdout == ""


@pytest.mark.parametrize("flag", ["--split", "--compression"])
def test_choices_are_checked_by_the_parser(tmp_path, monkeypatch, capsys, flag):
    code, _, _ = hpdm(monkeypatch, capsys, "prepare", "ucf101", str(tmp_path), "--out", str(tmp_path / "x.h5"),
                      flag, "bogus")
    assert code == 2


@pytest.mark.parametrize("args, message", [
    (["synthetic", "--fps", "inf"], "--fps must be a positive number"),
    (["synthetic", "--fps", "nan"], "--fps must be a positive number"),
    (["ucf101", "SRC", "--fps", "inf", "--max-frames", "2"], "--fps must be a positive number"),
    (["ucf101", "SRC", "--fps", "nan"], "--fps must be a positive number"),
    (["ucf101", "SRC", "--resolution", "100000"], "--resolution must be between 8 and 4096"),
])
def test_out_of_range_numbers_exit_2(args, message, tmp_path, monkeypatch, capsys):
    src = build_mini_ucf101(tmp_path / "ucf") if "SRC" in args else None
    args = [str(src) if a == "SRC" else a for a in args]
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", *args, "--out", str(tmp_path / "x.h5"))
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr
    assert not (tmp_path / "x.h5").exists()


def test_existing_out_needs_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.h5"
    args = ["prepare", "synthetic", "--out", str(out), "--num-videos", "2", "--frames", "2", "--resolution", "8"]
    assert hpdm(monkeypatch, capsys, *args)[0] == 0
    code, _, stderr = hpdm(monkeypatch, capsys, *args, "--seed", "1")
    assert code == 2 and "--overwrite" in stderr
    assert hpdm(monkeypatch, capsys, *args, "--seed", "1", "--overwrite")[0] == 0
    # An unrelated .h5 given as prepare ucf101's --out is left alone.
    src = build_mini_ucf101(tmp_path / "ucf")
    before = out.read_bytes()
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "ucf101", str(src), "--out", str(out), "--resolution", "16",
                           "--workers", "1", "--split", "test")
    assert code == 2 and "--overwrite" in stderr and out.read_bytes() == before
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(folder))
    assert code == 2 and "is a folder" in stderr


def test_version(monkeypatch, capsys):
    from hpdm_core import __version__

    code, stdout, _ = hpdm(monkeypatch, capsys, "--version")
    assert code == 0 and stdout.strip() == f"hpdm {__version__}"


def test_os_error_is_a_message_with_exit_1(tmp_path, monkeypatch, capsys):
    import hpdm_cli.prepare

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "s.h5.tmp"))

    monkeypatch.setattr(hpdm_cli.prepare, "make_synthetic", full_disk)
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(tmp_path / "s.h5"))
    stderr = " ".join(stderr.split())
    assert code == 1 and "the disk is full: writing" in stderr and "s.h5" in stderr and "Traceback" not in stderr


def test_synthetic_captions_holdout_and_still_through_info(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cap.h5"
    code, _, _ = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(out), "--num-videos", "20",
                      "--frames", "4", "--resolution", "16", "--captions", "--colours", "3", "--shapes", "2",
                      "--holdout-pairs", "2", "--seed", "1")
    assert code == 0
    code, stdout, _ = hpdm(monkeypatch, capsys, "info", str(out), "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["captioned"] == 20 and summary["classes"] == 6 and summary["kind"] == "videos"
    assert len(summary["holdout_pairs"]) == 2
    still = tmp_path / "still.h5"
    code, _, _ = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(still), "--num-videos", "5",
                      "--resolution", "16", "--still")
    code, stdout, _ = hpdm(monkeypatch, capsys, "info", str(still), "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["kind"] == "images" and summary["frames"] == 5 and summary["captioned"] == 0
    code, _, stderr = hpdm(monkeypatch, capsys, "prepare", "synthetic", "--out", str(tmp_path / "x.h5"),
                           "--holdout-pairs", "1")
    assert code == 2 and "needs --captions" in stderr
