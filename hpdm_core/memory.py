"""Will a batch fit? Lower bounds of the memory a training step, a sampling batch or an FVD batch needs.

Each estimate counts only tensors that must exist at once (float32, 4 bytes a value): the inputs, the
patch hierarchy and the activations every block keeps for its output. The real peak is higher, so a
refusal is never wrong; a batch that passes may still run out, but one that asks for a hundred times
the machine (`--batch-size 99999999`) stops in a second with the figure instead of swapping until killed.
"""

from __future__ import annotations

import math
import os

import torch

from hpdm_core.errors import BadInputError

FLOAT = 4  # bytes of a float32 value


def gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def available_bytes(device: torch.device | str) -> int:
    """Memory a new allocation can take: free GPU memory, or RAM the kernel reports as available."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(needed: int, device: torch.device | str, what: str, fix: str) -> None:
    """BadInputError (exit 2) when `needed` bytes exceed what `device` has available."""
    have = available_bytes(device)
    if needed > have:
        raise BadInputError(f"{what} needs at least {gib(needed)} of memory, but {torch.device(device)} has "
                            f"{gib(have)} available; {fix}")


def _tokens(patch, token) -> int:
    return math.prod(p // t for p, t in zip(patch, token))


def training_step_bytes(cfg, world_size: int = 1) -> int:
    """One process's share of a training step: its clips and hierarchies, and a micro-batch's activations."""
    m, t = cfg.model, cfg.train
    rows = max(1, t.batch_size // world_size)
    micro = max(1, rows // t.accumulation)
    clip = 3 * math.prod(m.target) * FLOAT
    level = 3 * math.prod(m.patch) * FLOAT
    hierarchy = 4 * m.num_levels * level  # clean, noise, noisy input, denoised output
    tokens = _tokens(m.patch, m.token)
    blocks = sum(min(levels, m.num_levels) for levels in m.levels_per_block)  # (block, level) pairs run
    activations = 2 * blocks * tokens * m.interface_dim * FLOAT  # each block's input and output, kept for backward
    return rows * (clip + hierarchy) + micro * activations


def sampling_bytes(target, batch_size: int) -> int:
    """A sampling batch: the top level's canvas, its denoised estimate, Heun's slope and next canvas."""
    return batch_size * 4 * 3 * math.prod(target) * FLOAT


def fvd_batch_bytes(batch_size: int, frames: int, size: int = 224) -> int:
    """An FVD detector batch: the resized clips and the first 64-channel stride-2 convolution's output."""
    clips = 3 * frames * size * size
    first_conv = 64 * max(1, frames // 2) * (size // 2) ** 2
    return batch_size * (clips + first_conv) * FLOAT
