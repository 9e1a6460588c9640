"""Sampling speed of a small randomly initialised HPDM, measured side by side in one run.

1. activation caching on vs off (paper: about 40 % faster; the gain grows with the cost of the lower
   levels, i.e. with adaptive computation, where the lower levels run through more blocks);
2. adaptive computation on (levels_per_block ramp) vs off ([L+1] * B) at inference;
3. every overlap mode's time against `none`, beside its theoretical ratio of tile evaluations.

    python benchmarks/sample_speed.py [--device cpu|cuda] [--steps 8] [--num 1] [--repeats 2] [--size cpu|tiny|paper]

Sizes: cpu (the CPU default) is a small 16x64x64 model; tiny (the CUDA default) the tiny preset;
paper is HPDM-S of the paper's Table 7 (64x256x256 videos from 16x64x64 patches), for a GPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from hpdm_core.config import preset
from hpdm_core.diffusion import build_denoiser
from hpdm_core.model import count_parameters
from hpdm_core.config import SampleConfig
from hpdm_core.sampling import count_tile_evaluations, generate

MODES = ["none", "f", "h", "w", "fh", "fw", "hw", "fhw"]


def small_config(adaptive: bool, size: str):
    cfg = preset("hpdm-s" if size == "paper" else "tiny")
    m = cfg.model
    if size == "cpu":  # 4x16x16 patches, 16x64x64 videos: seconds per run on two cores
        m.patch, m.token = [4, 16, 16], [1, 4, 4]
        m.interface_dim, m.latent_dim, m.num_latents, m.head_dim, m.latent_layers = 64, 64, 16, 32, 1
    m.num_levels, m.num_blocks = 3, 6
    m.levels_per_block = [1, 1, 2, 2, 3, 3] if adaptive else [3] * 6
    return cfg.validate()


def timed(denoiser, options: SampleConfig, num: int, device: torch.device, repeats: int) -> float:
    """Best time of `repeats` runs (the least disturbed by other processes).

    On CPU this is the process's CPU time with one thread: other processes on a shared machine
    change wall time many-fold but not the work done. On CUDA it is wall time.
    """
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        generate(denoiser, torch.arange(num) % denoiser.num_classes, seed=0, options=options, batch_size=num,
                 device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, clock() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=32, help="level-0 steps N0 (level l: N0 // 2**l)")
    parser.add_argument("--num", type=int, default=1, help="videos per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tile-batch", type=int, default=0)
    parser.add_argument("--size", choices=["cpu", "tiny", "paper"], help="default: cpu on a CPU, tiny on a GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time of one thread is a stable measure of work on a busy machine
    size = args.size or ("cpu" if device.type == "cpu" else "tiny")
    torch.manual_seed(0)
    models = {adaptive: build_denoiser(small_config(adaptive, size)).to(device).eval() for adaptive in (True, False)}
    models[False].load_state_dict(models[True].state_dict())  # same weights: only the block schedule differs
    geometry = models[True].geometry
    base = SampleConfig(steps=args.steps, overlap="hw", tile_batch=args.tile_batch)
    print(f"device {device}, {count_parameters(models[True]):,} parameters, {geometry.num_levels} levels of "
          f"{'x'.join(map(str, geometry.patch))} patches -> {'x'.join(map(str, geometry.target))}, "
          f"N0 = {args.steps}, {args.num} video(s) per run, best of {args.repeats} "
          f"({'CPU seconds, one thread' if device.type == 'cpu' else 'wall seconds'})")
    timed(models[True], SampleConfig(steps=1, overlap="none", tile_batch=args.tile_batch), 1, device, 1)  # warm-up

    print("\n1-2. caching x adaptive computation (overlap hw)")
    times = {}
    for adaptive in (True, False):
        for cache in (True, False):
            options = base.replace(cache=cache)
            times[adaptive, cache] = timed(models[adaptive], options, args.num, device, args.repeats)
            print(f"  adaptive {'on ' if adaptive else 'off'}  cache {'on ' if cache else 'off'}  "
                  f"{times[adaptive, cache]:7.2f} s")
    for adaptive in (True, False):
        print(f"  caching speed-up, adaptive {'on ' if adaptive else 'off'}: "
              f"{times[adaptive, False] / times[adaptive, True]:.2f}x (paper ~1.4x, target >= 1.4x)")
    print(f"  adaptive computation speed-up, cache on: {times[False, True] / times[True, True]:.2f}x; "
          f"cache off: {times[False, False] / times[True, False]:.2f}x")

    print("\n3. overlap modes (adaptive on, cache on): time / time(none) vs tile evaluations / those of none")
    evaluations = {mode: count_tile_evaluations(geometry, SampleConfig(steps=args.steps, overlap=mode), args.num)
                   for mode in MODES}
    mode_times = {mode: timed(models[True], base.replace(overlap=mode), args.num, device,
                              args.repeats) for mode in MODES}
    print(f"  {'mode':5} {'seconds':>8} {'time ratio':>11} {'tile ratio':>11} {'tiles/s':>9}")
    for mode in MODES:
        print(f"  {mode:5} {mode_times[mode]:8.2f} {mode_times[mode] / mode_times['none']:11.2f} "
              f"{evaluations[mode] / evaluations['none']:11.2f} {evaluations[mode] / mode_times[mode]:9.1f}")


if __name__ == "__main__":
    main()
