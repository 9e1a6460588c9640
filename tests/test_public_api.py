"""The public API (hpdm_core.api): the README's "From Python" example runs as written; train() resumes where
the run folder stopped; generate() samples with the run's own [sample] settings (as `hpdm sample` does) and
encodes prompts with the run's text encoder; evaluate() is eval-fvd; errors name arguments, not flags."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hpdm_core as hpdm
from hpdm_core import sampling
from hpdm_core.checkpoint import load_checkpoint
from hpdm_core.data.synthetic import make_synthetic
from hpdm_core.errors import BadInputError, MissingResourceError, HPDMError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_HEADING = "## From Python"


def small_config(conditioning: str = "class", text_dim: int = 0):
    """`tiny` with a network of a few thousand parameters: 2 levels of 2x8x8 patches (4x16x16 videos).
    Its [sample] section stays tiny's: guidance 3 on level 0."""
    cfg = hpdm.preset("tiny-t2v" if conditioning == "text" else "tiny")
    m = cfg.model
    m.patch, m.token, m.num_levels = [2, 8, 8], [1, 4, 4], 2
    m.interface_dim, m.latent_dim, m.num_latents, m.head_dim = 16, 16, 4, 8
    m.num_blocks, m.latent_layers, m.levels_per_block, m.fourier_features = 2, 1, [1, 2], 2
    m.num_classes = 4  # the test file's (make_synthetic's default)
    if conditioning == "text":
        m.text_dim = text_dim
    cfg.train.batch_size, cfg.train.steps, cfg.train.probe_every = 4, 2, 0
    cfg.sample.steps = 4
    return cfg


def example_section() -> tuple[str, str]:
    """(where, text) of the "From Python" section: README.md once it has one, else tests/public_api_example.md."""
    for path in (ROOT / "README.md", ROOT / "tests" / "public_api_example.md"):
        text = path.read_text(encoding="utf-8")
        heading = re.search(rf"^{re.escape(EXAMPLE_HEADING)}\s*$", text, re.M)
        if heading:
            section = text[heading.end():]
            following = re.search(r"^## ", section, re.M)  # the section ends where the next one begins
            return path.name, section[:following.start()] if following else section
    raise AssertionError(f"neither README.md nor tests/public_api_example.md has a {EXAMPLE_HEADING!r} section")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "moving.h5", num_videos=8, frames=4, resolution=16)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("run") / "run"
    hpdm.train(small_config(), run_dir=folder, data=data, device="cpu", tensorboard=False)
    return folder


@pytest.fixture(scope="module")
def model(run_dir):
    return hpdm.load(run_dir, device="cpu")


# ----------------------------------------------------------------------------- the README example

@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    where, section = example_section()
    block = re.search(r"^```python\n(.*?)^```", section, re.M | re.S)
    assert block, f"no ```python block after {EXAMPLE_HEADING!r} in {where}"
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), f"{where}: {EXAMPLE_HEADING}", "exec"), {"__name__": "__example__"})
    # What it says it leaves behind: a run folder with its config and checkpoint, and the videos.
    assert (tmp_path / "runs/smoke/config.toml").is_file()
    assert list((tmp_path / "runs/smoke/checkpoints").glob("step_*.pt"))
    from hpdm_core.data.video_io import read_video

    assert read_video(tmp_path / "samples.mp4").shape[0] > 0
    assert (tmp_path / "samples_000.mp4").is_file() and (tmp_path / "samples_001.mp4").is_file()


# ----------------------------------------------------------------------------- train

def test_a_second_train_call_resumes_where_the_folder_stopped(tmp_path, data):
    folder = tmp_path / "run"
    first = hpdm.train(small_config(), run_dir=folder, data=data, device="cpu", tensorboard=False)
    assert (first.start_step, first.step, first.resumed) == (0, 2, False)
    assert repr(first).startswith(f"Run({str(folder)!r}, steps 0->2 of 2")
    assert (folder / "config.toml").is_file() and first.checkpoint.name == "step_00000002.pt"

    second = hpdm.train(None, run_dir=folder, steps=4, device="cpu", tensorboard=False)
    assert (second.start_step, second.step, second.resumed) == (2, 4, True)
    assert [m["step"] for m in second.metrics()] == [2, 4]  # log_every 10: each call logs its last step

    done = hpdm.train(small_config(), run_dir=folder, steps=4, device="cpu", tensorboard=False)
    assert (done.start_step, done.step) == (4, 4) and "nothing to do" in done.notes[-1]

    # Resumed exactly: the same weights as one run of 4 steps.
    straight = hpdm.train(small_config(), run_dir=tmp_path / "straight", data=data, steps=4, device="cpu",
                          tensorboard=False)
    a, b = load_checkpoint(second.checkpoint), load_checkpoint(straight.checkpoint)
    assert a["step"] == b["step"] == 4
    for name, tensor in b["model"].items():
        assert torch.equal(a["model"][name], tensor), name


def test_train_leaves_the_callers_config_alone_and_takes_a_preset_name(tmp_path, data):
    cfg = small_config()
    hpdm.train(cfg, run_dir=tmp_path / "run", data=data, device="cpu", tensorboard=False)
    assert cfg.data.path == "" and cfg.data.fingerprint == ""  # the run's copy got them
    # A preset name is a config like any other; another config than the run's is refused, saying how to resume.
    message = _message(lambda: hpdm.train("tiny", run_dir=tmp_path / "run", device="cpu"))
    assert "different config: model.patch" in message and "config=None" in message and "--" not in message


def test_train_takes_init_from_and_images(tmp_path, data):
    base = small_config()
    base.model.num_levels, base.model.levels_per_block = 1, [1, 1]
    hpdm.train(base, run_dir=tmp_path / "base", data=data, device="cpu", tensorboard=False)
    fine = hpdm.train(small_config(), run_dir=tmp_path / "fine", data=data, init_from=tmp_path / "base",
                      device="cpu", tensorboard=False)
    assert fine.init_report["source_step"] == 2 and fine.init_report["levels"] == 2
    assert Path(fine.config.train.init_from).name == "step_00000002.pt" and (tmp_path / "fine/init_from.json").is_file()
    resumed = hpdm.train(None, run_dir=tmp_path / "fine", steps=3, device="cpu", tensorboard=False)
    assert (resumed.start_step, resumed.step) == (2, 3)  # a resume keeps where the run started from

    images = make_synthetic(tmp_path / "stills.h5", num_videos=8, frames=4, resolution=16, still=True)
    joint = small_config()
    joint.train.image_batch_size = 2
    run = hpdm.train(joint, run_dir=tmp_path / "joint", data=data, images=images, device="cpu", tensorboard=False)
    assert run.config.data.image_path == str(images) and "loss_images" in run.metrics()[-1]


# ----------------------------------------------------------------------------- generate

def test_generate_uses_the_runs_sample_settings(model):
    assert model.config.sample.guidance == 3.0 and model.config.sample.guidance_levels == 1  # tiny's
    default = hpdm.generate(model, classes=[0, 1])
    assert default.videos.shape == (2, 3, 4, 16, 16) and default.labels.tolist() == [0, 1]
    assert default.settings.guidance == 3.0 and default.settings.steps == 4
    assert repr(default) == "Samples(videos [2, 3, 4, 16, 16] in [-1, 1], labels=[0, 1], seed 0, guidance 3, 4 steps)"
    assert repr(model).startswith("Model(") and "4x16x16 videos from 2 levels" in repr(model)  # not the network
    explicit = hpdm.generate(model, classes=[0, 1], guidance=3.0, guidance_levels=1)
    unguided = hpdm.generate(model, classes=[0, 1], guidance=1)
    assert torch.equal(default.videos, explicit.videos)
    assert not torch.equal(default.videos, unguided.videos)
    # ... and the sampler called with the run's own settings, as `hpdm sample` calls it.
    direct = sampling.generate(model.denoiser, torch.tensor([0, 1]), seed=0, options=model.config.sample)
    assert torch.equal(default.videos, direct.videos)


def test_generate_takes_class_names_and_counts(model):
    from hpdm_core.data.synthetic import class_names

    names = model.class_names
    assert names == class_names(4)  # the training file's, read from the path in the run's config
    by_name = hpdm.generate(model, classes=names[1], num=2, steps=1)
    by_index = hpdm.generate(model, classes=1, num=2, steps=1)
    assert torch.equal(by_name.videos, by_index.videos) and by_name.labels.tolist() == [1, 1]
    assert len(hpdm.generate(model, steps=1, num_levels=1).videos) == 8  # as `hpdm sample`: 8 by default


def test_the_cli_and_the_api_make_the_same_videos(run_dir, model, tmp_path, capsys):
    from tests.test_cli_sample import hpdm as run_cli

    code, _, stderr = run_cli(capsys, "sample", "--run", run_dir, "--num", 2, "--class", 0, "--class", 1,
                              "--out", tmp_path / "cli.npz", "--device", "cpu")
    assert code == 0, stderr
    files = hpdm.save_videos(hpdm.generate(model, classes=[0, 1]), tmp_path / "api.npz")
    assert files == [tmp_path / "api.npz"]
    cli, api = np.load(tmp_path / "cli.npz"), np.load(tmp_path / "api.npz")
    assert np.array_equal(cli["videos"], api["videos"]) and np.array_equal(cli["labels"], api["labels"])


def test_save_videos_formats_levels_and_overwrite(model, tmp_path):
    from hpdm_core.data.h5store import VideoStore

    result = hpdm.generate(model, classes=[0, 1], steps=1, seed=3)
    written = hpdm.save_videos(result, tmp_path / "s.h5", save_levels=True)
    assert [p.name for p in written] == ["s.h5", "s_level0.h5"]
    store = VideoStore(written[0])
    assert store.class_names == model.class_names and store.file.attrs["seed"] == 3
    assert store.file.attrs["cfg"] == 3.0  # the guidance it was sampled with, as `hpdm sample` records it
    store.close()
    with pytest.raises(BadInputError, match="overwrite=True"):
        hpdm.save_videos(result, tmp_path / "s.h5")
    assert hpdm.save_videos(result, tmp_path / "s.h5", overwrite=True) == [tmp_path / "s.h5"]
    assert hpdm.save_videos(result, tmp_path / "grid", fmt="gif")[0] == tmp_path / "grid.gif"


# ----------------------------------------------------------------------------- errors

def _message(call) -> str:
    with pytest.raises(HPDMError) as err:
        call()
    return str(err.value)


def test_errors_name_arguments_not_flags(model, run_dir, data, tmp_path):
    from hpdm_core.config import save

    config_only = tmp_path / "config_only"  # a run folder that has not trained yet
    config_only.mkdir()
    save(small_config(), config_only / "config.toml")
    cases = [
        (lambda: hpdm.generate(model, classes=[0, 1], num=3), "`classes` once or once per sample"),
        (lambda: hpdm.generate(model, classes=["no_such_class"]), "classes: 'no_such_class'"),
        (lambda: hpdm.generate(model, prompts=["a red disc"]), "give `classes`"),
        (lambda: hpdm.generate(model, classes=[0], prompts="a red disc"), "not both"),
        (lambda: hpdm.generate(model, num=0), "`num` must be"),
        (lambda: hpdm.generate(model, batch_size=0), "`batch_size` must be"),
        (lambda: hpdm.generate(model, stepz=3), "unknown sampling setting(s) stepz"),
        (lambda: hpdm.generate(model, steps=0), "sample.steps"),
        (lambda: hpdm.train(small_config(), run_dir=tmp_path / "a", data=data, steps=0), "`steps` must be"),
        (lambda: hpdm.train(None, run_dir=tmp_path / "b"), "holds no run yet: give a config"),
        (lambda: hpdm.train(small_config(), run_dir=tmp_path / "c"), "data='FILE.h5'"),
        (lambda: hpdm.train(None, run_dir=run_dir, init_from=run_dir), "init_from starts a new run"),
        (lambda: hpdm.train(small_config(), run_dir=run_dir, init_from=run_dir), "leave out init_from"),
        (lambda: hpdm.train(small_config(), run_dir=tmp_path / "d", data=data, device="tpu"), "`device` is 'tpu'"),
        (lambda: hpdm.train(small_config(), run_dir=tmp_path / "e", data=data, fsdp=True), "fsdp=True"),
        (lambda: hpdm.train(small_config(), run_dir=data, data=data), "run_dir"),
        (lambda: hpdm.load(config_only), "holds no checkpoint yet: train it first"),
        (lambda: hpdm.save_videos(hpdm.generate(model, steps=1, num=1, num_levels=1), tmp_path / "x.avi"),
         "fmt 'avi'"),
        (lambda: hpdm.evaluate(data, data, num=1), "`num` must be at least 2"),
        (lambda: hpdm.evaluate(data, data), "give it as `i3d`"),
        (lambda: hpdm.evaluate(data, data, i3d=tmp_path / "none.pt"), "none.pt not found"),
        (lambda: hpdm.evaluate(data, data, random_i3d_seed=0, protocl="tf"), "unknown evaluation option(s) protocl"),
    ]
    for call, expected in cases:
        message = _message(call)
        assert expected in message, (expected, message)
        hpdm_flags = re.sub(r"torchrun --nproc_per_node", "torchrun", message)  # torchrun's own flag is fine
        assert not re.search(r"(^|\s)--[a-z]", hpdm_flags), message  # no flag of the hpdm command
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()  # refused before anything was written


def test_the_cli_still_names_its_flag(run_dir, tmp_path, capsys):
    from tests.test_cli_sample import hpdm as run_cli

    code, _, stderr = run_cli(capsys, "sample", "--run", run_dir, "--num", 3, "--class", 0, "--class", 1,
                              "--out", tmp_path / "x.npz")
    assert code == 2 and "give --class once or once per sample (3)" in stderr


# ----------------------------------------------------------------------------- text

CAPTIONS = ["a red disc moving across", "a green square gliding by"]


@pytest.mark.slow
def test_prompts_go_through_the_runs_text_encoder(tmp_path):
    pytest.importorskip("transformers")
    from hpdm_core.data.h5store import VideoStoreWriter
    from hpdm_core.data.synthetic import class_names, synthetic_video
    from hpdm_core.prompts import encode_prompts
    from hpdm_core.text.encoder import build_random_t5, load_text_encoder
    from hpdm_core.text.store import encode_file

    data = tmp_path / "captioned.h5"
    with VideoStoreWriter(data, 16, 16) as writer:
        for i in range(8):
            video, label = synthetic_video(i, frames=4, resolution=16, classes=2)
            writer.append(video, label=label, name=f"v{i:03d}", caption=CAPTIONS[label])
        writer.finish(class_names(2), fps=8.0, source="test")
    encoder = load_text_encoder(build_random_t5(tmp_path / "t5"))
    encode_file(data, encoder)
    run = hpdm.train(small_config("text", encoder.dim), run_dir=tmp_path / "run", data=data, device="cpu",
                     tensorboard=False)
    model = hpdm.load(run.run_dir, device="cpu")
    assert model.conditioning == "text" and Path(model.text_encoder_path) == tmp_path / "t5"

    result = hpdm.generate(model, prompts=CAPTIONS)
    assert result.videos.shape[0] == 2 and result.prompts == CAPTIONS and result.labels.tolist() == [-1, -1]
    text = encode_prompts(encoder, CAPTIONS, model.config.data.text_fingerprint)
    direct = sampling.generate(model.denoiser, text, seed=0, options=model.config.sample)
    assert torch.equal(result.videos, direct.videos)
    one = hpdm.generate(model, prompts=CAPTIONS[1], num=2)  # one prompt for every video
    assert one.prompts == [CAPTIONS[1]] * 2 and torch.equal(one.videos[1], result.videos[1])
    files = hpdm.save_videos(result, tmp_path / "t2v.mp4")
    assert (tmp_path / "t2v_prompts.txt").read_text(encoding="utf-8").splitlines() == CAPTIONS
    assert files[0] == tmp_path / "t2v.mp4"

    build_random_t5(tmp_path / "other", seed=1)
    with pytest.raises(BadInputError, match="fingerprint"):
        hpdm.generate(model, prompts=CAPTIONS, text_encoder=tmp_path / "other")
    with pytest.raises(BadInputError, match="give `prompts`"):
        hpdm.generate(model, classes=[0])
    with pytest.raises(BadInputError, match="text_encoder .* is a file"):
        hpdm.generate(model, prompts=CAPTIONS, text_encoder=data)
    with pytest.raises(MissingResourceError, match="does not exist"):
        hpdm.generate(model, prompts=CAPTIONS, text_encoder=tmp_path / "missing")


# ----------------------------------------------------------------------------- evaluate

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*(random-weight I3D|only comparable).*:UserWarning")  # a 2-clip proxy, on purpose
def test_evaluate_is_eval_fvd_and_takes_videos_in_memory(tmp_path):
    from hpdm_core.metrics.fvd import evaluate as fvd_evaluate

    real = make_synthetic(tmp_path / "real.h5", num_videos=2, frames=9, resolution=16)
    generated = torch.rand(2, 3, 9, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = sampling.SampleResult(videos=generated, labels=torch.tensor([0, 1]))
    options = hpdm.EvalOptions(random_i3d_seed=0, num=2, frames=9, use_cache=False, device="cpu")
    with pytest.warns(UserWarning, match="random-weight I3D") as caught:
        scores = hpdm.evaluate(real, result, options)
    assert {Path(w.filename) for w in caught} == {Path(__file__)}  # the warnings point at the caller's line
    saved = hpdm.save_videos(result, tmp_path / "fake.npz")[0]
    reference = fvd_evaluate(real, saved, options)
    assert scores["fvd"] == reference["fvd"] and scores["fake_clips"] == 2 and scores["proxy"] is True
    assert hpdm.evaluate(real, saved, random_i3d_seed=0, num=2, frames=9, use_cache=False)["fvd"] == scores["fvd"]


# ----------------------------------------------------------------------------- the package

def test_import_is_cheap_and_names_resolve():
    import subprocess

    code = ("import sys, hpdm_core as h; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert h.__version__; h.train; assert 'torch' in sys.modules; "
            "assert h.Config is __import__('hpdm_core.config').config.Config; print(sorted(h.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    for name in ("preset", "train", "load", "generate", "save_videos", "evaluate", "EvalOptions", "Run", "Model"):
        assert name in out.stdout and name in dir(hpdm)
    with pytest.raises(AttributeError):
        hpdm.no_such_name  # noqa: B018
