"""A full disk during any write (issue 25): a message naming the disk, the folder and the size needed,
exit 1, no partial file, and the earlier file intact. ENOSPC is simulated: no filesystem is mounted."""

import errno
import json

import numpy as np
import pytest
import torch

from hpdm_core import checkpoint as checkpoint_lib
from hpdm_core.errors import DiskFullError
from hpdm_core.files import atomic_save, atomic_write_text, is_disk_full
from hpdm_core.metrics.frechet import FeatureStats, save_stats
from test_cli_sample import _make_run, _tiny_config
from test_cli_sample import hpdm as hpdm_main
from test_cli_train import hpdm, sets, write_videos

# How torch.save reports a failed write (PyTorchStreamWriter), as seen on a full disk.
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1472 vs 1366")


def enospc(path=None):
    return OSError(errno.ENOSPC, "No space left on device", None if path is None else str(path))


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock"))


@pytest.mark.parametrize("error", [enospc(), TORCH_FULL, OSError(5, "Can't write data (file write failed: "
                                                                 "errno = 28, error message = 'No space left')")])
def test_every_form_of_enospc_is_recognised_and_others_are_not(error):
    assert is_disk_full(error)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("shape mismatch"))


def test_atomic_save_removes_the_partial_file_keeps_the_old_one_and_says_how_much(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def write(tmp):
        tmp.write_bytes(b"x" * 100)
        raise TORCH_FULL

    with pytest.raises(DiskFullError, match=r"the disk is full: writing .*model.pt failed \(the disk holding "
                                            r".* has .* free; the model needs about 2.0 KiB\)"):
        atomic_save(path, write, needed=2048, what="the model")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_checkpoint_on_a_full_disk_exits_1_and_the_run_resumes_from_the_last_one(tmp_path, capsys, monkeypatch):
    data = write_videos(tmp_path / "videos.h5")
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", data, "--run-dir", run, "--device", "cpu", "--batch-size", 2, *sets()]
    assert hpdm(capsys, monkeypatch, *args, "--steps", 1)[0] == 0
    real_save = torch.save

    def full(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"PK partial")
        raise TORCH_FULL

    monkeypatch.setattr(torch, "save", full)
    code, _, err = hpdm(capsys, monkeypatch, *args, "--steps", 2)
    assert code == 1 and "Traceback" not in err, err
    assert "the disk is full" in err and str(run / "checkpoints") in err and "the checkpoint needs about" in err
    assert "the run resumes from step_00000001.pt" in err
    kept = run / "checkpoints" / "step_00000001.pt"
    assert [p.name for p in (run / "checkpoints").iterdir()] == [kept.name]
    # The size it names is what torch.save writes (tensors and their records), within a few per cent.
    needed = checkpoint_lib.tensor_bytes(checkpoint_lib.load_checkpoint(kept))
    assert 0.95 < needed / kept.stat().st_size < 1.1
    monkeypatch.setattr(torch, "save", real_save)
    code, _, err = hpdm(capsys, monkeypatch, *args, "--steps", 2)
    assert code == 0 and "resuming from" in err and "step_00000001.pt" in err, err


def test_prepare_on_a_full_disk_exits_1_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from hpdm_core.data import h5store

    appended = {"n": 0}
    real_append = h5store.VideoStoreWriter.append

    def append(self, *a, **k):
        appended["n"] += 1
        if appended["n"] == 2:
            raise OSError(5, "Can't write data (file write failed: errno = 28, error message = 'No space left on "
                             "device')")
        return real_append(self, *a, **k)

    monkeypatch.setattr(h5store.VideoStoreWriter, "append", append)
    out = tmp_path / "s.h5"
    code, _, err = hpdm(capsys, monkeypatch, "prepare", "synthetic", "--out", out, "--num-videos", 3, "--frames", 4,
                        "--resolution", 16)
    assert code == 1 and "the disk is full: writing" in err and str(out) in err and "needs about" in err, err
    assert not out.exists() and leftovers(tmp_path) == []


def test_sample_output_on_a_full_disk_exits_1(tmp_path, capsys, monkeypatch):
    run = _make_run(tmp_path / "run", _tiny_config())
    out = tmp_path / "s.npz"

    def full(*a, **k):
        raise enospc()

    monkeypatch.setattr(np, "savez_compressed", full)
    code, _, err = hpdm_main(capsys, "sample", "--run", run, "--num", 1, "--steps", 1, "--out", out)
    err = " ".join(err.split())
    assert code == 1 and "the disk is full: writing" in err and "Traceback" not in err, err
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_cache_that_cannot_be_written_for_lack_of_space_is_a_note(tmp_path, monkeypatch):
    stats = FeatureStats(3)
    stats.update(torch.randn(4, 3))

    def full(*a, **k):
        raise enospc()

    monkeypatch.setattr(np, "savez", full)
    note = save_stats(tmp_path / "cache" / "x.npz", [stats])
    assert note.startswith("real statistics not cached: the disk is full") and leftovers(tmp_path) == []


def test_a_text_file_on_a_full_disk(tmp_path, monkeypatch):
    from pathlib import Path

    def full(self, *a, **k):
        raise enospc(self)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFullError, match="needs about 13 bytes"):
        atomic_write_text(tmp_path / "config.toml", json.dumps({"a": [1, 2]}))
