"""torch.compile of the denoiser (train.compile, sample.compile; off by default).

On one GPU the compiled forward (and backward) is also captured as CUDA graphs (mode "reduce-overhead"):
the small networks are launch-bound there (70-90 ms a step whatever the batch), and every shape that
reaches the network is fixed for a run (training: the batch; sampling: the tile batch, and the last,
smaller one of a level), so each shape is compiled and captured once. Under DDP or FSDP the graphs are
left out (their collectives run between the compiled pieces). Shapes are compiled static
(dynamic=False): a handful per run, each with its own graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def cuda_graphs(device: torch.device | str, world_size: int = 1) -> bool:
    """Whether a compiled denoiser on `device` is captured as CUDA graphs: one GPU, one process."""
    return torch.device(device).type == "cuda" and world_size == 1


# torch.compile's backend: inductor generates fused kernels (C++ on a CPU: gcc compiles them, minutes
# for a network the first time). The tests swap in "aot_eager" (the same graph capture of forward and
# backward, run by the eager kernels), which checks everything but the kernels in seconds.
BACKEND = "inductor"


def compile_module(module: nn.Module, device: torch.device | str, world_size: int = 1) -> nn.Module:
    """`module` compiled; attributes and state dict stay the module's (OptimizedModule delegates them)."""
    graphs = cuda_graphs(device, world_size) and BACKEND == "inductor"
    return torch.compile(module, backend=BACKEND, mode="reduce-overhead" if graphs else None, dynamic=False)


class CompiledDenoiser:
    """A sampling denoiser whose forward runs compiled; everything else (geometry, cfg, encode_context,
    parameters) is the denoiser's own. With CUDA graphs each call starts a new graph step and returns
    a copy of the output, which the graph's next replay would overwrite otherwise."""

    def __init__(self, denoiser: nn.Module, device: torch.device | str):
        self.denoiser, self.graphs = denoiser, cuda_graphs(device)
        self.compiled = compile_module(denoiser, device)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(*args, **kwargs).clone()
        return self.compiled(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.denoiser, name)
