"""Pixel measures of generated videos: real synthetic videos get the data's values, degraded ones worse."""

import numpy as np
import pytest
import torch

from hpdm_core.data.synthetic import captioned_video, pair_classes, synthetic_video
from hpdm_core.errors import BadInputError
from hpdm_core.video_quality import (class_targets, edge_ratio, grain, grid_steps, measure_videos, mottling,
                                     quality_report, summarise, token_mosaic)

CLASSES = 8  # the quickstart's set: red disc (class 0) and red square (class 7) among them


@pytest.fixture(scope="module")
def real():
    """8 real videos of the 8-class set, one per class, 32 frames of 64x64 (the quickstart's)."""
    videos, labels = zip(*[synthetic_video(i, 32, 64, CLASSES) for i in range(CLASSES)])
    return np.stack(videos), np.array(labels)


@pytest.fixture(scope="module")
def real_measures(real):
    return measure_videos(real[0], *class_targets(real[1]))


def test_real_videos_get_the_datas_values(real_measures):
    m = real_measures
    assert m["colour_right"].tolist() == [1.0] * CLASSES
    assert m["presence"].tolist() == [1.0] * CLASSES
    assert m["shape_right"].tolist() == [1.0] * CLASSES
    # Exact anti-aliased shapes, measured on 2x2 cells: only the cells' quantisation is lost.
    assert (m["shape_iou"] > 0.95).all(), m["shape_iou"]
    # Sharp object edges on a smooth gradient; 0.016-0.036 per video over the set's first videos.
    assert (m["grain"] < 0.05).all(), m["grain"]
    # The background is the plane the measure fits; what is left is uint8 rounding and the cells at the
    # edge of the 2-cell margin round the object (0.001-0.009 over the quickstart file's first 32 videos).
    assert (m["mottling"] < 0.02).all(), m["mottling"]
    # A rigid object: its area changes only by 2x2-cell quantisation of the edge (about 0.1 %).
    assert (m["size_variation"] < 0.01).all(), m["size_variation"]
    # Straight lines with bounces: at most 1.3 frame widths per clip is 2.6 px / frame, so a bounce
    # changes the velocity by at most 5.2 px / frame; two bounces over the clip's 30 triples average
    # 0.35 px / frame^2, plus the centroid's measurement noise (a few hundredths).
    assert (m["acceleration"] < 0.5).all(), m["acceleration"]


def test_captioned_pairs_are_measured_by_colour_and_shape():
    classes = pair_classes(4, 4)
    made = [captioned_video(i, list(range(16)), classes, 12, 64, 0) for i in range(6)]
    videos = np.stack([video for video, _, _ in made])
    colours = [classes[label][0] for _, label, _ in made]
    shapes = [classes[label][1] for _, label, _ in made]
    m = measure_videos(videos, colours, shapes)
    assert m["colour_right"].tolist() == [1.0] * 6 and m["shape_right"].tolist() == [1.0] * 6
    # Straight lines without bounces: the centroid's acceleration is its measurement noise only.
    assert (m["acceleration"] < 0.3).all(), m["acceleration"]


def test_noise_raises_grain_and_leaves_the_object(real, real_measures):
    videos, labels = real
    rng = np.random.default_rng(0)
    noisy = np.clip(videos + rng.normal(0, 0.08 * 255, videos.shape), 0, 255).round().astype(np.uint8)
    clean, worse = real_measures, measure_videos(noisy, *class_targets(labels))
    # iid noise of sigma s leaves s * sqrt(1 - 2/9 + 1/9) = 0.94 s after the 3x3 blur is taken away.
    assert (worse["grain"] > 2 * clean["grain"]).all()
    assert worse["grain"].mean() == pytest.approx(np.sqrt(clean["grain"].mean() ** 2 + (0.08 * 0.943) ** 2),
                                                  rel=0.1)
    # Mottling reads 4x4-pixel averages: iid noise of sigma s adds s / 4 in quadrature.
    assert worse["mottling"] == pytest.approx(np.sqrt(clean["mottling"] ** 2 + (0.08 / 4) ** 2), rel=0.15)
    # Cell averages make the object measures blind to grain.
    assert worse["shape_right"].tolist() == [1.0] * CLASSES and worse["presence"].tolist() == [1.0] * CLASSES
    # iid noise is no mosaic: steps across token borders grow as much as inside them.
    assert token_mosaic(noisy, videos) == pytest.approx(1.0, abs=0.1)


def shift(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The frame moved by (dy, dx) pixels, its edge rows and columns repeated (no wrap-around edge)."""
    h, w = frame.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return frame[rows][:, cols]


def test_a_jittered_object_accelerates(real, real_measures):
    videos, labels = real
    rng = np.random.default_rng(1)
    jittered = np.stack([[shift(frame, *rng.integers(-3, 4, 2)) for frame in video] for video in videos])
    clean, worse = real_measures, measure_videos(jittered, *class_targets(labels))
    # A random offset of up to 3 px per frame: the second difference of independent offsets has a norm
    # of about sqrt(6) * 2 = 4.9 px / frame^2 on average, against real bounces' few tenths.
    assert worse["acceleration"].mean() > 3 * clean["acceleration"].mean() + 1.0
    assert worse["shape_right"].tolist() == [1.0] * CLASSES  # the shape itself is unchanged


def test_an_object_that_changes_size_or_vanishes_is_caught(real):
    videos, labels = real
    # Frames alternate between two videos of class 0: red discs of 684 and 460 pixels (pixels within
    # 0.3 of red), so std / mean of the area is |a - b| / (a + b) = 0.196.
    other = synthetic_video(4 * CLASSES, 32, 64, CLASSES)[0]
    pulsing = np.where((np.arange(32) % 2 == 0)[:, None, None, None], videos[0], other)
    # Frames 4..7 show a video of class 1 instead: no red object there.
    gaps = videos[0].copy()
    gaps[4:8] = videos[1][4:8]
    m = measure_videos(np.stack([videos[0], pulsing, gaps]), *class_targets([0, 0, 0]))
    assert m["size_variation"][0] < 0.01
    # Pixel counts at one threshold and the coverage of anti-aliased edges differ by the rim (~5 %).
    assert m["size_variation"][1] == pytest.approx(0.196, rel=0.1), m["size_variation"]
    assert m["presence"].tolist() == [1.0, 1.0, 28 / 32]
    # The frames that show it are still measured; acceleration skips the triples with a gap.
    assert m["shape_right"][2] == 1.0 and np.isfinite(m["acceleration"][2])


def test_a_swapped_shape_keeps_its_colour_and_loses_its_shape(real):
    videos, labels = real
    # Class 0 is a red disc and class 7 a red square: ask the disc video for a square.
    m = measure_videos(videos[:1], *class_targets([7]))
    right = measure_videos(videos[:1], *class_targets([0]))
    assert m["colour_right"][0] == 1.0 and m["presence"][0] == 1.0
    assert m["shape_right"][0] == 0.0 and right["shape_right"][0] == 1.0
    # A disc and a square of the same area overlap well but not fully: IoU about 0.9.
    assert m["shape_iou"][0] < right["shape_iou"][0] - 0.03


def with_mosaic(videos: np.ndarray, seed: int) -> np.ndarray:
    """A colour offset (std 12 in uint8 units) per 4x4-pixel token: steps across token borders only."""
    offsets = np.random.default_rng(seed).normal(0, 12, (*videos.shape[:2], 16, 16, 3)).repeat(4, 2).repeat(4, 3)
    return np.clip(videos + offsets, 0, 255).round().astype(np.uint8)


def test_a_token_mosaic_is_measured_against_the_data(real):
    videos, _ = real
    assert token_mosaic(videos, videos) == 1.0
    mosaic = with_mosaic(videos, 2)
    assert token_mosaic(mosaic, videos) > 3
    # The same offsets on a grid shifted by 2 pixels straddle the token borders: no longer a token mosaic.
    assert token_mosaic(mosaic, videos, token=(4, 4)) > token_mosaic(mosaic[:, :, 2:-2, 2:-2], videos[:, :, 2:-2, 2:-2])


def test_blotches_a_few_tokens_wide_are_mottling_not_grain(real, real_measures):
    videos, labels = real
    # A colour offset (sigma 12 of 255 = 0.047) per 16x16-pixel block, as level 0's tokens of `tiny` give
    # after upsampling: the plane fitted to the background takes a little of it away.
    rng = np.random.default_rng(2)
    offsets = rng.normal(0, 12, (*videos.shape[:2], 4, 4, 3)).repeat(16, 2).repeat(16, 3)
    blotched = np.clip(videos + offsets, 0, 255).round().astype(np.uint8)
    worse = measure_videos(blotched, *class_targets(labels))
    assert (worse["mottling"] > 0.03).all() and (worse["mottling"] < 0.047 * 1.1).all(), worse["mottling"]
    assert worse["mottling"].mean() > 5 * real_measures["mottling"].mean()
    # Steps between blocks are a few pixels in 16: the grain barely moves.
    assert worse["grain"].mean() < 1.5 * real_measures["grain"].mean()
    # A video that never shows its object is measured over the whole frame.
    assert np.isfinite(mottling(blotched[1:2], ["red"])).all()


def test_edge_ratio_reads_numpy_and_torch_alike():
    x = np.random.default_rng(3).normal(size=(2, 3, 4, 8, 12)).astype(np.float32)
    assert edge_ratio(x, (4, 4)) == pytest.approx(edge_ratio(torch.from_numpy(x), (4, 4)), rel=1e-12)
    with pytest.raises(BadInputError, match="token size 1"):
        edge_ratio(x, (1, 4))


def test_grain_of_a_flat_video_is_zero():
    assert grain(np.full((1, 2, 8, 8, 3), 77, np.uint8)).tolist() == [0.0]


def test_grid_steps_find_a_mosaic_wherever_its_borders_lie(real):
    videos, _ = real
    assert grid_steps(videos, videos) == 1.0
    mosaic = with_mosaic(videos, 3)
    # Border positions add 2 x 12^2 = 288 to the data's mean squared step (about 120 here, in uint8 units): about
    # 3.3x at two positions of eight, a little less where clipping bites; well above the 1 of no grid.
    assert grid_steps(mosaic, videos) > 2
    # Shifted by 2 pixels the borders fall "inside" token_mosaic's tokens; grid_steps still sees the grid.
    shifted, base = mosaic[:, :, 2:-2, 2:-2], videos[:, :, 2:-2, 2:-2]
    assert token_mosaic(shifted, base) < 1 < 2 < grid_steps(shifted, base)
    # Grain without a grid: every position alike.
    noisy = np.clip(videos + np.random.default_rng(4).normal(0, 12, videos.shape), 0, 255).round().astype(np.uint8)
    assert grid_steps(noisy, videos) == pytest.approx(1.0, abs=0.25)


def test_report_and_summary(real):
    videos, labels = real
    report = quality_report(videos[:2], labels[:2], videos[:2], labels[:2])
    assert report["generated"]["grain_ratio"] == pytest.approx(1.0)
    assert report["generated"]["mottling_ratio"] == pytest.approx(1.0)
    assert report["generated"]["token_mosaic"] == 1.0
    assert report["generated"]["grid_steps"] == 1.0
    assert summarise({"x": np.array([1.0, np.nan, 3.0]), "y": np.array([np.nan])}) == {"x": 2.0, "y": pytest.approx(
        np.nan, nan_ok=True)}


def test_bad_input_is_reported():
    with pytest.raises(BadInputError, match="uint8"):
        measure_videos(np.zeros((1, 2, 8, 8, 3), np.float32), ["red"], ["disc"])
    with pytest.raises(BadInputError, match="1 videos need 1"):
        measure_videos(np.zeros((1, 2, 8, 8, 3), np.uint8), ["red", "red"], ["disc"])
    with pytest.raises(BadInputError, match="unknown colour 'purple'"):
        measure_videos(np.zeros((1, 2, 8, 8, 3), np.uint8), ["purple"], ["disc"])
    with pytest.raises(BadInputError, match="unknown shape 'star'"):
        measure_videos(np.zeros((1, 2, 8, 8, 3), np.uint8), ["red"], ["star"])
