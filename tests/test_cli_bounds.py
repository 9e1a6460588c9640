"""Every integer argument has a range its use can hold; a batch that cannot fit is refused before work (issue 25)."""

import pytest
import torch

from hpdm_core import memory
from hpdm_core.config import preset
from hpdm_core.errors import BadInputError
from test_cli_train import hpdm, write_videos

HUGE = "99999999999999999999"  # beyond int64


@pytest.fixture
def data(tmp_path):
    return write_videos(tmp_path / "videos.h5")


@pytest.mark.parametrize("args", [
    ["train", "--batch-size", HUGE],
    ["train", "--steps", HUGE + "999"],
    ["train", "--steps", "0"],
    ["sample", "--seed", "-1"],
    ["sample", "--num", HUGE],
    ["sample", "--batch-size", "0"],
    ["eval-fvd", "--random-i3d", HUGE],
    ["eval-fvd", "--random-i3d", "-1"],
    ["eval-fvd", "--frames", "0"],
    ["eval-fvd", "--subsample", "0"],
    ["prepare", "synthetic", "--seed", "-1"],
    ["prepare", "synthetic", "--num-videos", HUGE],
    ["prepare", "ucf101", "SRC", "--fold", "4"],
    ["prepare", "ucf101", "SRC", "--workers", "0"],
    ["train-classifier", "--seed", "-1"],
    ["ablate", "architecture", "--batch-size", HUGE],
])
def test_out_of_range_integers_exit_2_naming_the_option(args, data, tmp_path, capsys, monkeypatch):
    paths = {"train": ["--preset", "tiny", "--data", data, "--run-dir", tmp_path / "run"], "sample": ["--run", tmp_path / "run"],
             "eval-fvd": ["--real", data, "--fake", data], "prepare": ["--out", tmp_path / "o.h5"],
             "train-classifier": ["--data", data, "--out", tmp_path / "c.pt"],
             "ablate": ["--out", tmp_path / "abl", "--data", data, "--preset", "tiny"]}[args[0]]
    code, _, err = hpdm(capsys, monkeypatch, *args, *paths)
    err = " ".join(err.replace("│", " ").split())  # Click's message inside Rich's box
    assert code == 2 and "Traceback" not in err, err
    option = next(a for a in args if a.startswith("--"))
    assert f"Invalid value for '{option}'" in err or f"{option} must be at least" in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "o.h5").exists()


def test_an_int64_overflow_in_a_config_value_exits_2(data, tmp_path, capsys, monkeypatch):
    code, _, err = hpdm(capsys, monkeypatch, "train", "--preset", "tiny", "--data", data, "--run-dir",
                        tmp_path / "run", "--set", f"train.steps={HUGE}")
    assert code == 2 and "64-bit integer range" in err and not (tmp_path / "run").exists(), err


def test_a_training_batch_that_cannot_fit_is_refused_with_its_memory(data, tmp_path, capsys, monkeypatch):
    code, _, err = hpdm(capsys, monkeypatch, "train", "--preset", "tiny", "--data", data, "--run-dir",
                        tmp_path / "run", "--batch-size", 10 ** 12, "--device", "cpu")
    assert code == 2 and "a training step of batch 1000000000000 needs at least" in err and "GiB" in err, err
    assert not (tmp_path / "run").exists()


def test_an_fvd_batch_that_cannot_fit_is_refused_before_reading(data, capsys, monkeypatch):
    code, _, err = hpdm(capsys, monkeypatch, "eval-fvd", "--real", data, "--fake", data, "--random-i3d", 0,
                        "--batch-size", 10 ** 12, "--device", "cpu")
    assert code == 2 and "an FVD batch of 1000000000000 clips" in err and "needs at least" in err, err


def test_memory_estimates_grow_with_the_batch_and_refuse_beyond_the_machine():
    cfg = preset("tiny")
    one = memory.training_step_bytes(cfg)
    cfg.train.batch_size *= 2
    assert memory.training_step_bytes(cfg) > one > 3 * 4 * torch.Size(cfg.model.target).numel()
    assert memory.sampling_bytes((16, 64, 64), 2) == 2 * memory.sampling_bytes((16, 64, 64), 1)
    memory.check_fits(memory.sampling_bytes((16, 64, 64), 1), "cpu", "one video", "lower --batch-size")
    with pytest.raises(BadInputError, match="one video needs at least .* GiB of memory, but cpu has"):
        memory.check_fits(memory.available_bytes("cpu") + 1, "cpu", "one video", "lower --batch-size")
