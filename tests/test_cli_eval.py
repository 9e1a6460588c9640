import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from hpdm_cli.app import app
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.metrics import fvd as fvd_module
from hpdm_core.metrics.i3d import I3DFeatures, random_i3d


def _hpdm(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "hpdm_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    with VideoStoreWriter(tmp_path / "real.h5", 32, 32) as writer:
        for _ in range(4):
            writer.append(rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
        writer.finish([], fps=8.0)
    np.savez(tmp_path / "fake.npz", rng.integers(0, 256, (4, 10, 32, 32, 3), dtype=np.uint8))
    return tmp_path / "real.h5", tmp_path / "fake.npz"


def test_missing_weights_exit_3_with_where_to_get_them(data, tmp_path):
    real, fake = data
    proc = _hpdm("eval-fvd", "--real", real, "--fake", fake, "--i3d", tmp_path / "i3d_torchscript.pt")
    assert proc.returncode == 3
    message = " ".join(proc.stderr.split())
    for needle in ("i3d_torchscript.pt", "i3d_pretrained_400.pt", "deepmind/i3d-kinetics-400/1", "--i3d"):
        assert needle in message
    assert "Traceback" not in proc.stderr
    proc = _hpdm("eval-fvd", "--real", real, "--fake", fake, "--random-i3d", 0, "--c3d", tmp_path / "c3d.npz")
    assert proc.returncode == 3
    message = " ".join(proc.stderr.split())
    for needle in ("c3d.npz", "conv3d_deepnetA_ucf.npz", "mean2.npz", "c3d_ucf101.pt", "--c3d"):
        assert needle in message


def test_bad_input_exit_2(data, tmp_path):
    real, fake = data
    proc = _hpdm("eval-fvd", "--real", real, "--fake", fake, "--random-i3d", 0, "--frames", 8, "--num", 4)
    assert proc.returncode == 2 and "at least 9 frames" in " ".join(proc.stderr.split())


def test_eval_fvd_json_and_table(data, tmp_path, monkeypatch):
    real, fake = data
    # The random I3D on native 32x32 frames (no 224 resize) keeps this test fast.
    monkeypatch.setattr(fvd_module, "random_i3d_detector",
                        lambda seed, resize, device: I3DFeatures(random_i3d(seed), resize=None, name="random_i3d"))
    args = ["eval-fvd", "--real", str(real), "--fake", str(fake), "--random-i3d", "0", "--num", "4", "--frames", "9",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["proxy"] is True and report["comparable"] is False and report["fake_clips"] == 4
    assert report["num"] == 4 and report["frames"] == 9 and np.isfinite(report["fvd"])
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0
    assert "FVD_9@4" in table.stdout and "proxy" in table.stdout and "cached" in table.stdout


def _main(monkeypatch, capsys, *args):
    """The real entry point in this process: (exit code, stdout, stderr without line wrapping)."""
    from hpdm_cli.app import main

    monkeypatch.setattr(sys, "argv", ["hpdm", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


@pytest.fixture
def fast_proxy(monkeypatch):
    monkeypatch.setattr(fvd_module, "random_i3d_detector",
                        lambda seed, resize, device: I3DFeatures(random_i3d(seed), resize=None, name="random_i3d"))


def test_cut_off_cache_entry_is_recomputed_and_unwritable_cache_is_a_note(data, tmp_path, monkeypatch, capsys,
                                                                          fast_proxy):
    real, fake = data
    args = ["eval-fvd", "--real", real, "--fake", fake, "--random-i3d", 0, "--num", 4, "--frames", 9, "--json",
            "--cache-dir", tmp_path / "cache"]
    code, out, err = _main(monkeypatch, capsys, *args)
    assert code == 0, err
    entry = tmp_path / "cache" / "fvd" / f"{json.loads(out)['cache_file'].rsplit('/', 1)[1]}"
    entry.write_bytes(entry.read_bytes()[:100])  # a kill during the write of an older hpdm
    code, out, err = _main(monkeypatch, capsys, *args)
    assert code == 0 and not json.loads(out)["real_stats_cached"], err
    assert len(entry.read_bytes()) > 100  # written again, whole

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "fvd").write_text("a file where the cache folder goes")  # as unwritable as a read-only folder
    code, out, err = _main(monkeypatch, capsys, *args[:-1], blocked)
    assert code == 0 and np.isfinite(json.loads(out)["fvd"]) and "real statistics not cached" in err, err


def test_bad_generated_files_exit_2(data, tmp_path, monkeypatch, capsys, fast_proxy):
    from hpdm_core.data.video_io import write_video

    real, _ = data
    text = tmp_path / "x.npz"
    text.write_text("not an archive\n")
    base = ["eval-fvd", "--real", real, "--random-i3d", 0, "--num", 2, "--frames", 9]
    code, _, err = _main(monkeypatch, capsys, *base, "--fake", text)
    assert code == 2 and "not a readable .npz" in err and "Traceback" not in err
    code, _, err = _main(monkeypatch, capsys, *base, "--fake", data[1], "--resolution", 0)
    assert code == 2 and "--resolution must be at least 8" in err
    folder = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    write_video(folder / "a.mp4", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), fps=8)
    write_video(folder / "b.mp4", rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), fps=8)
    code, _, err = _main(monkeypatch, capsys, *base, "--fake", folder)
    assert code == 2 and "different sizes" in err and "--resolution" in err and "Traceback" not in err
    code, _, err = _main(monkeypatch, capsys, *base, "--fake", folder, "--resolution", 16, "--no-cache")
    assert code == 0, err


def test_classifier_notes_generated_videos_of_another_size(tmp_path):
    from hpdm_core.data.synthetic import make_synthetic
    from hpdm_core.metrics.classifier import classifier_evaluation, train_classifier

    real = make_synthetic(tmp_path / "real.h5", num_videos=8, frames=16, resolution=16, classes=2)
    train_classifier(real, tmp_path / "c.pt", steps=1, batch_size=2)
    small = np.random.default_rng(0).integers(0, 256, (2, 16, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", videos=small, labels=np.array([0, 1]))
    notes = classifier_evaluation(tmp_path / "c.pt", tmp_path / "small.npz", real=real)["classifier_notes"]
    assert any("generated videos are 8x8, the real ones 16x16" in n for n in notes), notes
    np.savez(tmp_path / "same.npz", videos=np.zeros((2, 16, 16, 16, 3), np.uint8), labels=np.array([0, 1]))
    notes = classifier_evaluation(tmp_path / "c.pt", tmp_path / "same.npz", real=real)["classifier_notes"]
    assert not any("generated videos are" in n for n in notes)
