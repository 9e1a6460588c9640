"""Hierarchical, overlapped, patch-wise sampling with activation caching (docs/design.md, "Sampling").

The video is generated level by level and never passed through the network whole:
- level 0 is one tile (its whole canvas), sampled with EDM's stochastic Heun sampler (churn from
  cfg.sample); levels l >= 1 use the deterministic Heun sampler with N_l = max(1, N_0 // 2**l) steps on
  diffusion.sampling_sigmas(N_l, l, cfg) (heun.py);
- at every step the level's canvas is denoised tile by tile, each tile with its parent chain cut from
  the lower levels' finished canvases, their activations cached for the level (canvas.py);
- the videos are written by sample_files.py.

The sampler only needs the Denoiser interface: forward(x_noisy, sigma, offsets, labels, context=None),
encode_context(x, sigma, offsets, labels, offload=False) and the attributes geometry, cfg,
num_classes. Every sample draws its noise from its own generator seeded by (seed, sample, level)
(seeding.sample_seed), so a seed gives the same videos whatever batch_size, tile_batch and number of
processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from hpdm_core import conditioning, diffusion
from hpdm_core import distributed as dist_lib
from hpdm_core.canvas import LevelDenoiser, choose_tile_batch, video_channels
from hpdm_core.compiling import CompiledDenoiser
from hpdm_core.conditioning import Condition, TextCondition
from hpdm_core.config import SampleConfig
from hpdm_core.errors import BadInputError
from hpdm_core.heun import heun_sample, level_steps
from hpdm_core.pyramid import Overlap, PatchGeometry, parse_overlap
from hpdm_core.seeding import sample_seed


@dataclass
class SampleResult:
    videos: torch.Tensor  # [N, C, *R] float in [-1, 1] (clamped), on CPU
    labels: torch.Tensor  # [N] classes; -1 for videos made from a text that names no class
    prompts: list[str] = field(default_factory=list)  # one per video for a text-conditional model
    levels: list[torch.Tensor] = field(default_factory=list)  # level canvases [N, C, *R_l] if kept
    tile_evaluations: int = 0  # network rows evaluated (chains), excluding cache encodes
    seconds: float = 0.0
    tile_batch: int = 0


def _noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One standard normal draw per sample, each from its own generator (on CPU: device-independent)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


@torch.no_grad()
def sample_batch(denoiser, labels: Condition, indices: list[int], seed: int, options: SampleConfig,
                 overlap: Overlap, tile_batch: int, progress: Callable[[int], None] | None = None,
                 num_levels: int | None = None) -> list[torch.Tensor]:
    """Canvases [B, C, *R_l] of the first num_levels levels (default all) for the samples `indices`."""
    geometry: PatchGeometry = denoiser.geometry
    device = labels.device
    channels = video_channels(denoiser)
    levels: list[torch.Tensor] = []
    for level in range(geometry.num_levels if num_levels is None else num_levels):
        generators = [torch.Generator().manual_seed(sample_seed(seed, i, level)) for i in indices]
        shape = (channels, *geometry.canvas(level))
        sigmas = diffusion.sampling_sigmas(level_steps(options.steps, level), level, denoiser.cfg)
        level_denoiser = LevelDenoiser(denoiser, level, levels, labels, options, overlap, tile_batch, progress)
        stochastic = level == 0 and options.s_churn > 0
        canvas = heun_sample(
            level_denoiser, _noise(generators, shape, device), sigmas,
            churn_noise=(lambda: _noise(generators, shape, device)) if stochastic else None,
            s_churn=options.s_churn, s_tmin=options.s_tmin, s_tmax=options.s_tmax, s_noise=options.s_noise)
        level_denoiser.release()
        levels.append(canvas.clamp(-1, 1))
    return levels


def resolve_labels(classes: list[int] | None, num: int, num_classes: int) -> torch.Tensor:
    """One class per sample: none given cycles 0..K-1, one given is used for all, else one per sample."""
    if num < 1:
        raise BadInputError(f"the number of samples must be at least 1, got {num}")
    if not classes:
        labels = [i % num_classes for i in range(num)]
    elif len(classes) == 1:
        labels = classes * num
    elif len(classes) == num:
        labels = list(classes)
    else:
        raise BadInputError(f"give `classes` once or once per sample ({num}), got {len(classes)} classes")
    bad = [c for c in labels if not 0 <= c < num_classes]
    if bad:
        raise BadInputError(f"class {bad[0]} is out of range: this model has classes 0..{num_classes - 1}")
    return torch.tensor(labels, dtype=torch.long)


def generate(denoiser, labels: Condition, seed: int = 0, options: SampleConfig | None = None,
             batch_size: int = 4, device: torch.device | str | None = None, keep_levels: bool = False,
             progress: Callable[[int], None] | None = None, distributed: bool = False,
             num_levels: int | None = None) -> SampleResult | None:
    """Sample one video per condition (a class [N], or a TextCondition of N texts): SampleResult with
    videos [N, C, *R] on CPU (and every level if asked).

    num_levels < the model's stops early: `videos` is then the last level generated (a coarse preview,
    e.g. num_levels=1 for level 0 alone; level l is generated exactly as in a full run).

    distributed=True (under torchrun, process group initialised): each rank samples a contiguous shard
    of the indices with their own per-sample seeds and rank 0 gathers them in order, so the result is
    the one-process result; the other ranks return None.
    """
    options = (options or SampleConfig()).validate()
    overlap = parse_overlap(options.overlap)  # once: the typed value goes down to every level
    if batch_size < 1:
        raise BadInputError(f"`batch_size` must be at least 1, got {batch_size}")
    if seed < 0:
        raise BadInputError(f"`seed` must be at least 0, got {seed}")
    if num_levels is not None and not 1 <= num_levels <= denoiser.geometry.num_levels:
        raise BadInputError(f"`num_levels` must lie in 1..{denoiser.geometry.num_levels}, got {num_levels}")
    num_levels = num_levels or denoiser.geometry.num_levels
    if device is None:
        device = next((p.device for p in denoiser.parameters()), torch.device("cpu")) \
            if hasattr(denoiser, "parameters") else torch.device("cpu")
    device = torch.device(device)
    labels = labels.to("cpu") if isinstance(labels, TextCondition) else labels.long().cpu()
    num = conditioning.batch_size(labels)
    tile_batch = choose_tile_batch(denoiser, options, device)
    if options.compile:  # after the memory probe: it would compile a shape of its own
        denoiser = CompiledDenoiser(denoiser, device)
    evaluated = 0

    def count(rows: int) -> None:
        nonlocal evaluated
        evaluated += rows
        if progress is not None:
            progress(rows)

    start = time.perf_counter()
    mine = dist_lib.shard(num) if distributed else list(range(num))
    levels: list[list[torch.Tensor]] = [[] for _ in range(num_levels)]  # per level, one tensor per batch
    for first in range(0, len(mine), batch_size):
        indices = mine[first:first + batch_size]
        canvases = sample_batch(denoiser, labels[indices].to(device), indices, seed, options, overlap, tile_batch, count,
                                num_levels)
        for level, canvas in enumerate(canvases):
            if keep_levels or level == num_levels - 1:
                levels[level].append(canvas.float().cpu())
    if distributed:
        gathered = _gather_shards(levels, evaluated)
        if gathered is None:
            return None
        levels, evaluated = gathered
    classes = torch.full((num,), -1, dtype=torch.long) if isinstance(labels, TextCondition) else labels
    return SampleResult(videos=torch.cat(levels[-1]), labels=classes,
                        levels=[torch.cat(c) for c in levels] if keep_levels else [],
                        tile_evaluations=evaluated, seconds=time.perf_counter() - start, tile_batch=tile_batch)


def _gather_shards(levels: list[list[torch.Tensor]], evaluated: int) -> tuple[list[list[torch.Tensor]], int] | None:
    """On rank 0: every rank's canvases per level in sample order, and the network rows of all ranks;
    None on the other ranks. The shards are contiguous, so rank order is sample order."""
    parts = dist_lib.gather_to_main(levels)
    evaluated = int(dist_lib.all_reduce_sum(torch.tensor([evaluated], dtype=torch.float64)).item())
    if parts is None:
        return None
    return [[c for part in parts for c in part[level]] for level in range(len(levels))], evaluated
