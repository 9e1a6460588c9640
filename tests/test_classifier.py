"""The classifier measure: held-out split, checkpoint, scores, train-classifier and eval-fvd --classifier."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hpdm_cli.app import app
from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.synthetic import make_synthetic
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.metrics import (VideoClassifier, classifier_scores, heldout_split, heldout_videos, load_classifier,
                               train_classifier)
from hpdm_core.metrics import fvd as fvd_module
from hpdm_core.metrics.i3d import I3DFeatures, random_i3d


def _hpdm(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "hpdm_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-class set (red discs, green squares) of 20 videos 12x16x16 and a classifier of 8-frame clips."""
    root = tmp_path_factory.mktemp("classifier")
    data = make_synthetic(root / "data.h5", num_videos=20, frames=12, resolution=16, classes=2)
    torch.manual_seed(0)
    summary = train_classifier(data, root / "clf.pt", frames=8, steps=40, batch_size=8, holdout=0.2, seed=0)
    return data, root / "clf.pt", summary


def _videos(data, frames=8):
    store = VideoStore(data)
    return np.stack([store.video(i, 0, frames) for i in range(len(store))]), store.labels


def test_heldout_split_is_deterministic_and_keeps_groups_together():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 40)
    groups = np.concatenate([rng.integers(0, 8, 40) for _ in range(5)])  # UCF-like: groups within each class
    held = heldout_split(labels, groups, 0.25, seed=3)
    assert np.array_equal(held, heldout_split(labels, groups, 0.25, seed=3))
    assert not np.array_equal(held, heldout_split(labels, groups, 0.25, seed=4))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    for key in set(zip(labels, groups)):  # a (class, group) is all in or all out
        members = (labels == key[0]) & (groups == key[1])
        assert mask[members].all() or not mask[members].any()
    for label in range(5):  # every class is held out a little and still trained on
        share = mask[labels == label].mean()
        assert 0.1 <= share <= 0.5
    ungrouped = heldout_split(labels, None, 0.1, seed=0)
    assert len(ungrouped) == 5 * 4  # round(0.1 * 40) of each class
    assert len(heldout_split(labels, None, 0.0)) == 0
    assert len(heldout_split(np.array([0, 1, -1]), None, 0.5)) == 0  # one video per class: all kept for training
    with pytest.raises(BadInputError):
        heldout_split(labels, None, 1.0)


def test_checkpoint_round_trip(tiny):
    data, path, summary = tiny
    checkpoint = torch.load(path, weights_only=True)  # a plain dict of tensors, numbers and strings
    assert checkpoint["frames"] == 8 and checkpoint["resolution"] == 16
    assert checkpoint["class_names"] == VideoStore(data).class_names
    assert checkpoint["heldout_accuracy"] == summary["heldout_accuracy"]
    held = checkpoint["heldout"].numpy()
    assert len(held) == summary["heldout_videos"] == 4
    store = VideoStore(data)
    assert np.array_equal(held, heldout_split(store.labels, store.groups, 0.2, seed=0))
    assert set(summary) >= {"heldout_accuracy", "train_accuracy", "steps", "seconds", "parameters", "heldout_videos"}

    classifier = load_classifier(path)
    assert isinstance(classifier, VideoClassifier) and not classifier.training
    assert (classifier.frames, classifier.resolution, classifier.num_classes) == (8, 16, 2)
    videos, _ = _videos(data, frames=12)  # longer videos: it takes the first 8 frames
    features, probs = classifier.embed(videos[:3])
    assert features.dtype == probs.dtype == np.float64
    assert features.shape == (3, classifier.feature_dim) and probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    again, _ = load_classifier(path).embed(torch.from_numpy(videos[:3]))  # torch input, same numbers
    np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-6)
    bigger = np.repeat(np.repeat(videos[:3], 2, axis=2), 2, axis=3)  # 32x32: area-resized to 16x16
    np.testing.assert_allclose(classifier.embed(bigger)[0], features, rtol=1e-4, atol=1e-5)
    with pytest.raises(BadInputError, match="8 frames"):
        classifier.embed(videos[:2, :4])


def test_load_errors(tiny, tmp_path):
    with pytest.raises(MissingResourceError):
        load_classifier(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError):
        load_classifier(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="not a classifier checkpoint"):
        load_classifier(tmp_path / "other.pt")


def test_scores_accuracy_fd_and_heldout_reference(tiny):
    data, path, summary = tiny
    assert summary["heldout_accuracy"] == 1.0 and summary["train_accuracy"] == 1.0
    classifier = load_classifier(path)
    videos, labels = _videos(data)
    own = classifier_scores(classifier, videos, labels)
    assert own["accuracy"] == 1.0 and own["fd"] is None and own["num_fake"] == 20
    wrong = classifier_scores(classifier, videos, 1 - labels)
    assert wrong["accuracy"] == 0.0
    same = classifier_scores(classifier, videos, labels, list(videos), labels, batch_size=3)
    assert same["fd"] == pytest.approx(0.0, abs=1e-6) and same["real_accuracy"] == 1.0 and same["num_real"] == 20
    reds = classifier_scores(classifier, videos[labels == 0], None, videos, labels)
    assert reds["accuracy"] is None and reds["fd"] > 1.0  # one class only: far from the real mixture

    held, held_labels = heldout_videos(classifier)
    held = list(held)
    assert len(held) == 4 and held[0].shape == (8, 16, 16, 3)
    store = VideoStore(data)
    assert np.array_equal(held_labels, store.labels[classifier.heldout])
    assert np.array_equal(held[0], store.video(int(classifier.heldout[0]), 0, 8))
    with pytest.raises(BadInputError, match="labels"):
        classifier_scores(classifier, videos, labels[:5])


def test_heldout_reference_must_be_the_training_file(tiny, tmp_path):
    _, path, _ = tiny
    other = make_synthetic(tmp_path / "other.h5", num_videos=10, frames=8, resolution=16, classes=2)
    with pytest.raises(BadInputError, match="not the dataset file"):
        heldout_videos(load_classifier(path), other)
    with pytest.raises(MissingResourceError):
        heldout_videos(load_classifier(path), tmp_path / "gone.h5")


def test_cli_train_classifier_json_and_overwrite(tmp_path):
    data = make_synthetic(tmp_path / "data.h5", num_videos=8, frames=8, resolution=16, classes=2)
    args = ["train-classifier", "--data", str(data), "--out", str(tmp_path / "clf.pt"), "--frames", "8",
            "--steps", "3", "--batch-size", "4", "--device", "cpu"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 3 and summary["resolution"] == 16 and (tmp_path / "clf.pt").exists()
    table = CliRunner().invoke(app, args + ["--overwrite"])
    assert table.exit_code == 0 and "held-out accuracy" in table.stdout
    proc = _hpdm(*args)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_eval_fvd_with_classifier(tiny, tmp_path, monkeypatch):
    data, path, _ = tiny
    videos, labels = _videos(data)
    long_videos = _videos(data, frames=12)[0]
    np.savez(tmp_path / "fake.npz", videos=long_videos[:6], labels=labels[:6])
    np.savez(tmp_path / "unlabelled.npz", videos=long_videos[:6])
    base = ["eval-fvd", "--real", str(data), "--classifier", str(path), "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, base + ["--fake", str(tmp_path / "fake.npz")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fvd"] is None and report["classifier_accuracy"] == 1.0  # FVD skipped, not faked
    assert report["classifier_real_accuracy"] == 1.0 and report["classifier_real_videos"] == 4
    assert report["classifier_fake_videos"] == 6 and report["classifier_fd"] >= 0
    assert any("FVD not computed" in note for note in report["warnings"])
    result = CliRunner().invoke(app, base + ["--fake", str(tmp_path / "unlabelled.npz")])
    report = json.loads(result.stdout)
    assert report["classifier_accuracy"] is None and report["classifier_notes"]

    # With a (fast, native-size) random I3D as well: FVD and the classifier's scores side by side.
    monkeypatch.setattr(fvd_module, "random_i3d_detector",
                        lambda seed, resize, device: I3DFeatures(random_i3d(seed), resize=None, name="random_i3d"))
    both = ["eval-fvd", "--real", str(data), "--fake", str(tmp_path / "fake.npz"), "--classifier", str(path),
            "--random-i3d", "0", "--num", "6", "--frames", "9", "--no-cache", "--device", "cpu"]
    report = json.loads(CliRunner().invoke(app, both + ["--json"]).stdout)
    assert np.isfinite(report["fvd"]) and report["classifier_accuracy"] == 1.0 and report["proxy"] is True
    table = CliRunner().invoke(app, both)
    assert table.exit_code == 0, table.output
    assert "classifier accuracy" in table.stdout and "FVD_9@6" in table.stdout


def test_eval_fvd_missing_classifier_exits_3(tiny, tmp_path):
    data, _, _ = tiny
    np.savez(tmp_path / "fake.npz", videos=_videos(data)[0][:4])
    proc = _hpdm("eval-fvd", "--real", data, "--fake", tmp_path / "fake.npz", "--classifier", tmp_path / "clf.pt")
    assert proc.returncode == 3 and "train-classifier" in " ".join(proc.stderr.split())


@pytest.mark.slow
def test_default_training_separates_the_synthetic_classes(tmp_path):
    """The 256-video set with 8 classes and the classifier's defaults: at least 98 % of the held-out
    videos right (the two classes that share a colour included)."""
    data = make_synthetic(tmp_path / "data.h5", classes=8)
    summary = train_classifier(data, tmp_path / "clf.pt")
    assert summary["heldout_videos"] >= 24
    assert summary["heldout_accuracy"] >= 0.98, summary
