"""Procedural class-conditional videos: one large moving object on a smooth background.

The class fixes the object's shape and colour (class k: shape k mod 6, colour k mod 7, so up to 42
classes get distinct pairs). Each video draws its own size, start, direction, speed and background
from a generator seeded by (seed, video index), so a video does not depend on how many are made.
The object moves in a straight line and bounces off the borders: its identity and motion span the
whole frame and clip, which is the global structure a patch-wise model can get wrong (two halves of
one object, a shape that changes between patches, a jump between frames). Edges are anti-aliased
from a signed distance, so there are no staircase artefacts for the model to learn.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

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
    rng = np.random.default_rng([seed, index])
    size = float(resolution)
    r = size * rng.uniform(0.18, 0.26)
    margin = 1.2 * r + 1  # keeps every shape (the widest is the diamond) inside the frame
    direction = rng.uniform(0, 2 * np.pi)
    speed = size * rng.uniform(0.5, 1.3) / max(frames, 1)  # crosses 0.5-1.3 frame widths per clip
    t = np.arange(frames, dtype=np.float32)
    cx = _bounce(rng.uniform(margin, size - margin), speed * math.cos(direction), t, margin, size - margin)
    cy = _bounce(rng.uniform(margin, size - margin), speed * math.sin(direction), t, margin, size - margin)

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
    return video.astype(np.uint8), label


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


def make_synthetic(out: str | os.PathLike, num_videos: int = 256, frames: int = 32, resolution: int = 64,
                   classes: int = 4, seed: int = 0, fps: float = 8.0, compression: str = "none",
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the synthetic set to `out` (the dataset layout of h5store.py, source="synthetic")."""
    if num_videos < 1 or frames < 1:
        raise BadInputError(f"--num-videos and --frames must be at least 1, got {num_videos} and {frames}")
    if not 8 <= resolution <= 4096:
        raise BadInputError(f"--resolution must be between 8 and 4096 pixels, got {resolution}")
    if not 1 <= classes <= MAX_CLASSES:
        raise BadInputError(f"--classes must be between 1 and {MAX_CLASSES} (distinct shape/colour pairs), "
                            f"got {classes}")
    if not (math.isfinite(fps) and fps > 0):
        raise BadInputError(f"--fps must be a positive number, got {fps}")
    writer = VideoStoreWriter(out, resolution, resolution, compression)
    try:
        for i in range(num_videos):
            video, label = synthetic_video(i, frames, resolution, classes, seed)
            writer.append(video, label=label, name=f"synthetic_{i:06d}")
            if progress:
                progress(i + 1, num_videos)
        return writer.finish(class_names(classes), fps=fps, split="all", fold=0, source="synthetic", seed=seed)
    except BaseException:
        writer.abort()
        raise
