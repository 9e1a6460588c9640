"""Render `hpdm sample --format npz` output for people: a grid mp4, a grid gif and a frame-grid PNG.

    python examples/render_samples.py demo/samples.npz demo/samples

writes demo/samples.mp4, demo/samples.gif and demo/samples_frames.png (one row per video, evenly
spaced frames left to right).
"""

from __future__ import annotations

import argparse
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from hpdm_core.data.video_io import write_video_grid


def write_png(path: Path, image: np.ndarray) -> Path:
    """uint8 [H, W, 3] -> an 8-bit RGB PNG (no dependency beyond zlib), written atomically."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(image, np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return path


def frame_grid(videos: np.ndarray, columns: int = 8, padding: int = 2) -> np.ndarray:
    """uint8 [N, F, H, W, 3] -> one image: a row per video, `columns` evenly spaced frames."""
    count, frames, height, width, _ = videos.shape
    picks = np.linspace(0, frames - 1, min(columns, frames)).round().astype(int)
    image = np.full((count * (height + padding) + padding, len(picks) * (width + padding) + padding, 3), 255, np.uint8)
    for i, video in enumerate(videos):
        for j, k in enumerate(picks):
            y, x = padding + i * (height + padding), padding + j * (width + padding)
            image[y:y + height, x:x + width] = video[k]
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("npz", type=Path, help="output of `hpdm sample --format npz`")
    parser.add_argument("out", type=Path, help="output prefix: OUT.mp4, OUT.gif, OUT_frames.png")
    parser.add_argument("--rows", type=int, default=8, help="videos in the PNG")
    parser.add_argument("--columns", type=int, default=8, help="frames per video in the PNG")
    parser.add_argument("--fps", type=float, default=8.0)
    args = parser.parse_args()

    with np.load(args.npz) as arrays:
        videos = arrays["videos"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = [write_video_grid(args.out.with_suffix(".mp4"), videos, args.fps),
               write_video_grid(args.out.with_suffix(".gif"), videos, args.fps),
               write_png(args.out.with_name(args.out.name + "_frames.png"), frame_grid(videos[:args.rows], args.columns))]
    for path in written:
        print(f"wrote {path} ({Path(path).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
