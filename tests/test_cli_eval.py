import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from hpdm_cli.app import _register, app
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
    _register()
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
