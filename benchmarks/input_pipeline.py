"""Host memory and speed of one rank's training input pipeline at the paper's size.

    python benchmarks/input_pipeline.py [--batch 96] [--workers 4] [--prefetch 2] [--batches 12]
                                        [--hold 0.5] [--rate-rows 48] [--path new|old] [--skip memory|rate]

Writes a synthetic data file of the paper's size in a temp folder (64x256x256 clips: --videos videos of
--frames frames at 256x256, textured frames panning sideways), then

memory: the rank's DataLoader exactly as training builds it (StepBatches, batch_size=None, --workers
    workers, prefetch --prefetch, 16x64x64 patches, 3 levels) is iterated for --batches steps, each batch
    held --hold seconds (a training step; a slow consumer lets every prefetch slot fill: the worst case).
    A thread samples /proc every 20 ms: the resident memory (VmRSS) and the proportional set size (Pss,
    smaps_rollup: shared pages split between the processes that map them, so a batch in shared memory
    seen by a worker and the main process counts once) of the main process and its workers, summed.
    Reported: the peak of each sum, the main process's own before the loader started (torch, the
    dataset object) and the loader's share (peak Pss - that). The dataset's page cache is not in either.
rate: rows/s of one worker (one thread, in this process, StepBatches[step] for --rate-rows rows), and
    the workers a rank feeding one H200 (HPDM-S: 33.6 rows/s, docs/scaling.md, "On a GPU") needs to keep ahead.

--path old measures the clip->patch path before issue 23 (every row's clip converted to float32 and the
whole batch stacked and box-filtered at once: 100 MB a row while a batch is built); it is here for that
comparison only. At batch 96 and 4 workers it needs about 40 GB: measure it at a smaller --batch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpdm_core.data.batches import StepBatches  # noqa: E402
from hpdm_core.data.dataset import ClipDataset  # noqa: E402
from hpdm_core.data.h5store import VideoStoreWriter  # noqa: E402
from hpdm_core.pyramid import PatchGeometry, extract_hierarchy, sample_nested_offsets  # noqa: E402
from hpdm_core.seeding import DATA_STREAM, generator  # noqa: E402

GEOMETRY = PatchGeometry((16, 64, 64), 3)  # HPDM's paper size: a 64x256x256 target
H200_ROWS_PER_S = 33.6  # HPDM-S training on one H200, batch 8 (docs/scaling.md, "On a GPU")


class OldStepBatches(StepBatches):
    """StepBatches.__getitem__ before issue 23, for the comparison only: float32 clips, stacked, pooled whole."""

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        clips, labels, offsets = [], [], []
        for row in self.rows:
            g = generator(self.seed, step, row, DATA_STREAM)
            clip, label = self.clips.clip(int(torch.randint(len(self.clips), (1,), generator=g)), g)
            clips.append(clip)
            labels.append(label)
            offsets.append(sample_nested_offsets(1, self.geometry, generator=g))
        clips, offsets = torch.stack(clips).float(), torch.cat(offsets)
        labels = torch.where(torch.tensor(labels) < 0, self.null_class, torch.tensor(labels))
        return {"patches": extract_hierarchy(clips, offsets, self.geometry), "offsets": offsets, "labels": labels}


def make_file(path: Path, videos: int, frames: int, size: int) -> Path:
    """Uncompressed (hpdm prepare's default) videos of textured frames panning sideways."""
    rng = np.random.default_rng(0)
    writer = VideoStoreWriter(path, size, size)
    for v in range(videos):
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        video = np.stack([np.roll(base, 3 * t, axis=1) for t in range(frames)])
        writer.append(video, label=v % 4, name=f"v{v}")
    return writer.finish(["a", "b", "c", "d"], fps=25)


def steps_of(path: Path, batch: int, old: bool, num_steps: int) -> StepBatches:
    clips = ClipDataset(path, frames=GEOMETRY.target[0], resolution=GEOMETRY.target[1:], flip=True)
    return (OldStepBatches if old else StepBatches)(clips, GEOMETRY, range(batch), seed=0, num_steps=num_steps,
                                                   null_class=4)


# ----------------------------------------------------------------------------- memory

def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:  # gone meanwhile
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def memory_of(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) bytes of one process; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:
        pass
    return rss * 1024, pss * 1024


class MemorySampler(threading.Thread):
    """Peak summed VmRSS and Pss of this process and its children, sampled every `every` seconds."""

    def __init__(self, every: float = 0.02):
        super().__init__(daemon=True)
        self.every, self.stop, self.peak_rss, self.peak_pss, self.peak_procs = every, threading.Event(), 0, 0, 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            pids = [me] + children(me)
            sums = [sum(v) for v in zip(*(memory_of(p) for p in pids))]
            self.peak_rss, self.peak_pss = max(self.peak_rss, sums[0]), max(self.peak_pss, sums[1])
            self.peak_procs = max(self.peak_procs, len(pids))
            self.stop.wait(self.every)


def measure_memory(path: Path, batch: int, workers: int, prefetch: int, batches: int, hold: float, old: bool) -> dict:
    steps = steps_of(path, batch, old, batches)
    base_rss, base_pss = memory_of(os.getpid())
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    loader = DataLoader(steps, batch_size=None, sampler=range(batches), num_workers=workers,
                        prefetch_factor=prefetch if workers else None, persistent_workers=False)
    shape = None
    for item in loader:  # held like a training step holds its batch, until the next one arrives
        shape = tuple(item["patches"].shape)
        time.sleep(hold)
    elapsed = time.perf_counter() - start
    del item, loader
    sampler.stop.set()
    sampler.join()
    return {"base_rss": base_rss, "base_pss": base_pss, "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
            "processes": sampler.peak_procs, "shape": shape, "seconds": elapsed}


# ----------------------------------------------------------------------------- speed

def rows_per_s(path: Path, rows: int, old: bool, batch: int = 8) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second) of one worker: StepBatches[step] in this process on one
    thread (a DataLoader worker's). The CPU rate is the work itself: a busy machine slows the wall rate."""
    torch.set_num_threads(1)
    steps = steps_of(path, batch, old, math.ceil(rows / batch) + 1)
    steps[0]  # open the file, warm the allocator
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(1, math.ceil(rows / batch) + 1):
        steps[step]
    done = math.ceil(rows / batch) * batch
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=96, help="rows of one rank's batch (paper: 768 over 8 GPUs)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12, help="batches loaded while memory is sampled")
    parser.add_argument("--hold", type=float, default=0.5, help="seconds each batch is held (a training step)")
    parser.add_argument("--rate-rows", type=int, default=48, help="rows timed for rows/s per worker")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=96, help="frames per video (clips start at random)")
    parser.add_argument("--path", choices=["new", "old"], default="new", help="old: before issue 23 (comparison)")
    parser.add_argument("--skip", choices=["memory", "rate"], action="append", default=[])
    args = parser.parse_args()
    old = args.path == "old"
    mib = 2 ** 20
    with tempfile.TemporaryDirectory() as root:
        path = make_file(Path(root) / "paper.h5", args.videos, args.frames, GEOMETRY.target[1])
        print(f"data: {args.videos} videos x {args.frames} frames at 256x256 ({path.stat().st_size / mib:.0f} MiB, "
              f"uncompressed); clips 64x256x256, patches 16x64x64, 3 levels; clip->patch path: {args.path}")
        if "memory" not in args.skip:
            m = measure_memory(path, args.batch, args.workers, args.prefetch, args.batches, args.hold, old)
            batch_bytes = args.batch * GEOMETRY.num_levels * 3 * math.prod(GEOMETRY.patch) * 4
            print(f"memory: batch {args.batch}, {args.workers} workers, prefetch {args.prefetch}, {args.batches} "
                  f"batches of {list(m['shape'])} ({batch_bytes / mib:.0f} MiB each) in {m['seconds']:.0f} s, "
                  f"{m['processes']} processes")
            print(f"  peak summed Pss {m['peak_pss'] / mib:,.0f} MiB (VmRSS {m['peak_rss'] / mib:,.0f} MiB, shared "
                  f"pages counted once per process); main process before the loader: Pss "
                  f"{m['base_pss'] / mib:,.0f} MiB (VmRSS {m['base_rss'] / mib:,.0f} MiB); the loader's share "
                  f"{(m['peak_pss'] - m['base_pss']) / mib:,.0f} MiB; "
                  f"({args.workers} x {args.prefetch} + 1) batches in flight = "
                  f"{(args.workers * args.prefetch + 1) * batch_bytes / mib:,.0f} MiB")
        if "rate" not in args.skip:
            wall, cpu = rows_per_s(path, args.rate_rows, old)
            print(f"rate: {wall:.1f} rows/s per worker ({cpu:.1f} rows per CPU second; one thread, {args.rate_rows} "
                  f"rows); one H200 trains HPDM-S at {H200_ROWS_PER_S} rows/s -> {math.ceil(H200_ROWS_PER_S / wall)} "
                  f"workers per rank, {math.ceil(8 * H200_ROWS_PER_S / wall)} on an 8-GPU node "
                  f"({8 * H200_ROWS_PER_S:.0f} rows/s)")


if __name__ == "__main__":
    main()
