"""Text through the command line: prompts in, prompts out, and the encoder a run was trained with."""

import json

import numpy as np
import pytest
from tests.helpers import hpdm
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.text.encoder import build_random_t5, load_text_encoder
from hpdm_core.text.store import encode_file
from hpdm_core.training import setup_run
from tests.test_cli_sample import _make_run, _tiny_config


@pytest.fixture
def run(monkeypatch, capsys):
    """The real entry point (exit codes as a user gets them): (code, stdout, stderr)."""
    return lambda *args: hpdm(monkeypatch, capsys, *map(str, args))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A text-conditional run (random weights) set up on a captioned file encoded by a random T5."""
    root = tmp_path_factory.mktemp("text")
    encoder = build_random_t5(root / "t5", d_model=32, num_layers=1, num_heads=2, d_ff=32)
    data = root / "captioned.h5"
    rng = np.random.default_rng(0)
    with VideoStoreWriter(data, 32, 32) as writer:
        for i in range(4):
            writer.append(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), label=i % 2,
                          caption=["a red disc", "a green square"][i % 2])
        writer.finish(["red_disc", "green_square"], fps=8.0)
    encode_file(data, load_text_encoder(encoder))
    cfg = _tiny_config()
    cfg.model.conditioning, cfg.model.text_dim = "text", 32
    cfg, _ = setup_run(root / "run", cfg.validate(), data=data)
    _make_run(root / "run", cfg)
    return root


def test_prompts_go_in_and_come_out(run, text_run, tmp_path):
    out = tmp_path / "s.npz"
    code, stdout, stderr = run("sample", "--run", text_run / "run", "--prompt", "a red disc", "--prompt",
                               "a green square", "--out", out, "--json")
    assert code == 0, stderr
    assert "RANDOM WEIGHTS" in stderr
    with np.load(out) as arrays:
        assert arrays["videos"].shape[0] == 2  # one video per prompt without --num
        assert arrays["prompts"].tolist() == ["a red disc", "a green square"]
        assert arrays["labels"].tolist() == [-1, -1]
    assert json.loads(stdout)["prompts"] == ["a red disc", "a green square"]


def test_prompts_file_and_the_grid_sidecar(run, text_run, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red disc\n\n  a green square  \n", encoding="utf-8")
    out = tmp_path / "grid.gif"
    code, _, stderr = run("sample", "--run", text_run / "run", "--prompts", prompts, "--out", out)
    assert code == 0, stderr
    assert (tmp_path / "grid_prompts.txt").read_text(encoding="utf-8").splitlines() == ["a red disc", "a green square"]


def test_prompts_from_classes_keep_the_labels(run, text_run, tmp_path):
    out = tmp_path / "zero_shot.h5"
    code, _, stderr = run("sample", "--run", text_run / "run", "--prompts-from-classes", text_run / "captioned.h5",
                          "--num", "3", "--out", out)
    assert code == 0, stderr
    from hpdm_core.data.h5store import VideoStore

    store = VideoStore(out)
    assert store.labels.tolist() == [0, 1, 0] and store.captions == ["red disc", "green square", "red disc"]


def test_another_encoder_is_refused(run, text_run, tmp_path):
    other = build_random_t5(tmp_path / "other", seed=1, d_model=32, num_layers=1, num_heads=2, d_ff=32)
    code, _, stderr = run("sample", "--run", text_run / "run", "--prompt", "a red disc", "--text-encoder", other,
                          "--out", tmp_path / "x.npz")
    assert code == 2 and "fingerprint" in stderr and "Traceback" not in stderr


def test_prompts_and_classes_do_not_mix(run, text_run, tmp_path):
    code, _, stderr = run("sample", "--run", text_run / "run", "--class", "0", "--out", tmp_path / "x.npz")
    assert code == 2 and "text-conditional" in stderr
    code, _, stderr = run("sample", "--run", text_run / "run", "--out", tmp_path / "x.npz")
    assert code == 2 and "--prompt" in stderr
    code, _, stderr = run("sample", "--run", text_run / "run", "--prompt", "a", "--prompt", "b", "--num", "3",
                          "--out", tmp_path / "x.npz")
    assert code == 2 and "one per sample" in stderr


def test_a_class_run_refuses_prompts(run, tmp_path):
    class_run = _make_run(tmp_path / "class_run", _tiny_config())
    code, _, stderr = run("sample", "--run", class_run, "--prompt", "a red disc", "--out", tmp_path / "x.npz")
    assert code == 2 and "class-conditional" in stderr
