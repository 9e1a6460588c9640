"""Procedural class-conditional videos: one large moving object on a smooth background.

The class fixes the object's shape and colour (class k: shape k mod 6, colour k mod 7, so up to 42
classes get distinct pairs). Each video draws its own size, start, direction, speed and background
from a generator seeded by (seed, video index), so a video does not depend on how many are made.
The object moves in a straight line and bounces off the borders: its identity and motion span the
whole frame and clip, which is the global structure a patch-wise model can get wrong (two halves of
one object, a shape that changes between patches, a jump between frames). Edges are anti-aliased
from a signed distance, so there are no staircase artefacts for the model to learn.

The captioned set (`captions=True`, for text-to-video) draws colour and shape independently: its
classes are all (colour, shape) pairs of the first K colours and M shapes, and each video gets a
caption that names colour, shape and direction of motion in varied words. Its objects move in a
straight line without bouncing, so that the direction is one. `holdout_pairs` leaves pairs out of
the file (a model can then be prompted for combinations it never saw). `describe_objects` reads
colour and shape back from the pixels of (generated) videos.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.errors import BadInputError

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond")
COLOURS = {
    "red": (0.92, 0.16, 0.14), "green": (0.16, 0.80, 0.22), "blue": (0.22, 0.38, 0.96),
    "yellow": (0.96, 0.86, 0.12), "magenta": (0.90, 0.22, 0.86), "cyan": (0.12, 0.86, 0.90),
    "orange": (1.00, 0.56, 0.10),
}
MAX_CLASSES = len(SHAPES) * len(COLOURS)  # 6 and 7 are coprime: classes 0..41 get distinct pairs


def class_appearance(label: int) -> tuple[str, str]:
    """(shape, colour) names of a class."""
    return SHAPES[label % len(SHAPES)], list(COLOURS)[label % len(COLOURS)]


def class_names(classes: int) -> list[str]:
    return ["{1}_{0}".format(*class_appearance(k)) for k in range(classes)]


def _length(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y)  # several times faster than np.hypot, and exact enough here


def _box(px: np.ndarray, py: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    qx, qy = np.abs(px) - half_w, np.abs(py) - half_h
    outside = _length(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def shape_distance(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) of a shape of radius ~r centred at the origin."""
    if shape == "disc":
        return _length(px, py) - r
    if shape == "ring":
        return np.abs(_length(px, py) - 0.68 * r) - 0.32 * r
    if shape == "square":
        return _box(px, py, 0.82 * r, 0.82 * r)
    if shape == "diamond":
        return (np.abs(px) + np.abs(py) - 1.15 * r) / math.sqrt(2)
    if shape == "cross":
        return np.minimum(_box(px, py, r, 0.34 * r), _box(px, py, 0.34 * r, r))
    if shape == "triangle":
        # Intersection of three half-planes; image y points down, so this triangle points up.
        angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
        edges = [px * math.cos(a) + py * math.sin(a) for a in angles]
        return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - 0.6 * r
    raise BadInputError(f"unknown shape {shape!r}")


def _bounce(start: float, velocity: float, steps: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions of a point moving at constant speed between two walls that reflect it."""
    span = high - low
    u = np.mod(start - low + velocity * steps, 2 * span)
    return low + span - np.abs(u - span)


def synthetic_video(index: int, frames: int = 32, resolution: int = 64, classes: int = 8,
                    seed: int = 0) -> tuple[np.ndarray, int]:
    """(uint8 [frames, resolution, resolution, 3], label) of video `index` of the set."""
    label = index % classes
    shape, colour = class_appearance(label)
    return _render(shape, colour, np.random.default_rng([seed, index]), frames, resolution), label


def _render(shape: str, colour: str, rng: np.random.Generator, frames: int, resolution: int,
            direction_sector: int | None = None) -> np.ndarray:
    """One video of `shape` in `colour`. direction_sector None: any direction, bouncing off the borders
    (the class set); 0..7: a straight line towards that compass sector (0 = right, 2 = up), no bounce."""
    size = float(resolution)
    r = size * rng.uniform(0.18, 0.26)
    margin = 1.2 * r + 1  # keeps every shape (the widest is the diamond) inside the frame
    t = np.arange(frames, dtype=np.float32)
    if direction_sector is None:
        direction = rng.uniform(0, 2 * np.pi)
        speed = size * rng.uniform(0.5, 1.3) / max(frames, 1)  # crosses 0.5-1.3 frame widths per clip
        cx = _bounce(rng.uniform(margin, size - margin), speed * math.cos(direction), t, margin, size - margin)
        cy = _bounce(rng.uniform(margin, size - margin), speed * math.sin(direction), t, margin, size - margin)
    else:
        cx, cy = _straight(rng, direction_sector, t, margin, size)

    grid = np.arange(resolution, dtype=np.float32) + 0.5  # pixel centres
    px = grid[None, None, :] - cx[:, None, None].astype(np.float32)
    py = grid[None, :, None] - cy[:, None, None].astype(np.float32)
    alpha = np.clip(0.5 - shape_distance(shape, px, py, r), 0.0, 1.0)[..., None]

    # Background: a linear gradient between two muted colours that drifts slowly along its axis.
    low, high = rng.uniform(0.05, 0.45, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(-0.3, 0.3) / max(frames, 1)
    along = ((grid[None, :] - size / 2) * math.cos(angle) + (grid[:, None] - size / 2) * math.sin(angle)) / size
    mix = np.clip(along[None] + 0.5 + drift * t[:, None, None], 0.0, 1.0)[..., None]
    video = low + (high - low) * mix
    video += (np.asarray(COLOURS[colour], np.float32) - video) * alpha  # alpha-blend the object over it
    video *= 255
    video += 0.5  # round half up on the cast; values are non-negative
    return video.astype(np.uint8)


def _straight(rng: np.random.Generator, sector: int, t: np.ndarray, margin: float,
              size: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre positions of a straight move towards compass sector `sector` (±10 degrees) that covers
    55-90 % of the free span along its main axis and stays inside the frame throughout."""
    angle = math.radians(45 * sector + rng.uniform(-10, 10))
    dx, dy = math.cos(angle), -math.sin(angle)  # image y points down: "up" is -y
    span = size - 2 * margin
    length = rng.uniform(0.55, 0.9) * span / max(abs(dx), abs(dy))
    progress = t / max(len(t) - 1, 1)
    starts = []
    for d in (dx, dy):
        low, high = (margin, size - margin - length * d) if d >= 0 else (margin - length * d, size - margin)
        starts.append(rng.uniform(low, high))
    return (np.float32(starts[0]) + np.float32(dx * length) * progress,
            np.float32(starts[1]) + np.float32(dy * length) * progress)


def object_presence(videos: np.ndarray, labels: np.ndarray, cell: int = 4, min_cells: int = 2,
                    tolerance: float = 0.3) -> np.ndarray:
    """Whether each frame shows its video's object: [N, F] bool, for uint8 videos [N, F, H, W, 3].

    A frame shows it when at least `min_cells` of its `cell` x `cell` pixel averages lie within
    `tolerance` (RGB distance, 0-1 scale) of the class's colour. Averaging first makes the test blind
    to per-pixel grain, which would otherwise knock pixels of a visible object out of the colour.
    Every real video of the set passes in every frame: its objects cover 20-50 such cells at 64x64.
    """
    n, f, h, w, _ = videos.shape
    if h % cell or w % cell:
        raise BadInputError(f"frames of {h}x{w} do not divide into {cell}x{cell} cells")
    pooled = videos.reshape(n, f, h // cell, cell, w // cell, cell, 3).astype(np.float32).mean((3, 5)) / 255
    colours = np.array([COLOURS[class_appearance(int(k))[1]] for k in labels], np.float32)  # [N, 3]
    distance = np.sqrt(((pooled - colours[:, None, None, None]) ** 2).sum(-1))
    return (distance < tolerance).sum((2, 3)) >= min_cells


# ----------------------------------------------------------------------------- the captioned set

DIRECTIONS = ("right", "upper right", "up", "upper left", "left", "lower left", "down", "lower right")
# Per direction: the "to ..." form, the "x and y" form and the "towards ..." form.
_DIRECTION_WORDS = {
    "right": ("to the right", "right", "towards the right"),
    "upper right": ("to the upper right", "up and right", "towards the top right"),
    "up": ("upwards", "up", "towards the top"),
    "upper left": ("to the upper left", "up and left", "towards the top left"),
    "left": ("to the left", "left", "towards the left"),
    "lower left": ("to the lower left", "down and left", "towards the bottom left"),
    "down": ("downwards", "down", "towards the bottom"),
    "lower right": ("to the lower right", "down and right", "towards the bottom right"),
}
SHAPE_WORDS = {"disc": ("disc", "circle"), "square": ("square", "box"), "triangle": ("triangle",),
               "ring": ("ring", "hoop"), "cross": ("cross", "plus sign"), "diamond": ("diamond", "rhombus")}
_VERBS = ("drifting", "moving", "sliding", "gliding")
_MOVING = ("a {c} {s} {v} {to}", "{c} {s} {v} {xy}", "a {s} in {c} {v} {towards}", "the {c} {s} moves {xy}")
_STILL = ("a {c} {s}", "{c} {s}", "a {s} in {c}", "a picture of a {c} {s}")


def pair_classes(colours: int, shapes: int) -> list[tuple[str, str]]:
    """(colour, shape) of each class of the captioned set: label = colour index * shapes + shape index."""
    return [(c, s) for c in list(COLOURS)[:colours] for s in SHAPES[:shapes]]


def max_holdout(colours: int, shapes: int) -> int:
    """The most pairs that can be left out while every colour and every shape still occurs."""
    return colours * shapes - max(colours, shapes)


def choose_holdout(colours: int, shapes: int, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` pairs to leave out, chosen from the seed, so that every colour and shape keeps a pair.

    A shuffled diagonal (colour perm[i mod K], shape perm[i mod M]) of max(K, M) pairs covers every
    colour and shape; the held-out pairs are drawn from the others, so any count up to max_holdout works."""
    if not 0 <= count <= max_holdout(colours, shapes):
        raise BadInputError(f"--holdout-pairs must be between 0 and {max_holdout(colours, shapes)} for "
                            f"{colours} colours and {shapes} shapes (every colour and shape must stay in the file)")
    rng = np.random.default_rng([seed, 0x484F4C44])  # its own stream: "HOLD"
    colour_order, shape_order = rng.permutation(colours), rng.permutation(shapes)
    keep = {(int(colour_order[i % colours]), int(shape_order[i % shapes])) for i in range(max(colours, shapes))}
    others = [(c, s) for c in range(colours) for s in range(shapes) if (c, s) not in keep]
    picked = sorted(others[i] for i in rng.choice(len(others), size=count, replace=False))
    return [(list(COLOURS)[c], SHAPES[s]) for c, s in picked]


def caption_text(colour: str, shape: str, direction: str | None, rng: np.random.Generator) -> str:
    """A caption naming colour, shape and (for a video) direction of motion, in one of a few phrasings."""
    words = {"c": colour, "s": str(rng.choice(SHAPE_WORDS[shape]))}
    if direction is None:
        return str(rng.choice(_STILL)).format(**words)
    to, xy, towards = _DIRECTION_WORDS[direction]
    return str(rng.choice(_MOVING)).format(v=str(rng.choice(_VERBS)), to=to, xy=xy, towards=towards, **words)


def captioned_video(index: int, kept: list[int], classes: list[tuple[str, str]], frames: int, resolution: int,
                    seed: int, still: bool = False) -> tuple[np.ndarray, int, str]:
    """(video, label, caption) of video `index` of the captioned set whose file holds the labels `kept`.

    Labels go round `kept` in an order shuffled per round, so every kept pair occurs about equally often."""
    round_, position = divmod(index, len(kept))
    label = kept[int(np.random.default_rng([seed, round_, 1]).permutation(len(kept))[position])]
    colour, shape = classes[label]
    rng = np.random.default_rng([seed, index])
    sector = int(rng.integers(len(DIRECTIONS)))
    video = _render(shape, colour, rng, 1 if still else frames, resolution, sector)
    direction = None if still else DIRECTIONS[sector]
    caption = caption_text(colour, shape, direction, np.random.default_rng([seed, index, 2]))
    return video, label, caption


def make_synthetic(out: str | os.PathLike, num_videos: int = 256, frames: int = 32, resolution: int = 64,
                   classes: int = 4, seed: int = 0, fps: float = 8.0, compression: str = "none",
                   progress: Callable[[int, int], None] | None = None, captions: bool = False,
                   colours: int = 4, shapes: int = 4, holdout_pairs: int = 0, still: bool = False) -> Path:
    """Write the synthetic set to `out` (the dataset layout of h5store.py, source="synthetic").

    captions: the captioned set (module docstring); `classes` is then colours x shapes and is ignored.
    still: single frames (kind="images") of the same classes, for joint image+video training."""
    if num_videos < 1 or frames < 1:
        raise BadInputError(f"--num-videos and --frames must be at least 1, got {num_videos} and {frames}")
    if not 8 <= resolution <= 4096:
        raise BadInputError(f"--resolution must be between 8 and 4096 pixels, got {resolution}")
    if not (math.isfinite(fps) and fps > 0):
        raise BadInputError(f"--fps must be a positive number, got {fps}")
    extra: dict = {"kind": "images"} if still else {}
    if captions:
        if not 1 <= colours <= len(COLOURS) or not 1 <= shapes <= len(SHAPES):
            raise BadInputError(f"--colours must be between 1 and {len(COLOURS)} and --shapes between 1 and "
                                f"{len(SHAPES)}, got {colours} and {shapes}")
        pairs = pair_classes(colours, shapes)
        held = choose_holdout(colours, shapes, holdout_pairs, seed)  # in label order
        kept = [label for label, pair in enumerate(pairs) if pair not in held]
        names = [f"{c}_{s}" for c, s in pairs]
        extra.update(colours=json.dumps(list(COLOURS)[:colours]), shapes=json.dumps(list(SHAPES[:shapes])),
                     holdout_pairs=json.dumps([list(pair) for pair in held]))
    else:
        if holdout_pairs:
            raise BadInputError("--holdout-pairs needs --captions (pairs are the captioned set's classes)")
        if not 1 <= classes <= MAX_CLASSES:
            raise BadInputError(f"--classes must be between 1 and {MAX_CLASSES} (distinct shape/colour pairs), "
                                f"got {classes}")
        names = class_names(classes)
    writer = VideoStoreWriter(out, resolution, resolution, compression)
    try:
        for i in range(num_videos):
            caption = ""
            if captions:
                video, label, caption = captioned_video(i, kept, pairs, frames, resolution, seed, still)
            else:
                video, label = synthetic_video(i, 1 if still else frames, resolution, classes, seed)
            writer.append(video, label=label, name=f"synthetic_{i:06d}", caption=caption)
            if progress:
                progress(i + 1, num_videos)
        return writer.finish(names, fps=fps, split="all", fold=0, source="synthetic", seed=seed, **extra)
    except BaseException:
        writer.abort()
        raise


# ----------------------------------------------------------------------------- reading objects back

@functools.lru_cache(maxsize=None)
def _shape_area_factor(shape: str) -> float:
    """Area of `shape` at radius r, divided by r^2 (measured once on a fine grid)."""
    r, grid = 100.0, np.arange(-160, 160, dtype=np.float64) + 0.5
    alpha = np.clip(0.5 - shape_distance(shape, grid[None, :], grid[:, None], r), 0, 1)
    return float(alpha.sum()) / r ** 2


def _pool(videos: np.ndarray, cell: int) -> np.ndarray:
    n, f, h, w, c = videos.shape
    if h % cell or w % cell:
        raise BadInputError(f"frames of {h}x{w} do not divide into {cell}x{cell} cells")
    return videos.reshape(n, f, h // cell, cell, w // cell, cell, c).astype(np.float32).mean((3, 5))


def background_plane(frame: np.ndarray, near: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """(background [h, w, 3], away [h, w]) of a pooled frame [h, w, 3]: a plane per channel (the synthetic
    gradient) fitted to the cells `away` from the object cells `near`, grown by `margin` cells so that
    the object's anti-aliased rim is not background; None when fewer than 3 cells are left to fit."""
    h, w, _ = frame.shape
    grown = near.copy()
    for _ in range(margin):
        grown[1:] |= grown[:-1].copy()
        grown[:-1] |= grown[1:].copy()
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
    away = ~grown
    if away.sum() < 3:
        return None
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    design = np.stack([np.ones_like(xx), xx / w, yy / h], -1)  # [h, w, 3]
    coefficients, *_ = np.linalg.lstsq(design[away], frame[away], rcond=None)
    return design @ coefficients, away


def _coverage(frame: np.ndarray, colour: np.ndarray, distance: np.ndarray, tolerance: float) -> np.ndarray | None:
    """How much of each cell of a pooled frame [h, w, 3] the object of `colour` covers, 0..1.

    A cell is a mix a * colour + (1 - a) * background, so a = 1 - |cell - colour| / |background - colour|,
    with the background plane of `background_plane`; None when the frame shows no object or has no
    background to fit."""
    near = distance < tolerance
    if not near.any():
        return None
    fitted = background_plane(frame, near)
    if fitted is None:
        return None
    background, away = fitted
    span = np.sqrt(((background - colour) ** 2).sum(-1))
    return np.clip(1 - distance / np.maximum(span, 1e-3), 0, 1) * ~away


def describe_objects(videos: np.ndarray, colours: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                     cell: int = 2, tolerance: float = 0.3) -> list[tuple[str | None, str | None]]:
    """(colour, shape) that each uint8 video [N, F, H, W, 3] shows, measured from its pixels.

    Colour: the palette colour (of `colours`, default all) that most `cell` x `cell` cell averages lie
    within `tolerance` of (RGB distance, 0-1 scale), summed over frames. Shape: per frame, the object's
    coverage of each cell (1 - its distance to the colour / the background's distance) is compared by
    soft IoU with every shape of `shapes` (default all) drawn at the object's centroid with the same
    area; the majority over frames wins. Cell averages make both blind to per-pixel grain.
    (None, None) for a video with no cell of any palette colour."""
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise BadInputError(f"expected uint8 videos [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    colours = list(colours or COLOURS)
    shapes = list(shapes or SHAPES)
    n, f, h, w, _ = videos.shape
    pooled = _pool(videos, cell) / 255  # [N, F, h, w, 3]
    palette = np.array([COLOURS[c] for c in colours], np.float32)
    # Distance of every cell to every palette colour: [N, F, h, w, C]
    distance = np.sqrt(((pooled[..., None, :] - palette) ** 2).sum(-1))
    votes = (distance < tolerance).sum((1, 2, 3))  # [N, C]
    out: list[tuple[str | None, str | None]] = []
    for i in range(n):
        if votes[i].max() == 0:
            out.append((None, None))
            continue
        k = int(votes[i].argmax())
        shape_votes = np.zeros(len(shapes), np.int64)
        for t in range(f):
            found = measure_object(pooled[i, t], palette[k], distance[i, t, ..., k], shapes, cell, tolerance)
            if found is not None:
                shape_votes[int(np.argmax(found.shape_iou))] += 1
        out.append((colours[k], shapes[int(shape_votes.argmax())] if shape_votes.any() else None))
    return out


@dataclasses.dataclass
class FrameObject:
    """The object of one colour in one frame: area in pixels, centroid (x, y) in pixels, and soft IoU
    of its coverage with each shape of a list drawn at its centroid with the same area."""
    area: float
    centroid: tuple[float, float]
    shape_iou: np.ndarray


def measure_object(frame: np.ndarray, colour: np.ndarray, distance: np.ndarray, shapes: Sequence[str], cell: int,
                   tolerance: float = 0.3) -> FrameObject | None:
    """The object of `colour` in one pooled frame [h, w, 3] (0-1, `cell` x `cell` pixel averages), given
    each cell's RGB distance to the colour [h, w]; None when the frame shows no such object (or one
    smaller than 4 pixels)."""
    coverage = _coverage(frame, colour, distance, tolerance)
    if coverage is None:
        return None
    area = float(coverage.sum()) * cell * cell
    if area < 4:
        return None
    h, w = coverage.shape
    ys = (np.arange(h, dtype=np.float32) + 0.5) * cell
    xs = (np.arange(w, dtype=np.float32) + 0.5) * cell
    cy = float((coverage.sum(1) * ys).sum() / coverage.sum())
    cx = float((coverage.sum(0) * xs).sum() / coverage.sum())
    gx = np.arange(w * cell, dtype=np.float32) + 0.5 - cx
    gy = np.arange(h * cell, dtype=np.float32) + 0.5 - cy
    scores = []
    for shape in shapes:
        r = math.sqrt(area / _shape_area_factor(shape))
        alpha = np.clip(0.5 - shape_distance(shape, gx[None, :], gy[:, None], r), 0, 1)
        template = _pool(alpha[None, None, ..., None], cell)[0, 0, ..., 0]
        scores.append(np.minimum(template, coverage).sum() / max(np.maximum(template, coverage).sum(), 1e-6))
    return FrameObject(area, (cx, cy), np.array(scores, np.float64))
