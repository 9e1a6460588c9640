"""Inputs that used to end in a traceback (issue 25, items 5 and 6): each is now a message and exit 2."""

import zipfile

import pytest
import torch

from hpdm_core.checkpoint import load_checkpoint
from hpdm_core.errors import BadInputError
from hpdm_core.metrics.detectors import load_c3d, load_i3d
from test_cli_train import hpdm, sets, write_videos
from test_ucf101 import build_mini_ucf101


class Evil:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.fixture
def foreign_script(tmp_path):
    """A whole TorchScript file of some other network."""
    path = tmp_path / "linear.pt"
    torch.jit.script(torch.nn.Linear(3, 4)).save(str(path))
    return path


def test_a_torchscript_that_is_not_i3d_exits_2(foreign_script, tmp_path, capsys, monkeypatch):
    real = write_videos(tmp_path / "real.h5", frames=12, size=16)
    code, _, err = hpdm(capsys, monkeypatch, "eval-fvd", "--real", real, "--fake", real, "--i3d", foreign_script,
                        "--num", 4, "--frames", 9, "--no-cache")
    assert code == 2 and "is TorchScript but not StyleGAN-V's I3D" in err and "Traceback" not in err, err


def test_a_torchscript_that_is_not_c3d_is_a_clear_error(foreign_script):
    c3d = load_c3d(foreign_script)
    with pytest.raises(BadInputError, match="is TorchScript but not StyleGAN-V's C3D"):
        c3d(torch.zeros(1, 16, 8, 8, 3, dtype=torch.uint8))


def test_a_zip_with_code_that_is_not_torchscript_is_a_clear_error(tmp_path):
    path = tmp_path / "fake_script.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/code/__torch__.py", "def forward(self): pass\n")
    for load, what in ((load_i3d, "StyleGAN-V's i3d_torchscript.pt"), (load_c3d, "StyleGAN-V's c3d_ucf101.pt")):
        with pytest.raises(BadInputError, match=f"looks like TorchScript but does not load as {what}"):
            load(path)


def test_ucf101_split_lists_that_are_not_text_exit_2(tmp_path, capsys, monkeypatch):
    src = build_mini_ucf101(tmp_path / "ucf")
    lists = src / "ucfTrainTestlist" / "trainlist01.txt"
    lists.write_bytes(lists.read_bytes() + b"Caf\xe9/v_x_g01_c01.avi 1\n")
    code, _, err = hpdm(capsys, monkeypatch, "prepare", "ucf101", src, "--out", tmp_path / "u.h5", "--split", "train")
    assert code == 2 and "trainlist01.txt:" in err and "not UTF-8 text (byte 0xe9)" in err and "Traceback" not in err


def test_info_on_a_folder_exits_2(tmp_path, capsys, monkeypatch):
    code, _, err = hpdm(capsys, monkeypatch, "info", tmp_path)
    assert code == 2 and "is a folder; give a dataset file" in err and "errno" not in err, err


def test_a_malicious_pickle_is_refused_without_advice_to_unpickle_it(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "hpdm-checkpoint", "payload": Evil()}, path)
    for load in (load_checkpoint, load_i3d):
        with pytest.raises(BadInputError) as err:
            load(path)
        message = str(err.value)
        assert "never runs code from a file" in message and "weights_only" not in message, message
    assert "this ran" not in capsys.readouterr().out


def test_empty_overlap_exits_2(tmp_path, capsys, monkeypatch):
    code, _, err = hpdm(capsys, monkeypatch, "sample", "--run", tmp_path / "run", "--overlap", "")
    assert code == 2 and "--overlap is empty" in err, err


def test_unlabelled_data_warns_that_classes_mean_nothing(tmp_path, capsys, monkeypatch):
    data = write_videos(tmp_path / "videos.h5", labels=[-1] * 4)
    code, _, err = hpdm(capsys, monkeypatch, "train", "--preset", "tiny", "--data", data, "--run-dir",
                        tmp_path / "run", "--steps", 1, "--batch-size", 2, "--device", "cpu", *sets())
    assert code == 0 and "warning: every video in" in err and "is unlabelled (label -1)" in err, err
