"""Data-parallel scaling on this machine: training steps of the same global batch in 1 process vs W
gloo processes (DDP, and FSDP with --fsdp), measured side by side in one run.

    python benchmarks/distributed_speed.py [--world 2] [--steps 6] [--batch 8] [--fsdp]

Every process (the single one included) gets cores/W threads, so the ideal speed-up is W; what is
missing is the all-reduce (DDP) or all-gather/reduce-scatter (FSDP) cost. On GPUs use torchrun.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpdm_core import distributed as dist_lib  # noqa: E402
from hpdm_core.config import preset  # noqa: E402
from hpdm_core.diffusion import build_denoiser  # noqa: E402
from hpdm_core.optim import Lamb, decay_groups  # noqa: E402
from hpdm_core.pyramid import PatchGeometry, sample_nested_offsets  # noqa: E402


def batch(cfg, size: int, step: int):
    g = torch.Generator().manual_seed(step)
    m = cfg.model
    x = torch.randn(size, m.num_levels, m.channels, *m.patch, generator=g)
    sigma = torch.exp(torch.randn(size, m.num_levels, generator=g))
    offsets = sample_nested_offsets(size, PatchGeometry.from_config(m), generator=g)
    labels = torch.randint(0, m.num_classes, (size,), generator=g)
    return x, sigma, offsets, labels


def run(model, optimizer, cfg, rows: slice, steps: int, global_batch: int) -> float:
    def one(step):
        x, sigma, offsets, labels = (t[rows] for t in batch(cfg, global_batch, step))
        optimizer.zero_grad(set_to_none=True)
        (model(x, sigma, offsets, labels) - x).square().mean().backward()
        optimizer.step()

    one(0)  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        one(step)
    return (time.perf_counter() - start) / steps


def _worker(rank, world, port, threads, steps, global_batch, fsdp, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    env, device = dist_lib.init("cpu")
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    if fsdp:
        dist_lib.fully_shard_blocks(model.model, model.model.blocks)
        wrapped = model
    else:
        wrapped = dist_lib.wrap_ddp(model, device)
    optimizer = Lamb(decay_groups(model, 0.01), lr=1e-3, weight_decay=0.01)
    local = global_batch // world
    seconds = run(wrapped, optimizer, cfg, slice(rank * local, (rank + 1) * local), steps, global_batch)
    if env.is_main:
        Path(out).write_text(str(seconds))
    dist_lib.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fsdp", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.world)

    torch.set_num_threads(threads)  # the same cores per process as each worker gets
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    optimizer = Lamb(decay_groups(model, 0.01), lr=1e-3, weight_decay=0.01)
    single = run(model, optimizer, cfg, slice(None), args.steps, args.batch)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/seconds"
        mp.spawn(_worker, args=(args.world, port, threads, args.steps, args.batch, args.fsdp, out),
                 nprocs=args.world, join=True)
        parallel = float(Path(out).read_text())
    mode = "FSDP" if args.fsdp else "DDP"
    print(f"tiny preset, global batch {args.batch}, {threads} thread(s) per process")
    print(f"1 process:            {single * 1000:8.1f} ms/step")
    print(f"{args.world} processes ({mode}):  {parallel * 1000:8.1f} ms/step")
    print(f"speed-up {single / parallel:.2f}x (ideal {args.world}x: the {args.world} processes use {args.world}x "
          f"the cores of the single one, {threads} of {cores} each)")


if __name__ == "__main__":
    main()
