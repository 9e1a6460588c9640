"""How much generated videos of the synthetic set look like its data, measured from their pixels.

Each video is scored against what was asked of it (a class, or a (colour, shape) pair of the captioned
set). The measures, each a number per video so that a set reports their means:
- colour_right: the palette colour most cells show is the requested one (`describe_objects`' vote);
- presence: the share of frames that show an object of the requested colour (`object_presence`);
- shape_iou: soft IoU of the object's coverage with the requested shape drawn at its centroid with the
  same area, the mean over the frames that show the object; shape_right: the shape with the highest
  IoU, by majority over frames, is the requested one;
- grain: RMS of each frame minus its 3x3 box blur, 0-1 scale (the per-pixel noise a sampler leaves);
- mottling: RMS of the background's 4x4-pixel averages about the plane (the synthetic gradient) fitted
  to them, 0-1 scale: blotches a few tokens wide that a 3x3 blur does not see as grain (iid grain of
  RMS s adds only s / 4 to it);
- size_variation: std / mean of the object's area over frames (the real objects keep their size);
- acceleration: mean |c[t+1] - 2 c[t] + c[t-1]| of the object's centroid, pixels / frame^2 (real
  objects move in straight lines, so only their bounces accelerate them).
`token_mosaic` compares pixel steps across interface-token borders with those inside tokens; it is a
property of a set, read relative to the same figure of real videos (1: no mosaic beyond the data's).
`grid_steps` asks the same without knowing where the borders are: the pixel steps at each position modulo
a period (8: a level-1 token, two top-level tokens, a tile stride), the largest class over the smallest,
over the data's. Shifted tilings (`sample.tile_shifts`) put token borders at every position, so that
token_mosaic, which counts the other tilings' borders as "inside", can read below 1; grid_steps cannot.

Object measures read `cell` x `cell` pixel averages (as `describe_objects`), so grain does not move
them; a frame without the object counts against presence and is left out of the others.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hpdm_core.data.synthetic import (COLOURS, SHAPES, _pool, background_plane, class_appearance, describe_objects,
                                      measure_object, object_presence)
from hpdm_core.errors import BadInputError

MEASURES = ("colour_right", "presence", "shape_iou", "shape_right", "grain", "mottling", "size_variation",
            "acceleration")


def class_targets(labels: Sequence[int]) -> tuple[list[str], list[str]]:
    """(colours, shapes) requested by class labels of the class-conditional synthetic set."""
    pairs = [class_appearance(int(k)) for k in labels]
    return [colour for _, colour in pairs], [shape for shape, _ in pairs]


def _check(videos: np.ndarray) -> np.ndarray:
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise BadInputError(f"expected uint8 videos [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    return videos


def grain(videos: np.ndarray) -> np.ndarray:
    """[N] RMS of each frame minus its 3x3 box blur (interior pixels, all channels), 0-1 scale."""
    x = _check(videos).astype(np.float32) / 255
    h, w = x.shape[2:4]
    blur = sum(x[:, :, dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3)) / 9
    return np.sqrt(((x[:, :, 1:-1, 1:-1] - blur) ** 2).mean((1, 2, 3, 4)))


def mottling(videos: np.ndarray, colours: Sequence[str], cell: int = 4, tolerance: float = 0.3) -> np.ndarray:
    """[N] RMS (over background cells, channels and frames) of the `cell` x `cell` pixel averages of each
    frame about the background plane fitted to them, the object of `colours[i]` and a 2-cell margin
    left out (the whole frame where it shows no object), 0-1 scale."""
    pooled = _pool(_check(videos), cell) / 255  # [N, F, h, w, 3]
    out = np.full(len(pooled), np.nan)
    for i, video in enumerate(pooled):
        colour = np.asarray(COLOURS[colours[i]], np.float32)
        squares, count = 0.0, 0
        for frame in video:
            fitted = background_plane(frame, np.sqrt(((frame - colour) ** 2).sum(-1)) < tolerance)
            if fitted is not None:
                background, away = fitted
                squares += float(((frame - background)[away] ** 2).sum())
                count += int(away.sum()) * frame.shape[-1]
        if count:
            out[i] = np.sqrt(squares / count)
    return out


def edge_ratio(x, token: tuple[int, int], axes: tuple[int, int] = (-2, -1)) -> float:
    """Mean squared step between neighbouring pixels across token borders over the one inside tokens,
    summed over the h and w axes of x (numpy or CPU torch; `axes` says where h and w are). Tokens
    tile from pixel 0 with `token` = (height, width) pixels."""
    x = np.asarray(x, dtype=np.float64)
    across, inside = 0.0, 0.0
    for axis, size in zip(axes, token):
        step = np.moveaxis(np.square(np.diff(x, axis=axis)), axis, 0)  # step i lies between pixels i and i + 1
        border = (np.arange(step.shape[0]) + 1) % size == 0
        if not border.any() or border.all():
            raise BadInputError(f"token size {size} leaves no step across or inside a token in {x.shape[axis]} pixels")
        across, inside = across + float(step[border].mean()), inside + float(step[~border].mean())
    return across / max(inside, 1e-12)


def token_mosaic(videos: np.ndarray, real: np.ndarray, token: tuple[int, int] = (4, 4)) -> float:
    """edge_ratio of uint8 videos [N, F, H, W, 3] over that of real ones: 1 = token borders are as
    smooth as the data's, well above 1 = a mosaic of per-token colours."""
    return edge_ratio(_check(videos), token, (2, 3)) / edge_ratio(_check(real), token, (2, 3))


def grid_steps(videos: np.ndarray, real: np.ndarray, period: int = 8) -> float:
    """Mean squared pixel step at each position modulo `period` (height and width steps alike), largest over
    smallest, for uint8 videos [N, F, H, W, 3] over the same figure of real ones: 1 = steps as evenly spread
    over positions as the data's, above 1 = a periodic grid of steps (a mosaic or tile seams)."""
    def spread(x: np.ndarray) -> float:
        x = _check(x).astype(np.float32) / 255
        by_position = np.zeros(period)
        for axis in (2, 3):
            step = np.moveaxis(np.square(np.diff(x, axis=axis)), axis, 0)  # step i lies between pixels i and i + 1
            if step.shape[0] < period:
                raise BadInputError(f"{x.shape[axis]} pixels hold fewer steps than the period {period}")
            positions = (np.arange(step.shape[0]) + 1) % period
            by_position += [float(step[positions == k].mean()) for k in range(period)]
        return float(by_position.max() / max(by_position.min(), 1e-12))

    return spread(videos) / spread(real)


def _track(videos: np.ndarray, colours: Sequence[str], shapes: Sequence[str], cell: int, tolerance: float):
    """Per video: areas [F], centroids [F, 2] (nan where the object is missing), IoU with each shape of
    SHAPES [F, S] (nan where missing), for the object of the requested colour."""
    pooled = _pool(videos, cell) / 255
    n, f = videos.shape[:2]
    areas = np.full((n, f), np.nan)
    centroids = np.full((n, f, 2), np.nan)
    ious = np.full((n, f, len(SHAPES)), np.nan)
    for i in range(n):
        colour = np.asarray(COLOURS[colours[i]], np.float32)
        distance = np.sqrt(((pooled[i] - colour) ** 2).sum(-1))  # [F, h, w]
        for t in range(f):
            found = measure_object(pooled[i, t], colour, distance[t], SHAPES, cell, tolerance)
            if found is not None:
                areas[i, t], centroids[i, t], ious[i, t] = found.area, found.centroid, found.shape_iou
    return areas, centroids, ious


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    """Mean over `axis` ignoring nan; nan (no warning) where every value is nan."""
    counts = np.sum(~np.isnan(x), axis=axis)
    return np.where(counts > 0, np.nansum(x, axis=axis) / np.maximum(counts, 1), np.nan)


def measure_videos(videos: np.ndarray, colours: Sequence[str], shapes: Sequence[str], cell: int = 2,
                   tolerance: float = 0.3) -> dict[str, np.ndarray]:
    """Every measure of the module docstring, one value per video ([N] arrays; nan where a video never
    shows its object), for uint8 videos [N, F, H, W, 3] asked for `colours[i]` and `shapes[i]`."""
    videos = _check(videos)
    n = len(videos)
    if len(colours) != n or len(shapes) != n:
        raise BadInputError(f"{n} videos need {n} requested colours and shapes, got {len(colours)} and {len(shapes)}")
    for name in colours:
        if name not in COLOURS:
            raise BadInputError(f"unknown colour {name!r}; the synthetic set has {', '.join(COLOURS)}")
    for name in shapes:
        if name not in SHAPES:
            raise BadInputError(f"unknown shape {name!r}; the synthetic set has {', '.join(SHAPES)}")
    # describe_objects' colour vote; one shape to try is enough for it (shapes are measured below).
    seen = [colour for colour, _ in describe_objects(videos, shapes=SHAPES[:1], cell=cell, tolerance=tolerance)]
    labels = [list(COLOURS).index(c) for c in colours]  # class k has colour k mod 7: presence by colour
    presence = object_presence(videos, np.array(labels)).mean(1)
    areas, centroids, ious = _track(videos, colours, shapes, cell, tolerance)

    wanted = np.array([SHAPES.index(s) for s in shapes])
    shape_iou = _nanmean(ious[np.arange(n), :, wanted], 1)
    found = ~np.isnan(areas)
    best = np.where(found, np.nan_to_num(ious, nan=-1.0).argmax(-1), -1)  # [N, F]
    shape_right = np.array([np.bincount(best[i][found[i]], minlength=len(SHAPES)).argmax() == wanted[i]
                            if found[i].any() else False for i in range(n)], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        size_variation = np.nanstd(np.where(found, areas, np.nan), 1) / _nanmean(areas, 1)
    accel = np.linalg.norm(centroids[:, 2:] - 2 * centroids[:, 1:-1] + centroids[:, :-2], axis=-1)  # nan if a gap
    return {"colour_right": np.array([s == c for s, c in zip(seen, colours)], np.float64),
            "presence": presence, "shape_iou": shape_iou, "shape_right": shape_right,
            "grain": grain(videos), "mottling": mottling(videos, colours), "size_variation": size_variation,
            "acceleration": _nanmean(accel, 1)}


def summarise(measures: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each measure over the videos that have it (nan-free means; nan if none has it)."""
    return {name: float(_nanmean(np.asarray(values, np.float64), 0)) for name, values in measures.items()}


def quality_report(videos: np.ndarray, labels: Sequence[int], real: np.ndarray, real_labels: Sequence[int],
                   token: tuple[int, int] = (4, 4)) -> dict[str, dict[str, float]]:
    """{"generated": means, "real": means} of every measure for class-labelled videos of the synthetic
    set next to real ones, with token_mosaic and grid_steps (generated over real), grain_ratio and
    mottling_ratio in "generated"."""
    generated = summarise(measure_videos(videos, *class_targets(labels)))
    reference = summarise(measure_videos(real, *class_targets(real_labels)))
    generated["grain_ratio"] = generated["grain"] / reference["grain"]
    generated["mottling_ratio"] = generated["mottling"] / reference["mottling"]
    generated["token_mosaic"] = token_mosaic(videos, real, token)
    generated["grid_steps"] = grid_steps(videos, real)
    return {"generated": generated, "real": reference}
