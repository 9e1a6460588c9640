"""Joint image+video training (issue 22): still images as still videos beside the video rows of every step."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpdm_core import checkpoint as ckpt
from hpdm_core.data.batches import StepBatches, check_images, open_clips, open_images
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.diffusion import build_denoiser, hierarchy_loss
from hpdm_core.errors import BadInputError
from hpdm_core.pyramid import extract_hierarchy
from hpdm_core.seeding import DATA_STREAM, generator
from hpdm_core.train_log import read_metrics
from test_cli_train import hpdm, sets
from test_training import assert_states_close, tiny_config, trainer, write_smooth_videos

IMAGES = ["train.image_batch_size=2"]


def write_images(path, count=6, size=16, seed=1, labels=None):
    """An image file: 1-frame entries, attrs kind="images"."""
    rng = np.random.default_rng(seed)
    with VideoStoreWriter(path, size, size) as writer:
        for i in range(count):
            writer.append(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
                          label=labels[i] if labels else i % 3)
        writer.finish(["a", "b", "c"], fps=1.0, kind="images")
    return path


@pytest.fixture
def data(tmp_path):
    return write_smooth_videos(tmp_path / "smooth.h5")


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images.h5")


def mixed_config(data, images, *extra):
    return tiny_config(data, *IMAGES, f"data.image_path={images}", *extra)


def test_images_become_still_videos_after_the_video_rows(data, images, tmp_path):
    cfg = mixed_config(data, images, "data.flip=false")
    t = trainer(cfg, tmp_path / "run")
    batch = t.batches(0, 1).dataset[3]
    frames = cfg.model.target[0]
    assert batch["patches"].shape == (6, 3, 3, 2, 4, 4)  # 4 video rows, then 2 image rows
    assert batch["still"].tolist() == [False] * 4 + [True] * 2
    assert [len(t.rows), len(t.image_rows)] == [4, 2] and t.image_rows == range(4, 6)
    store = open_images(cfg).store
    for i, row in enumerate(t.image_rows):
        # The row's own draws: which image, then the patch offsets; its chain is that image's still video.
        g = generator(cfg.train.seed, 3, row, DATA_STREAM)
        index = int(torch.randint(len(store.labels), (1,), generator=g))
        image = torch.from_numpy(store.video(index)).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # [3, 1, H, W]
        still = image.expand(-1, frames, -1, -1).unsqueeze(0)
        expected = extract_hierarchy(still, batch["offsets"][4 + i:5 + i], t.geometry)
        torch.testing.assert_close(batch["patches"][4 + i:5 + i], expected, atol=1e-6, rtol=0)
        assert batch["labels"][4 + i] == int(store.labels[index])
        chain = batch["patches"][4 + i]
        assert torch.equal(chain, chain[:, :, :1].expand_as(chain))  # every frame the same
    video = batch["patches"][0]
    assert not torch.equal(video, video[:, :, :1].expand_as(video))


def test_a_rank_builds_its_share_of_both_kinds(data, images, tmp_path):
    cfg = mixed_config(data, images)
    clips, stills = open_clips(cfg), open_images(cfg)
    t = trainer(cfg, tmp_path / "run")
    whole = StepBatches(clips, t.geometry, range(0, 4), 0, 5, 3, images=stills, image_rows=range(4, 6))[2]
    part = StepBatches(clips, t.geometry, range(2, 4), 0, 5, 3, images=stills, image_rows=range(5, 6))[2]
    assert torch.equal(part["patches"], whole["patches"][[2, 3, 5]])
    assert part["still"].tolist() == [False, False, True]


def test_per_row_losses_average_to_the_loss(data, tmp_path):
    cfg = tiny_config(data)
    denoiser = build_denoiser(cfg)
    t = trainer(cfg, tmp_path / "run")
    batch = t.batches(0, 1).dataset[0]
    args = (denoiser, batch["patches"], batch["offsets"], batch["labels"])
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(4)]  # noqa: E731
    loss, per_level = hierarchy_loss(*args, gens())
    loss_rows, per_level_rows, rows = hierarchy_loss(*args, gens(), per_row=True)
    assert rows.shape == (4, 3)
    torch.testing.assert_close(rows.mean(0), per_level, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss_rows, loss, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(rows[0], rows[1])


def test_a_mixed_run_logs_both_losses_and_resumes_exactly(data, images, tmp_path):
    straight = trainer(mixed_config(data, images), tmp_path / "straight")
    straight.fit()
    cut = trainer(mixed_config(data, images), tmp_path / "cut")
    cut.fit(stop_at=2)
    resumed = trainer(mixed_config(data, images), tmp_path / "cut")
    assert resumed.resume() == 2
    resumed.fit()
    assert_states_close(straight.state_dict()["model"], resumed.state_dict()["model"], atol=0)
    assert_states_close(straight.state_dict()["ema"], resumed.state_dict()["ema"], atol=0)
    logs = [read_metrics(tmp_path / run / "metrics.jsonl") for run in ("straight", "cut")]
    assert [m["loss"] for m in logs[0]] == [m["loss"] for m in logs[1]]
    for m in logs[0]:
        # 4 video rows and 2 image rows of equal size: the loss is their row-weighted mean
        assert m["loss"] == pytest.approx((4 * m["loss_videos"] + 2 * m["loss_images"]) / 6, rel=1e-5)
        assert m["loss_videos"] != m["loss_images"]


def test_image_files_are_checked(data, images, tmp_path):
    cfg = mixed_config(data, images)
    assert check_images(cfg)
    cfg.data.image_path = str(data)  # a video file
    with pytest.raises(BadInputError, match="not images"):
        check_images(cfg)
    cfg.data.image_path = str(write_images(tmp_path / "labels.h5", labels=[0, 1, 2, 5, 0, 0]))
    with pytest.raises(BadInputError, match="model.num_classes"):
        check_images(cfg)
    with pytest.raises(BadInputError, match="train.image_batch_size"):
        trainer(tiny_config(data, "data.image_path=x.h5"), tmp_path / "run")
    with pytest.raises(BadInputError, match="needs an image file"):
        trainer(tiny_config(data, "train.image_batch_size=2"), tmp_path / "run")


def test_cli_images(capsys, monkeypatch, data, images, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", data, "--run-dir", run, "--batch-size", 2, "--device", "cpu",
            "--images", images]
    code, _, err = hpdm(capsys, monkeypatch, *args, "--steps", 2, *sets("train.image_batch_size=2"))
    assert code == 0, err
    assert "2 rows per step beside 2 video rows" in err
    entries = read_metrics(run / "metrics.jsonl")
    assert {"loss_images", "loss_videos"} <= entries[-1].keys()
    saved = ckpt.load_run_config(run)
    assert saved.data.image_path == str(images) and saved.data.image_fingerprint
    # Another image file on resume: refused like other data.
    other = write_images(tmp_path / "other.h5", count=4)
    code, _, err = hpdm(capsys, monkeypatch, "train", "--run-dir", run, "--steps", 3, "--images", other)
    assert code == 2 and "not the image file" in err
    code, _, err = hpdm(capsys, monkeypatch, "train", "--run-dir", run, "--steps", 3)
    assert code == 0, err
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
