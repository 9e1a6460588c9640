"""The synthetic set: deterministic, class -> appearance, smooth motion, the common file layout."""

import numpy as np
import pytest

from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.synthetic import (COLOURS, MAX_CLASSES, class_appearance, class_names, make_synthetic,
                                      object_presence, synthetic_video)
from hpdm_core.errors import BadInputError


def object_mask(video: np.ndarray, label: int) -> np.ndarray:
    """Pixels (nearly) the class colour: the object, without its anti-aliased rim."""
    colour = np.asarray(COLOURS[class_appearance(label)[1]]) * 255
    return np.abs(video.astype(float) - colour).max(-1) < 6


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_synthetic(tmp_path / "a.h5", num_videos=6, frames=8, resolution=32, classes=4, seed=3)
    b = make_synthetic(tmp_path / "b.h5", num_videos=6, frames=8, resolution=32, classes=4, seed=3)
    c = make_synthetic(tmp_path / "c.h5", num_videos=6, frames=8, resolution=32, classes=4, seed=4)
    fa, fb, fc = (VideoStore(p).file["frames"][...] for p in (a, b, c))
    assert fa.tobytes() == fb.tobytes()
    assert fa.shape == fc.shape and fa.tobytes() != fc.tobytes()
    # A video depends on (seed, index) only, not on how many videos the set has.
    np.testing.assert_array_equal(synthetic_video(5, 8, 32, 4, 3)[0], fa[5 * 8:6 * 8])


def test_file_layout_and_labels(tmp_path):
    path = make_synthetic(tmp_path / "s.h5", num_videos=10, frames=4, resolution=16, classes=3, seed=0)
    store = VideoStore(path)
    store.verify()
    summary = store.summary()
    assert summary["videos"] == 10 and summary["frames"] == 40 and summary["classes"] == 3
    assert summary["resolution"] == [16, 16] and summary["source"] == "synthetic"
    assert store.labels.tolist() == [i % 3 for i in range(10)]
    assert store.class_names == ["red_disc", "green_square", "blue_triangle"] == class_names(3)
    assert (store.groups == -1).all() and store.names[7] == "synthetic_000007"


def test_classes_get_distinct_shape_colour_pairs():
    pairs = [class_appearance(k) for k in range(MAX_CLASSES)]
    assert len(set(pairs)) == MAX_CLASSES
    with pytest.raises(BadInputError):
        make_synthetic("unused.h5", classes=MAX_CLASSES + 1)


def test_one_large_object_moves_smoothly():
    for index in range(8):
        video, label = synthetic_video(index, frames=32, resolution=64, classes=8, seed=1)
        assert video.shape == (32, 64, 64, 3) and video.dtype == np.uint8
        mask = object_mask(video, label)
        area = mask.sum((1, 2))
        assert area.min() > 0.04 * 64 * 64  # large, and never leaves the frame
        assert area.max() - area.min() <= 0.15 * area.mean()  # same shape and size all the time
        ys, xs = np.arange(64)[:, None], np.arange(64)[None, :]
        centre = np.stack([(mask * ys).sum((1, 2)) / area, (mask * xs).sum((1, 2)) / area], 1)
        steps = np.linalg.norm(np.diff(centre, axis=0), axis=1)
        assert steps.max() < 6.0  # no jumps between frames
        assert np.linalg.norm(centre[-1] - centre[0]) > 1.0 or steps.sum() > 10  # it does move


def test_anti_aliased_edges_and_smooth_background():
    video, label = synthetic_video(0, frames=1, resolution=64, classes=8, seed=0)
    distance = np.abs(video[0].astype(float) - np.asarray(COLOURS[class_appearance(label)[1]]) * 255).max(-1)
    steps = np.diff(distance, axis=1)  # along each row
    # A pixel partly covered by the object lies strictly between its neighbours (a hard edge jumps
    # from background to object in one step); several rows must cross the edge that way.
    blended = (np.abs(steps[:, :-1]) > 10) & (np.abs(steps[:, 1:]) > 10) & (steps[:, :-1] * steps[:, 1:] > 0)
    assert blended.any(axis=1).sum() >= 4
    rows = np.flatnonzero(object_mask(video, label)[0].any(1))
    background = np.r_[0:max(rows.min() - 2, 0), rows.max() + 3:64]  # rows clear of the object and its rim
    assert len(background) > 10
    assert np.abs(np.diff(video[0, background].astype(int), axis=1)).max() <= 3  # a smooth gradient


def test_object_presence_sees_every_real_object_through_grain_and_misses_a_removed_one():
    pairs = [synthetic_video(i, frames=8, resolution=64, classes=4) for i in range(8)]
    videos, labels = np.stack([v for v, _ in pairs]), np.array([k for _, k in pairs])
    assert object_presence(videos, labels).all()
    grain = np.random.default_rng(0).normal(0, 40, videos.shape)  # std 0.16 on the 0-1 scale, per pixel
    assert object_presence(np.clip(videos + grain, 0, 255).astype(np.uint8), labels).all()
    assert not object_presence(videos, (labels + 1) % 4).any()  # another class's colour is absent
    blank = videos.copy()
    blank[0, 3] = blank[0, 3, :2, :2].mean((0, 1), keepdims=True).astype(np.uint8)  # frame 3 of video 0: a corner's colour
    presence = object_presence(blank, labels)
    assert not presence[0, 3] and presence.sum() == presence.size - 1
