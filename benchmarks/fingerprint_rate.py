"""How long the dataset fingerprint (h5store.dataset_fingerprint) takes, extrapolated to UCF-101.

    python benchmarks/fingerprint_rate.py                      # 64 videos of 48 frames at 256x256
    python benchmarks/fingerprint_rate.py --videos 256 --frames 100 --resolution 256 --compression lzf

It writes a synthetic file of random frames (incompressible: the worst case for reading), times the
fingerprint (three frames of every video plus the structure) and prints frames hashed per second and
the time for a UCF-101 file at that resolution: 13,320 videos -> 39,960 frames hashed, of its
~2.48M frames (~186 per video).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpdm_core.data.h5store import VideoStore, VideoStoreWriter, dataset_fingerprint, fingerprinted_frames  # noqa: E402

UCF101_VIDEOS = 13_320


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "videos.h5"
        with VideoStoreWriter(path, args.resolution, args.resolution, args.compression) as writer:
            for i in range(args.videos):
                writer.append(rng.integers(0, 256, (args.frames, args.resolution, args.resolution, 3), np.uint8),
                              label=i % 4, name=f"v{i:05d}")
            writer.finish([str(c) for c in range(4)], fps=25.0)
        store = VideoStore(path)
        hashed = len(fingerprinted_frames(store.offsets))
        start = time.perf_counter()
        fingerprint = dataset_fingerprint(store)
        seconds = time.perf_counter() - start
    rate = hashed / seconds
    frame_mb = args.resolution ** 2 * 3 / 1e6
    ucf_frames = 3 * UCF101_VIDEOS
    print(f"{fingerprint}: {hashed} frames of {args.videos * args.frames} hashed in {seconds:.3f} s "
          f"({rate:.0f} frames/s, {rate * frame_mb:.0f} MB/s)")
    print(f"UCF-101 at {args.resolution}x{args.resolution}: {ucf_frames} frames ({ucf_frames * frame_mb / 1e3:.1f} GB) "
          f"-> {ucf_frames / rate:.1f} s")


if __name__ == "__main__":
    main()
