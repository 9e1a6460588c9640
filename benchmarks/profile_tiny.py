"""Where the time of a `tiny` training step and of a sampling run goes, as fractions (one thread).

    OMP_NUM_THREADS=1 python benchmarks/profile_tiny.py --data demo/data.h5 --classes 8

Training: `--steps` optimizer steps after `--warmup` untimed ones, split into data (patch chains cut
from the clips), forward (the loss), backward, gradient clipping, optimizer and EMA, and the torch
operators that take the most time. Sampling: `--samples` videos with the preset's sampler (the
quickstart's settings), split by level and into the network and the rest.
A freshly initialised model costs what a trained one does, so no run is needed. Fractions, not
seconds: run it on a quiet machine to time anything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpdm_core import canvas, sampling  # noqa: E402
from hpdm_core.config import apply_overrides, preset  # noqa: E402
from hpdm_core.training import Trainer  # noqa: E402


class Clock:
    """Seconds spent per named phase; wraps a callable so that each call is timed to its phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
        return timed

    def report(self, total: float, title: str) -> None:
        """Shares of `total`, by name; names with " > " are parts of the phase before it (not in "rest")."""
        print(f"{title}: share of the time")
        for name, seconds in sorted(self.seconds.items()):
            print(f"  {name:<36} {seconds / total:6.1%}")
        outer = sum(v for k, v in self.seconds.items() if " > " not in k)
        print(f"  {'rest':<36} {(total - outer) / total:6.1%}")


def top_operators(prof, count: int) -> None:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"  top operators by own time (of {len(events)}):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:count]:
        print(f"    {e.key:<44} {e.self_cpu_time_total / total:6.1%}  ({e.count} calls)")


def profile_training(cfg, run_dir: Path, warmup: int, steps: int, ops: int) -> None:
    trainer = Trainer(cfg.validate(), run_dir, device="cpu", tensorboard=False)
    clock = Clock()
    trainer.compute_loss = clock.wrap("forward (loss)", trainer.compute_loss)
    trainer.optimizer.step = clock.wrap("optimizer (LAMB)", trainer.optimizer.step)
    trainer.ema.update = clock.wrap("EMA", trainer.ema.update)
    backward = torch.Tensor.backward
    torch.Tensor.backward = clock.wrap("backward", backward)
    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = clock.wrap("gradient clipping", clip)
    batches = iter(trainer.batches(0, warmup + steps))
    try:
        for _ in range(warmup):
            trainer.train_step(next(batches))
        clock.seconds.clear()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(steps):
                batch = clock.wrap("data (patch chains)", next)(batches)
                trainer.train_step(batch)
            total = time.perf_counter() - started
    finally:
        torch.Tensor.backward, torch.nn.utils.clip_grad_norm_ = backward, clip
    clock.report(total, f"training: {steps} steps of batch {cfg.train.batch_size}")
    top_operators(prof, ops)


def profile_sampling(cfg, run_dir: Path, samples: int, batch_size: int) -> None:
    trainer = Trainer(cfg.validate(), run_dir, device="cpu", tensorboard=False)
    model = trainer.ema.model
    clock = Clock()
    # Per level: its denoiser calls (LevelDenoiser.__call__: every tile of the canvas at one sigma), and
    # within them the network (_denoise_batch: crops, the network, guidance; the context cache included).
    call, batch = canvas.LevelDenoiser.__call__, canvas.LevelDenoiser._denoise_batch

    def level_call(self, *args, **kwargs):
        return clock.wrap(f"level {self.level}", call)(self, *args, **kwargs)

    def denoise_batch(self, *args, **kwargs):
        return clock.wrap(f"level {self.level} > network", batch)(self, *args, **kwargs)

    canvas.LevelDenoiser.__call__, canvas.LevelDenoiser._denoise_batch = level_call, denoise_batch
    try:
        labels = torch.arange(samples) % cfg.model.num_classes
        started = time.perf_counter()
        sampling.generate(model, labels, seed=0, options=cfg.sample, batch_size=batch_size)
        total = time.perf_counter() - started
    finally:
        canvas.LevelDenoiser.__call__, canvas.LevelDenoiser._denoise_batch = call, batch
    geometry = model.geometry
    evaluations = canvas.count_tile_evaluations(geometry, cfg.sample, samples)
    clock.report(total, f"sampling: {samples} videos, batch {batch_size}, {cfg.sample.steps} steps, "
                        f"{evaluations} chain evaluations")
    # No operator table here: the network's forward operators are those of training's forward, and a
    # torch.profiler trace of a whole sampling run (millions of events) takes longer to sum than to record.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a dataset file (hpdm prepare synthetic ...)")
    parser.add_argument("--classes", type=int, help="model.num_classes (default: the preset's)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4, help="videos sampled together (hpdm sample's default)")
    parser.add_argument("--ops", type=int, default=12, help="operators listed")
    parser.add_argument("--skip", choices=("training", "sampling"), help="profile only the other part")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = ([f"model.num_classes={args.classes}"] if args.classes else []) + args.overrides
    cfg = apply_overrides(preset("tiny"), overrides)
    cfg.data.path = str(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip != "training":
            profile_training(cfg, Path(tmp) / "train", args.warmup, args.steps, args.ops)
        if args.skip != "sampling":
            profile_sampling(cfg, Path(tmp) / "sample", args.samples, args.batch_size)


if __name__ == "__main__":
    main()
