"""Sampling speed of a small randomly initialised HPDM, measured side by side in one run.

1. activation caching on vs off (paper: about 40 % faster; the gain grows with the cost of the lower
   levels, i.e. with adaptive computation, where the lower levels run through more blocks);
2. adaptive computation on (levels_per_block ramp) vs off ([L+1] * B) at inference;
3. every overlap mode's time against `none`, beside its theoretical ratio of tile evaluations;
4. with --paper-steps (instead of 1-3): the paper's 128 level-0 steps with h/w overlap (the metrics
   setting) and full overlap (the visual setting): network evaluations per video (exact counts),
   time per video, and what an FVD@2048 evaluation (2048 videos) takes on one GPU and on 8
   (extrapolated from the measured time per video: the videos are independent);
5. with --compile: sample.compile (torch.compile of the denoiser; CUDA graphs on a GPU) against eager
   at the settings of 1 (compiling happens in a warm-up run, outside the timing), and the largest
   pixel difference between the two (float32 rounding; tests/test_compile.py holds it under 1e-4).

    python benchmarks/sample_speed.py [--device cpu|cuda] [--steps 8] [--num 1] [--repeats 2] [--size cpu|tiny|paper]
                                      [--paper-steps [--fvd-steps 128]] [--compile]

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
from hpdm_core.canvas import count_tile_evaluations
from hpdm_core.sampling import generate

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


def paper_steps(denoiser, steps: int, num: int, device: torch.device, tile_batch: int) -> None:
    """Section 4: evaluations and time per video at the paper's step count, and FVD@2048's cost."""
    geometry = denoiser.geometry
    print(f"\n4. N0 = {steps} steps (level l: N0 // 2**l), {num} video(s) timed per setting")
    for overlap, what in (("hw", "metrics"), ("fhw", "visual")):
        options = SampleConfig(steps=steps, overlap=overlap, tile_batch=tile_batch)
        evaluations = count_tile_evaluations(geometry, options, 1)
        per_video = timed(denoiser, options, num, device, 1) / num
        print(f"  overlap {overlap:3s} ({what} setting): {evaluations:,} network evaluations per video, "
              f"{per_video:.1f} s per video; FVD@2048: {2048 * per_video / 3600:.2f} h on one {device.type.upper()}, "
              f"{2048 * per_video / 8 / 3600:.2f} h on 8")


def compiled_vs_eager(denoiser, options: SampleConfig, num: int, device: torch.device, repeats: int) -> None:
    """Section 5: sample.compile against eager, same videos up to float32 rounding."""
    labels = torch.arange(num) % denoiser.num_classes
    runs = {flag: generate(denoiser, labels, seed=0, options=options.replace(compile=flag), batch_size=num,
                           device=device).videos for flag in (False, True)}  # also the compiling warm-up
    eager, compiled = (timed(denoiser, options.replace(compile=flag), num, device, repeats) for flag in (False, True))
    print(f"\n5. sample.compile (overlap {options.overlap}): {compiled:.2f} s vs {eager:.2f} s eager -> "
          f"{eager / compiled:.2f}x; largest pixel difference {(runs[True] - runs[False]).abs().max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=32, help="level-0 steps N0 (level l: N0 // 2**l)")
    parser.add_argument("--num", type=int, default=1, help="videos per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tile-batch", type=int, default=0)
    parser.add_argument("--size", choices=["cpu", "tiny", "paper"], help="default: cpu on a CPU, tiny on a GPU")
    parser.add_argument("--paper-steps", action="store_true", help="section 4 only: the paper's step counts, FVD@2048")
    parser.add_argument("--fvd-steps", type=int, default=128, help="level-0 steps of section 4 (the paper's 128)")
    parser.add_argument("--compile", action="store_true", help="section 5 only: sample.compile against eager")
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
    if args.paper_steps or args.compile:
        if args.paper_steps:
            paper_steps(models[True], args.fvd_steps, args.num, device, args.tile_batch)
        if args.compile:
            compiled_vs_eager(models[True], base, args.num, device, args.repeats)
        return

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
