"""FLOPs of a piece of work and the machine's own matmul peak: model FLOP utilisation (benchmarks).

torch.utils.flop_counter.FlopCounterMode counts matrix products (mm, addmm, bmm, baddbmm), convolutions
and the fused attention kernels it knows, forward and backward, at 2 FLOPs per multiply-add. It has no
formula for the CPU's fused attention (aten._scaled_dot_product_flash_attention_for_cpu and its
backward), which F.scaled_dot_product_attention calls on a CPU, so it would count no attention there;
CPU_ATTENTION adds the formula it uses for the CUDA kernels. Left out everywhere: grid_sample (deep
and shallow fusion), normalisations, activations, softmax outside fused attention, additions, the
optimizer and the EMA: elementwise work, a few FLOPs per value against hundreds per value in the
matmuls. In HPDM the largest of them is deep fusion's grid_sample: 8 multiply-adds per sampled value
and lower level, against the fusion projection's 2D + 3 per value (width D): under 1 % at D = 1024.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _cpu_attention(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode's custom_mapping takes formulas of shapes (it passes each tensor argument's shape).
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def count_flops(work: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """(total FLOPs, FLOPs per operator) of running `work()` once, eagerly."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        work()
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def peak_flops(device: torch.device | str, size: int | None = None, repeats: int = 10) -> tuple[float, str]:
    """(FLOP/s, what was measured): the best of `repeats` square matmuls, bf16 on a GPU (what training
    runs under autocast), float32 on a CPU (at torch's current thread count)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    size = size or (8192 if cuda else 2048)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    a @ b  # warm-up: kernel choice, allocator
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best, f"{size}x{size} {str(dtype).removeprefix('torch.')} matmul on {device}"
