"""A level's canvas denoised tile by tile (docs/design.md, "Sampling").

At every step each tile of the level-l canvas is denoised together with its parent chain, whose lower
levels are crops of the already generated canvases of levels < l, given to the network as clean context
at sigma = diffusion.context_sigma(k, cfg); the tiles' denoised predictions are averaged into the canvas.
The lower levels of a chain do not change while level l is sampled, so their activations are computed
once per level (denoiser.encode_context) and reused at every step (`cache=True`). Tiles go through the
network in batches of `tile_batch` chains, chosen here from free memory on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hpdm_core import conditioning, diffusion
from hpdm_core.conditioning import Condition
from hpdm_core.config import SampleConfig
from hpdm_core.heun import evaluations_per_tile
from hpdm_core.model import ContextCache
from hpdm_core.precision import autocast
from hpdm_core.pyramid import (Overlap, PatchGeometry, add_tiles, crop, parent_chain, parse_overlap, tile_chains,
                               tile_coverage, tile_offsets, tile_weights)

CPU_TILE_BATCH = 16  # chains per network call on CPU: large enough to amortise Python overhead


def level_tilings(geometry: PatchGeometry, level: int, overlap: Overlap,
                  shifts: list[int]) -> list[tuple[int, torch.Tensor]]:
    """(shift, tile offsets [T, 3]) of each distinct tiling that `sample.tile_shifts` gives level `level`, in
    order. Shifts move tiles along the overlapped height and width axes only: level 0 (one tile) and an overlap
    of neither ("none", "f") keep one tiling."""
    kept: list[tuple[int, torch.Tensor]] = []
    for shift in shifts:
        tiles = tile_offsets(geometry, level, overlap, shift)
        if not any(torch.equal(tiles, other) for _, other in kept):
            kept.append((shift, tiles))
    return kept


def count_tile_evaluations(geometry: PatchGeometry, options: SampleConfig, num_samples: int) -> int:
    """Total chains the network evaluates for num_samples videos (the progress bar's total)."""
    overlap = parse_overlap(options.overlap)
    total = 0
    for level in range(geometry.num_levels):
        tiles = [len(offsets) for _, offsets in level_tilings(geometry, level, overlap, options.tile_shifts)]
        evaluations = evaluations_per_tile(options.steps, level)  # taken in turns by the tilings
        guided = 2 if options.guided_at(level) else 1  # a guided level evaluates a null-class copy too
        total += guided * sum(tiles[i % len(tiles)] for i in range(evaluations))
    return num_samples * total


def video_channels(denoiser) -> int:
    """Pixel channels of the videos the denoiser makes (3 unless its model says otherwise)."""
    model_cfg = getattr(getattr(denoiser, "model", None), "cfg", None)
    return int(getattr(denoiser, "channels", None) or getattr(model_cfg, "channels", None) or 3)


def _join(halves: int, parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Batch parts that each hold `halves` blocks of rows (cond rows, then their null copies) joined into all
    parts' first blocks, then all their second blocks; None for a tensor the cache does not keep."""
    if parts[0] is None:
        return None
    return torch.cat([t.chunk(halves)[half] for half in range(halves) for t in parts])


@dataclass
class _Tiling:
    """One tiling of a level's canvas, as items in (sample, tile) order: the canvas sums them in this order
    whatever the batching. item_context indexes the item's lower-level context among the level's distinct ones."""

    item_sample: torch.Tensor
    item_chain: torch.Tensor
    item_context: torch.Tensor
    batches: list[slice]
    weight: torch.Tensor  # the summed tile weights over each pixel, which divide the canvas


class LevelDenoiser:
    """D(x; sigma) of a whole level-l canvas, assembled from its tiles.

    Holds the level's tile chains, the lower levels' clean canvases and, when caching, the lower levels'
    activations of every distinct parent chain, computed on first use and kept for the rest of the level.
    They depend on the chain below the tile only, so tiles that share their parents share them: at level 1 every
    tile of a sample has the same parent, the whole level-0 canvas.

    With several `sample.tile_shifts` the tilings take turns, one per evaluation (not in the paper, which
    averages one tiling's overlapping tiles). A tile's prediction is worst at its own borders: where one
    tiling's tiles start and stop, and at its tokens' borders, the averaged canvas keeps steps (seams and the
    token mosaic). Tilings shifted by a fraction of a token put those borders at other pixels; in turns, each
    Heun step averages two of them at no extra evaluations, so no pixel is a border at every evaluation.
    """

    def __init__(self, denoiser, level: int, lower: list[torch.Tensor], labels: Condition,
                 options: SampleConfig, overlap: Overlap, tile_batch: int,
                 progress: Callable[[int], None] | None = None):
        self.denoiser, self.level, self.lower, self.options = denoiser, level, lower, options
        self.geometry: PatchGeometry = denoiser.geometry
        self.device = labels.device
        self.progress = progress
        self.labels = labels
        self.guidance = options.guidance_at(level)
        self.guided = options.guided_at(level)
        self.items_per_batch = max(1, tile_batch // (2 if self.guided else 1))
        # Each tile's pixels weigh tile_weights (all ones for the paper's uniform average).
        self.tile_weights = tile_weights(self.geometry.patch, overlap, options.tile_blend).to(self.device)
        num_samples = conditioning.batch_size(labels)
        contexts: dict[tuple, int] = {}  # (sample, parent chain) -> index
        self.tilings = []
        for shift, offsets in level_tilings(self.geometry, level, overlap, options.tile_shifts):
            chains = parent_chain(offsets, level, self.geometry).to(self.device)  # [T, l+1, 3]
            item_sample = torch.arange(num_samples, device=self.device).repeat_interleave(chains.shape[0])
            item_chain = chains.repeat(num_samples, 1, 1)
            keys = zip(item_sample.tolist(), item_chain[:, :level].flatten(1).tolist())
            item_context = [contexts.setdefault((sample, tuple(parents)), len(contexts)) for sample, parents in keys]
            n = len(item_sample)
            self.tilings.append(_Tiling(
                item_sample, item_chain, torch.tensor(item_context, device=self.device),
                [slice(i, min(i + self.items_per_batch, n)) for i in range(0, n, self.items_per_batch)],
                tile_coverage(self.geometry, level, overlap, options.tile_blend, shift).to(self.device)))
        self.context_sample = torch.tensor([sample for sample, _ in contexts], dtype=torch.long, device=self.device)
        self.context_chain = torch.tensor([parents for _, parents in contexts], dtype=torch.long,
                                          device=self.device).reshape(len(contexts), level, 3)
        self.context_sigma = torch.tensor([diffusion.context_sigma(k, denoiser.cfg) for k in range(level)],
                                          device=self.device)
        self.cache = None
        # A level evaluated once per tile (N_l = 1) whose tiles share no parents gains nothing from a cache:
        # encoding costs a pass.
        shared = len(contexts) < sum(len(t.item_sample) for t in self.tilings)
        self.use_cache = options.cache and level > 0 and (evaluations_per_tile(options.steps, level) > 1 or shared)
        self.evaluations = 0

    def _with_null(self, labels: Condition) -> Condition:
        """With guidance, the null-class copies follow the cond rows."""
        return conditioning.concat([labels, conditioning.null_like(labels, self.denoiser.num_classes)]) \
            if self.guided else labels

    def _lower_patches(self, samples: torch.Tensor, chains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean lower-level patches [n, l, C, *r] at chains [n, >= l, 3] of `samples`, and their sigmas [n, l]
        (with guidance, twice: the null copies)."""
        patch = self.geometry.patch
        x = torch.stack([crop(self.lower[k], chains[:, k], patch, rows=samples) for k in range(self.level)], 1)
        if self.guided:
            x = torch.cat([x, x])
        return x, self.context_sigma.expand(x.shape[0], -1)

    def _encode_contexts(self) -> ContextCache:
        """The lower levels' activations of every distinct parent chain (null copies after all cond ones)."""
        parts = []
        for start in range(0, len(self.context_sample), self.items_per_batch):
            rows = slice(start, start + self.items_per_batch)
            samples, chains = self.context_sample[rows], self.context_chain[rows]
            x, sigma = self._lower_patches(samples, chains)
            labels = self._with_null(self.labels[samples])
            with autocast(self.device, self.options.bf16):
                parts.append(self.denoiser.encode_context(x, sigma, torch.cat([chains, chains]) if self.guided
                                                          else chains, labels, offload=self.options.offload_cache))
        halves = 2 if self.guided else 1
        return ContextCache(self.level, [_join(halves, [p.acts[b] for p in parts]) for b in range(len(parts[0].acts))],
                            _join(halves, [p.pixels for p in parts]), parts[0].offload)

    def _cached_context(self, tiling: _Tiling, items: slice) -> ContextCache:
        if self.cache is None:
            self.cache = self._encode_contexts()
        rows = tiling.item_context[items]
        if self.guided:
            rows = torch.cat([rows, rows + len(self.context_sample)])
        take = lambda t: None if t is None else t[rows.to(t.device)]  # noqa: E731
        return ContextCache(self.level, [take(a) for a in self.cache.acts], take(self.cache.pixels), self.cache.offload)

    def _denoise_batch(self, tiling: _Tiling, items: slice, canvas: torch.Tensor, sigma: float) -> torch.Tensor:
        """Denoised top-level patches [n_items, C, *r] of one tile batch, guidance applied."""
        samples, item_chains = tiling.item_sample[items], tiling.item_chain[items]
        labels = self._with_null(self.labels[samples])
        top = crop(canvas, item_chains[:, -1], self.geometry.patch, rows=samples)
        chains = item_chains
        if self.guided:
            top, chains = torch.cat([top, top]), torch.cat([item_chains, item_chains])
        top = top.unsqueeze(1)
        sigma_top = torch.full((top.shape[0], 1), float(sigma), device=self.device)
        with autocast(self.device, self.options.bf16):
            if self.level == 0:
                out = self.denoiser(top, sigma_top, chains, labels)
            elif self.use_cache:
                out = self.denoiser(top, sigma_top, chains, labels, context=self._cached_context(tiling, items))
            else:
                x, ctx_sigma = self._lower_patches(samples, item_chains)
                out = self.denoiser(torch.cat([x, top], 1), torch.cat([ctx_sigma, sigma_top], 1), chains, labels)
        out = out[:, -1].float()
        if self.progress is not None:
            self.progress(out.shape[0])
        if self.guided:
            cond, uncond = out.chunk(2)
            return diffusion.guided(cond, uncond, self.guidance)
        return out

    @torch.no_grad()
    def __call__(self, canvas: torch.Tensor, sigma: float) -> torch.Tensor:
        tiling = self.tilings[self.evaluations % len(self.tilings)]
        self.evaluations += 1
        total = torch.zeros_like(canvas)
        for items in tiling.batches:
            patches = self._denoise_batch(tiling, items, canvas, sigma) * self.tile_weights
            add_tiles(total, tiling.item_sample[items], tiling.item_chain[items, -1], patches)
        return total / tiling.weight

    def release(self) -> None:
        self.cache = None


def choose_tile_batch(denoiser, options: SampleConfig, device: torch.device) -> int:
    """Chains per network call: options.tile_batch, else a fixed number on CPU, else from free memory.

    On CUDA, the peak memory of one uncached forward of two full-depth chains (the most expensive
    call) gives a per-chain cost; half the free memory is spent on it, the rest is left to the caches
    and the canvases.
    """
    if options.tile_batch > 0:
        return options.tile_batch
    if device.type != "cuda":
        return CPU_TILE_BATCH
    geometry: PatchGeometry = denoiser.geometry
    n = geometry.num_levels
    probe = 2
    x = torch.zeros(probe, n, video_channels(denoiser), *geometry.patch, device=device)
    sigma = torch.ones(probe, n, device=device)
    offsets = tile_chains(geometry, n - 1, Overlap())[:1].to(device).expand(probe, -1, -1)
    labels = denoiser.null_condition(probe, device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.no_grad(), autocast(device, options.bf16):
        denoiser(x, sigma, offsets, labels)
    torch.cuda.synchronize(device)
    per_chain = max(1, (torch.cuda.max_memory_allocated(device) - before) // probe)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(1024, 0.5 * free // per_chain)))
