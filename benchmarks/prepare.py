"""Packing throughput of `hpdm prepare ucf101` (1 vs N worker processes) and ClipDataset throughput.

Builds a fake UCF-101 tree of real mpeg4 .avi files (320x240, 25 fps) in a temp folder, prepares it
with 1 and with N workers in the same run, and prints videos/s and the speed-up; then reads clips from
the result with 0 and 2 DataLoader workers.

    python benchmarks/prepare.py [--videos 32] [--frames 100] [--resolution 128] [--workers 2] [--repeats 3]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpdm_core.data.ucf101 import prepare_ucf101  # noqa: E402

# torch is imported only where the reader is timed: spawned decoding workers re-import this script,
# and loading torch in each would be start-up cost that `hpdm prepare` itself does not pay.


def make_tree(root: Path, videos: int, frames: int) -> None:
    classes = ["ClassA", "ClassB", "ClassC", "ClassD"]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240 // 8, 320 // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    train = []
    for v in range(videos):
        c = classes[v % len(classes)]
        name = f"v_{c}_g{8 + v // len(classes):02d}_c01"
        (root / "UCF-101" / c).mkdir(parents=True, exist_ok=True)
        with av.open(str(root / "UCF-101" / c / f"{name}.avi"), "w") as container:
            stream = container.add_stream("mpeg4", rate=25, options={"qscale": "3"})
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for t in range(frames):  # a textured image panning sideways: real motion for the codec
                rgb = np.roll(base, shift=(v * 7 + 3 * t), axis=1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        train.append(f"{c}/{name}.avi {v % len(classes) + 1}")
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("")


def time_prepare(src: Path, out: Path, workers: int, resolution: int) -> tuple[float, int]:
    start = time.perf_counter()
    report = prepare_ucf101(src, out, split="all", resolution=resolution, workers=workers, restart=True,
                            overwrite=True)
    return time.perf_counter() - start, report.videos


def time_loader(path: Path, frames: int, resolution: int, workers: int, batches: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from hpdm_core.data.dataset import ClipDataset

    torch.set_num_threads(1)
    ds = ClipDataset(path, frames=frames, resolution=resolution, flip=True)
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    seen = 0
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    while seen < batches * 8:
        try:
            clips, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += len(clips)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 2, 8))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_tree(tmp / "ucf", args.videos, args.frames)
        print(f"{args.videos} videos of {args.frames} frames, 320x240 mpeg4 -> {args.resolution}^2; "
              f"{os.cpu_count()} cores")
        time_prepare(tmp / "ucf", tmp / "warm.h5", 1, args.resolution)  # page cache and imports
        # Alternate the two settings and keep each one's best run: other load on the machine then
        # hits both alike instead of whichever happened to run during it.
        ones, manys = [], []
        for _ in range(args.repeats):
            one, n = time_prepare(tmp / "ucf", tmp / "one.h5", 1, args.resolution)
            ones.append(one)
            manys.append(time_prepare(tmp / "ucf", tmp / "many.h5", args.workers, args.resolution)[0])
        one, many = min(ones), min(manys)
        print(f"prepare  1 worker : {n / one:7.2f} videos/s ({one:.2f} s, best of {args.repeats})")
        print(f"prepare {args.workers} workers: {n / many:7.2f} videos/s ({many:.2f} s, best of {args.repeats})")
        print(f"speed-up with {args.workers} workers: {one / many:.2f}x")
        for workers in (0, 2):
            rate = time_loader(tmp / "one.h5", 32, 64, workers, batches=40)
            print(f"ClipDataset 32x64x64 from {args.resolution}^2, batch 8, {workers} loader workers: "
                  f"{rate:7.1f} clips/s")


if __name__ == "__main__":
    main()
