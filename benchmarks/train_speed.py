"""Training cost of HPDM's design choices, measured side by side in one run.

    python benchmarks/train_speed.py [--steps 8] [--batch 8] [--device auto] [--threads N] [--size mid|paper|tiny]
                                     [--compile]

--size mid (default) is the tiny preset's width on 8x16x16 patches (a 32x64x64 target), sized for a CPU.
--size tiny is the tiny preset itself, for the cost of its own choices (e).
--size paper is HPDM-S of the paper's Table 7 (16x64x64 patches, 64x256x256 target, 1024-wide
interface), sized for a GPU. The paper's Table 2 gives training speeds on one A100 of 4.4 videos/s
(default), 2.73 (no adaptive computation) and 4.91 (shallow fusion), without naming the model size
or batch. (b) is left out there: one full-resolution 64x256x256 clip is 262,144 tokens of width 1024.

(a) adaptive computation (levels_per_block [1,1,2,2,3,3]) vs none ([3]*6): videos/s
    (paper: 4.4 vs 2.73 videos/s, 1.61x);
(b) 3-level patch training vs the same RIN trained on full-resolution target clips (one level whose
    patch is the whole target video): step time and peak memory (target >= 8x each);
(c) deep vs shallow context fusion: step time (paper: shallow about 10 % faster);
(d) with --compile: the default variant with train.compile (torch.compile of the denoiser; CUDA graphs
    on a GPU) beside the eager one; compiling happens in the warm-up step, outside the timing.
(e) with --size tiny, instead of (a)-(d): tiny as it is, without time in its token mixing, and with it on
    every level instead of levels >= 1: step time.

FLOPs: one training step's forward and backward of every variant, counted by FlopCounterMode
(hpdm_core/flops.py: matmuls, convolutions, attention; not grid_sample, elementwise work, the optimizer),
and the FLOP ratio of adaptive computation against none, to read the measured speed-up against the
work it saves. Model FLOP utilisation = counted FLOPs / median step time / the machine's peak, measured
in the same run as the best of ten large matmuls (float32 on a CPU, bf16 on a GPU).

Every variant has the same width. Times come from one process that builds every variant's trainer
and steps them in turn (round robin, the starting variant rotating each round): a slow patch of the
machine (another process, a frequency change) then hits every variant alike instead of one, and the
ratios hold still from run to run. The median step of each variant is reported. Peak memory comes
from a subprocess per variant, so it is its own: on CUDA torch.cuda.max_memory_allocated; on CPU the
growth of the process's peak resident set (getrusage ru_maxrss) over its resident set just before the
first step, i.e. everything the training steps allocate (activations, gradients, optimizer state).
A step is one full optimisation step (Trainer.train_step: loss, backward, clipping, LAMB, EMA) on a
prepared batch; data loading is left out because both sides of (b) read the same target clips.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

# Mid-size: the tiny preset's width on 8x16x16 patches, 3 levels -> a 32x64x64 target.
MID = ["model.patch=8x16x16", "model.token=1x4x4", "model.interface_dim=96", "model.latent_dim=128",
        "model.num_latents=32", "model.num_blocks=6", "model.latent_layers=2", "model.head_dim=32",
        "model.fourier_features=8", "model.num_classes=8", "train.warmup_steps=1", "train.bf16=true",
        "model.token_mixing=false"]  # the paper's network: token mixing is a choice of the tiny preset only
SIZES = {"mid": ("tiny", MID), "paper": ("hpdm-s", ["train.warmup_steps=1", "train.bf16=true"]),
         "tiny": ("tiny", ["train.warmup_steps=1"])}  # the preset as the quickstart trains it (float32)

VARIANTS = {
    "adaptive": ["model.levels_per_block=1,1,2,2,3,3"],
    "no-adaptive": ["model.levels_per_block=3,3,3,3,3,3"],
    "shallow": ["model.levels_per_block=1,1,2,2,3,3", "model.fusion=shallow"],
    "full-res": ["model.num_levels=1", "model.patch=32x64x64", "model.levels_per_block=1,1,1,1,1,1"],
    "compiled": ["model.levels_per_block=1,1,2,2,3,3", "train.compile=true"],
}

# --size tiny: the cost of tiny's own choices, beside the preset as it is.
TINY_VARIANTS = {
    "tiny": [],
    "no-time-mix": ["model.token_mixing_frames=1", "model.token_mixing_time_from_level=0"],
    "time-mix-all": ["model.token_mixing_time_from_level=0"],
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def variants(size: str, compiled: bool = False) -> list[str]:
    """The variants timed at `size`: full-resolution training only at mid size (see the docstring), the
    compiled one only when asked."""
    if size == "tiny":
        return list(TINY_VARIANTS)
    return [name for name in VARIANTS if (size == "mid" or name != "full-res") and (compiled or name != "compiled")]


def overrides_of(name: str, size: str) -> list[str]:
    return (TINY_VARIANTS if size == "tiny" else VARIANTS)[name]


def make_trainer(name: str, steps: int, batch: int, device: str, run_dir: str, size: str = "mid"):
    """Variant `name`'s Trainer at `size` and one prepared batch of random target clips."""
    from hpdm_core.config import apply_overrides, preset
    from hpdm_core.pyramid import PatchGeometry, extract_hierarchy, sample_nested_offsets
    from hpdm_core.training import Trainer

    preset_name, base = SIZES[size]
    cfg = apply_overrides(preset(preset_name), base + overrides_of(name, size) + [f"train.batch_size={batch}",
                                                                        f"train.steps={steps + 2}"]).validate()
    trainer = Trainer(cfg, run_dir, device=device, tensorboard=False)
    geometry = PatchGeometry.from_config(cfg.model)
    g = torch.Generator().manual_seed(0)
    clips = torch.rand(batch, 3, *geometry.target, generator=g) * 2 - 1
    offsets = sample_nested_offsets(batch, geometry, generator=g)
    data = {"patches": extract_hierarchy(clips, offsets, geometry), "offsets": offsets,
            "labels": torch.randint(cfg.model.num_classes, (batch,), generator=g)}
    return trainer, data


def step_flops(trainer, data) -> int:
    """FLOPs of one training step's forward and backward (the eager network; compiling changes no FLOP)."""
    from hpdm_core.diffusion import hierarchy_loss
    from hpdm_core.flops import count_flops

    batch = {k: v.to(trainer.device) for k, v in data.items()}

    def work():
        with trainer.autocast():
            loss, _ = hierarchy_loss(trainer.model, batch["patches"], batch["offsets"], batch["labels"])
        loss.backward()

    total, _ = count_flops(work)
    trainer.optimizer.zero_grad(set_to_none=True)
    return total


def timed_step(trainer, data) -> tuple[float, float]:
    """(wall, process CPU) seconds of one training step."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train_step(data)
    sync()
    return time.perf_counter() - start, time.process_time() - cpu_start


def time_variants(names: list[str], steps: int, batch: int, device: str, size: str) -> dict[str, dict]:
    """Median wall and CPU step time of each variant, all stepped round robin in this process; then its
    FLOPs per step and the utilisation they give against the machine's matmul peak."""
    from hpdm_core.flops import peak_flops

    with tempfile.TemporaryDirectory() as root:
        built = {name: make_trainer(name, steps, batch, device, os.path.join(root, name), size) for name in names}
        for trainer, data in built.values():  # warm-up: kernels, optimizer state, allocator pools
            trainer.train_step(data)
        times = {name: [] for name in names}
        for i in range(steps):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                times[name].append(timed_step(*built[name]))
        peak, peak_what = peak_flops(next(iter(built.values()))[0].device)
        out = {}
        for name, (trainer, data) in built.items():
            wall, cpu = (statistics.median(t[k] for t in times[name]) for k in (0, 1))
            flops = step_flops(trainer, data)
            out[name] = {"device": str(trainer.device), "parameters": trainer.num_parameters,
                         "threads": torch.get_num_threads(), "step_s": wall, "cpu_s": cpu, "videos_per_s": batch / wall,
                         "flops": flops, "flop_s": flops / wall, "mfu": flops / wall / peak, "peak_flop_s": peak,
                         "peak": peak_what}
    return out


def peak_memory(name: str, steps: int, batch: int, device: str, size: str) -> dict:
    """Peak memory of `steps` training steps of one variant (run alone in its own process)."""
    with tempfile.TemporaryDirectory() as run_dir:
        trainer, data = make_trainer(name, steps, batch, device, run_dir, size)
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base_rss = rss_bytes()
        for _ in range(steps + 1):
            trainer.train_step(data)
        peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes() - base_rss
    return {"peak_bytes": int(peak),
            "memory": "cuda max_memory_allocated" if cuda else "peak RSS growth during steps (ru_maxrss)"}


def meta_flops(name: str, batch: int, size: str) -> tuple[int, int]:
    """(FLOPs of one training step's forward and backward, parameters) of a variant, counted on the meta
    device: shapes only, no arithmetic and no memory, so HPDM-S is counted in seconds on any machine.
    Attention runs its math path there (4 matmuls in the backward, not the fused kernels' 5 with the
    recomputed scores): a count about 2 % below the one of a real step at the mid size."""
    from hpdm_core.config import apply_overrides, preset
    from hpdm_core.diffusion import build_denoiser, hierarchy_loss
    from hpdm_core.flops import count_flops
    from hpdm_core.model import count_parameters
    from hpdm_core.pyramid import PatchGeometry, sample_nested_offsets

    preset_name, base = SIZES[size]
    cfg = apply_overrides(preset(preset_name), base + overrides_of(name, size) + [f"train.batch_size={batch}"]).validate()
    with torch.device("meta"):
        denoiser = build_denoiser(cfg)
    geometry = PatchGeometry.from_config(cfg.model)
    offsets = sample_nested_offsets(batch, geometry).to("meta")
    patches = torch.empty(batch, geometry.num_levels, 3, *geometry.patch, device="meta")
    labels = torch.zeros(batch, dtype=torch.long, device="meta")

    def work():
        loss, _ = hierarchy_loss(denoiser, patches, offsets, labels)
        loss.backward()

    return count_flops(work)[0], count_parameters(denoiser)


def print_flops(names: list[str], batch: int, size: str) -> None:
    """FLOPs of one training step of each variant (meta_flops: exact shape arithmetic, time nothing)."""
    counts = {}
    for name in names:
        counts[name], params = meta_flops(name, batch, size)
        print(f"  {name:12s} {params:>12,} params  {counts[name] / 1e9:12.2f} GFLOP/step "
              f"({counts[name] / batch / 1e9:.2f} per video)")
    if size == "tiny":
        return
    print(f"size {size}, batch {batch}, forward + backward (meta device): adaptive computation does "
          f"{counts['adaptive'] / counts['no-adaptive']:.3f} of the work of none "
          f"({counts['no-adaptive'] / counts['adaptive']:.2f}x less); shallow fusion "
          f"{counts['shallow'] / counts['adaptive']:.3f} of deep")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (median reported)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--size", choices=list(SIZES), default="mid",
                        help="mid: a CPU's size; paper: HPDM-S, for a GPU; tiny: the preset's own choices")
    parser.add_argument("--flops-only", action="store_true",
                        help="count every variant's FLOPs per step on the meta device; time nothing")
    parser.add_argument("--compile", action="store_true", help="also time the default variant with train.compile")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one variant's peak memory, as JSON
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_memory(args.memory_of, 2, args.batch, args.device, args.size)))
        return

    if args.flops_only:
        print_flops(variants(args.size), args.batch, args.size)
        return

    # Memory first, while this process is small: Linux keeps a process's peak RSS across fork + exec,
    # so a child started by a process that holds four trainers would report their memory as its own.
    names = variants(args.size, args.compile)
    memory = {}
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--memory-of", name, "--batch", str(args.batch),
                              "--device", args.device, "--threads", str(args.threads), "--size", args.size],
                             check=True, capture_output=True, text=True)
        memory[name] = json.loads(out.stdout.strip().splitlines()[-1])
    results = time_variants(names, args.steps, args.batch, args.device, args.size)
    for name in names:
        results[name].update(memory[name])
        r = results[name]
        print(f"  {name:12s} {r['parameters']:>10,} params  {r['step_s']:8.3f} s/step  {r['cpu_s']:8.3f} cpu-s/step  "
              f"{r['videos_per_s']:7.2f} videos/s  peak {r['peak_bytes'] / 2**20:9.1f} MiB  "
              f"{r['flops'] / 1e9:9.2f} GFLOP/step  {r['flop_s'] / 1e12:7.3f} TFLOP/s  MFU {r['mfu'] * 100:5.1f} %",
              file=sys.stderr)

    if args.size == "tiny":
        t, plain, every = (results[k] for k in TINY_VARIANTS)
        print(f"size tiny, device {t['device']} ({t['threads']} threads), batch {args.batch}, median of {args.steps} "
              "steps per variant, stepped round robin (wall; process CPU time in brackets)")
        print(f"(e) tiny's time in the token mixing (levels >= 1): {t['step_s']:.3f} s/step vs {plain['step_s']:.3f} "
              f"without -> {(t['step_s'] / plain['step_s'] - 1) * 100:+.1f} % [{(t['cpu_s'] / plain['cpu_s'] - 1) * 100:+.1f} %]; "
              f"on every level {every['step_s']:.3f} s/step -> {(every['step_s'] / plain['step_s'] - 1) * 100:+.1f} %")
        return
    a, n, s = (results[k] for k in ("adaptive", "no-adaptive", "shallow"))
    print(f"size {args.size}, device {a['device']} ({a['threads']} threads), batch {args.batch}, median of {args.steps} steps per "
          f"variant, stepped round robin (wall; process CPU time in brackets); memory = {a['memory']}")
    print(f"(a) adaptive computation: {a['videos_per_s']:.2f} vs {n['videos_per_s']:.2f} videos/s without "
          f"-> {a['videos_per_s'] / n['videos_per_s']:.2f}x [{n['cpu_s'] / a['cpu_s']:.2f}x] "
          "(paper 1.61x, target >= 1.45x)")
    print(f"    FLOPs per step (forward + backward): {a['flops'] / 1e9:.2f} vs {n['flops'] / 1e9:.2f} GFLOP -> adaptive "
          f"computation does {a['flops'] / n['flops']:.3f} of the work ({n['flops'] / a['flops']:.2f}x less)")
    print(f"    model FLOP utilisation (peak {a['peak_flop_s'] / 1e12:.3f} TFLOP/s: {a['peak']}): "
          + ", ".join(f"{k} {results[k]['mfu'] * 100:.1f} %" for k in names))
    if "full-res" in results:
        f = results["full-res"]
        print(f"(b) 3-level patches vs full-resolution ({'x'.join(['32', '64', '64'])}) clips: step "
              f"{a['step_s']:.3f} s vs {f['step_s']:.3f} s -> {f['step_s'] / a['step_s']:.1f}x faster "
              f"[{f['cpu_s'] / a['cpu_s']:.1f}x]; peak memory "
              f"{a['peak_bytes'] / 2**20:.0f} MiB vs {f['peak_bytes'] / 2**20:.0f} MiB -> "
              f"{f['peak_bytes'] / max(a['peak_bytes'], 1):.1f}x less (target >= 8x each)")
    print(f"(c) fusion: deep {a['step_s']:.3f} s/step vs shallow {s['step_s']:.3f} s/step -> shallow is "
          f"{(a['step_s'] / s['step_s'] - 1) * 100:+.1f} % faster [{(a['cpu_s'] / s['cpu_s'] - 1) * 100:+.1f} %] "
          "(paper: about 10 %)")
    if "compiled" in results:
        c = results["compiled"]
        print(f"(d) compiled (train.compile): {c['step_s']:.3f} s/step vs {a['step_s']:.3f} eager -> "
              f"{a['step_s'] / c['step_s']:.2f}x [{a['cpu_s'] / c['cpu_s']:.2f}x]")
    if args.size == "paper":
        print(f"    paper's Table 2 (one A100): 4.40 / 2.73 / 4.91 videos/s default / no adaptive / shallow; "
              f"here {a['videos_per_s']:.2f} / {n['videos_per_s']:.2f} / {s['videos_per_s']:.2f}")


if __name__ == "__main__":
    main()
