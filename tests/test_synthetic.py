"""The synthetic set: deterministic, class -> appearance, smooth motion, the common file layout."""

import hashlib
import json

import numpy as np
import pytest

from hpdm_core.data.h5store import VideoStore
from hpdm_core.data.synthetic import (_DIRECTION_WORDS, DIRECTIONS, SHAPE_WORDS, SHAPES, captioned_video,
                                      choose_holdout, describe_objects, max_holdout, pair_classes)
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


# ----------------------------------------------------------------------------- captions, holdout, stills

def test_class_set_is_byte_identical_to_before_captions():
    # Digests of the class set as it was before the captioned set existed (the quickstart depends on it).
    digest = hashlib.sha256()
    for i in range(12):
        video, label = synthetic_video(i, frames=6, resolution=32, classes=5, seed=7)
        digest.update(video.tobytes())
        digest.update(bytes([label]))
    assert digest.hexdigest() == "c6fb5f2928fd0f67fedbce8a54946d690e97543f7be460146e115cbe2bbce726"
    digest = hashlib.sha256()
    for i in range(4):
        digest.update(synthetic_video(i, frames=32, resolution=64, classes=4, seed=0)[0].tobytes())
    assert digest.hexdigest() == "690a9e75a48721f78411f05e69b69020965219224b4fdae2dbc2f00d7cdf79bb"


def test_class_set_file_has_no_captions(tmp_path):
    store = VideoStore(make_synthetic(tmp_path / "s.h5", num_videos=3, frames=2, resolution=16, classes=2))
    assert "captions" not in store.file and "kind" not in store.file.attrs and store.summary()["captioned"] == 0


def _centre(frame: np.ndarray, colour: str) -> np.ndarray:
    mask = np.abs(frame.astype(float) - np.asarray(COLOURS[colour]) * 255).max(-1) < 6
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_captions_name_colour_shape_and_the_direction_the_object_moves(tmp_path):
    path = make_synthetic(tmp_path / "c.h5", num_videos=48, frames=12, resolution=64, captions=True, seed=3)
    store = VideoStore(path)
    store.verify()
    pairs = pair_classes(4, 4)
    assert store.class_names == [f"{c}_{s}" for c, s in pairs] and len(pairs) == 16
    assert sorted(set(store.labels.tolist())) == list(range(16))  # 3 rounds over every pair
    assert np.bincount(store.labels).tolist() == [3] * 16
    assert store.summary()["captioned"] == 48 and json.loads(store.attrs["holdout_pairs"]) == []
    assert len(set(store.captions)) > 40  # varied phrasings
    for i, caption in enumerate(store.captions):
        colour, shape = pairs[store.labels[i]]
        assert caption.split()[0] in ("a", "the", colour)
        assert colour in caption and any(word in caption for word in SHAPE_WORDS[shape])
        # The longest direction phrase the caption ends with ("down and right", not "right").
        endings = [(len(w), d) for d in DIRECTIONS for w in _DIRECTION_WORDS[d] if caption.endswith(" " + w)]
        assert endings, caption
        named = [max(endings)[1]]
        video = store.video(i)
        move = _centre(video[-1], colour) - _centre(video[0], colour)
        angle = np.degrees(np.arctan2(-move[1], move[0]))  # image y points down
        off = (angle - 45 * DIRECTIONS.index(named[0]) + 180) % 360 - 180
        assert abs(off) <= 12 and np.linalg.norm(move) > 8, (caption, move)


def test_holdout_pairs_are_absent_recorded_and_keep_every_colour_and_shape(tmp_path):
    path = make_synthetic(tmp_path / "h.h5", num_videos=40, frames=2, resolution=16, captions=True,
                          holdout_pairs=5, seed=9)
    store = VideoStore(path)
    held = [tuple(p) for p in json.loads(store.attrs["holdout_pairs"])]
    assert held == choose_holdout(4, 4, 5, seed=9) and len(set(held)) == 5
    assert store.summary()["holdout_pairs"] == [list(p) for p in held]
    present = {tuple(store.class_names[k].split("_")) for k in store.labels}
    assert present == set(pair_classes(4, 4)) - set(held)  # every other pair occurs
    assert {c for c, _ in present} == set(list(COLOURS)[:4]) and {s for _, s in present} == set(SHAPES[:4])
    assert choose_holdout(4, 4, 5, seed=10) != held  # the seed chooses
    for colours, shapes in ((1, 1), (2, 3), (4, 4), (7, 6), (7, 1)):
        for seed in range(5):
            held = choose_holdout(colours, shapes, max_holdout(colours, shapes), seed)
            kept = set(pair_classes(colours, shapes)) - set(held)
            assert {c for c, _ in kept} == set(list(COLOURS)[:colours]) and {s for _, s in kept} == set(SHAPES[:shapes])
    with pytest.raises(BadInputError, match="between 0 and 12"):
        make_synthetic(tmp_path / "x.h5", captions=True, holdout_pairs=13)
    with pytest.raises(BadInputError, match="needs --captions"):
        make_synthetic(tmp_path / "x.h5", holdout_pairs=1)
    with pytest.raises(BadInputError, match="--colours"):
        make_synthetic(tmp_path / "x.h5", captions=True, colours=8)


def test_still_images_of_the_same_classes(tmp_path):
    still = VideoStore(make_synthetic(tmp_path / "s.h5", num_videos=6, frames=8, resolution=16, classes=3, still=True))
    still.verify()
    assert still.kind == "images" and still.lengths.tolist() == [1] * 6
    assert still.labels.tolist() == [i % 3 for i in range(6)] and still.class_names == class_names(3)
    np.testing.assert_array_equal(still.video(4)[0], synthetic_video(4, 1, 16, 3, 0)[0][0])
    captioned = VideoStore(make_synthetic(tmp_path / "c.h5", num_videos=8, resolution=16, captions=True,
                                          holdout_pairs=2, still=True))
    assert captioned.kind == "images" and captioned.lengths.tolist() == [1] * 8
    for label, caption in zip(captioned.labels, captioned.captions):
        colour, shape = pair_classes(4, 4)[label]
        assert colour in caption and not any(w in caption for words in _DIRECTION_WORDS.values() for w in words[1:])


@pytest.mark.parametrize("resolution, grain", [(64, 0.0), (32, 25.0)])
def test_describe_objects_reads_colour_and_shape_of_real_videos(resolution, grain):
    pairs = pair_classes(7, 6)
    videos, truth = [], []
    for i in range(84):  # two rounds over all 42 pairs
        video, label, _ = captioned_video(i, list(range(42)), pairs, 8, resolution, seed=4)
        videos.append(video)
        truth.append(pairs[label])
    videos = np.stack(videos)
    if grain:  # per-pixel noise as a sampler leaves it
        noise = np.random.default_rng(0).normal(0, grain, videos.shape)
        videos = np.clip(videos + noise, 0, 255).astype(np.uint8)
    found = describe_objects(videos)
    assert np.mean([f[0] == t[0] for f, t in zip(found, truth)]) >= 0.98
    assert np.mean([f[1] == t[1] for f, t in zip(found, truth)]) >= 0.90
    bounce = np.stack([synthetic_video(i, 8, resolution, 42, seed=1)[0] for i in range(42)])
    found = describe_objects(bounce)
    assert np.mean([f == class_appearance(k)[::-1] for k, f in enumerate(found)]) >= 0.90
    flat = np.full((1, 2, resolution, resolution, 3), 90, np.uint8)  # no object at all
    assert describe_objects(flat) == [(None, None)]
