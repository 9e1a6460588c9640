"""Render `hpdm sample --format npz` output for people: a grid mp4, a grid gif and a frame-grid PNG.

    python examples/render_samples.py demo/samples.npz demo/samples

writes demo/samples.mp4, demo/samples.gif and demo/samples_frames.png (one row per video, evenly
spaced frames left to right).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hpdm_core.data.video_io import write_frame_grid, write_video_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("npz", type=Path, help="output of `hpdm sample --format npz`")
    parser.add_argument("out", type=Path, help="output prefix: OUT.mp4, OUT.gif, OUT_frames.png")
    parser.add_argument("--rows", type=int, default=8, help="videos in the PNG")
    parser.add_argument("--columns", type=int, default=8, help="frames per video in the PNG")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--scale", type=int, default=2, help="pixel repeat in the PNG")
    args = parser.parse_args()

    with np.load(args.npz) as arrays:
        videos = arrays["videos"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = [write_video_grid(args.out.with_suffix(".mp4"), videos, args.fps),
               write_video_grid(args.out.with_suffix(".gif"), videos, args.fps),
               write_frame_grid(args.out.with_name(args.out.name + "_frames.png"), videos[:args.rows], args.columns,
                                args.scale)]
    for path in written:
        print(f"wrote {path} ({Path(path).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
