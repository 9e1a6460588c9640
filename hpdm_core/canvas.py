"""A level's canvas denoised tile by tile (docs/design.md, "Sampling").

At every step each tile of the level-l canvas is denoised together with its parent chain, whose lower
levels are crops of the already generated canvases of levels < l, given to the network as clean context
at sigma = diffusion.context_sigma(k, cfg); the tiles' denoised predictions are averaged into the canvas.
The lower levels of a chain do not change while level l is sampled, so their activations are computed
once per level (denoiser.encode_context) and reused at every step (`cache=True`). Tiles go through the
network in batches of `tile_batch` chains, chosen here from free memory on CUDA.
"""

from __future__ import annotations

from typing import Callable

import torch

from hpdm_core import conditioning, diffusion
from hpdm_core.conditioning import Condition
from hpdm_core.config import SampleConfig
from hpdm_core.heun import evaluations_per_tile
from hpdm_core.precision import autocast
from hpdm_core.pyramid import (Overlap, PatchGeometry, add_tiles, crop, parse_overlap, tile_chains, tile_coverage,
                               tile_weights)

CPU_TILE_BATCH = 16  # chains per network call on CPU: large enough to amortise Python overhead


def count_tile_evaluations(geometry: PatchGeometry, options: SampleConfig, num_samples: int) -> int:
    """Total chains the network evaluates for num_samples videos (the progress bar's total)."""
    overlap = parse_overlap(options.overlap)
    return num_samples * sum(
        (2 if options.guided_at(level) else 1)  # a guided level evaluates a null-class copy too
        * evaluations_per_tile(options.steps, level) * tile_chains(geometry, level, overlap).shape[0]
        for level in range(geometry.num_levels))


def video_channels(denoiser) -> int:
    """Pixel channels of the videos the denoiser makes (3 unless its model says otherwise)."""
    model_cfg = getattr(getattr(denoiser, "model", None), "cfg", None)
    return int(getattr(denoiser, "channels", None) or getattr(model_cfg, "channels", None) or 3)


class LevelDenoiser:
    """D(x; sigma) of a whole level-l canvas, assembled from its tiles.

    Holds the level's tile chains, the lower levels' clean canvases and, when caching, one
    ContextCache per tile batch, computed on first use and kept for the rest of the level.
    """

    def __init__(self, denoiser, level: int, lower: list[torch.Tensor], labels: Condition,
                 options: SampleConfig, overlap: Overlap, tile_batch: int,
                 progress: Callable[[int], None] | None = None):
        self.denoiser, self.level, self.lower, self.options = denoiser, level, lower, options
        self.geometry: PatchGeometry = denoiser.geometry
        self.device = labels.device
        self.progress = progress
        chains = tile_chains(self.geometry, level, overlap).to(self.device)  # [T, l+1, 3]
        num_samples, num_tiles = conditioning.batch_size(labels), chains.shape[0]
        # Items in (sample, tile) order; the canvas sums them in this order whatever the batching.
        self.item_sample = torch.arange(num_samples, device=self.device).repeat_interleave(num_tiles)
        self.item_chain = chains.repeat(num_samples, 1, 1)
        self.item_label = labels[self.item_sample]
        self.guidance = options.guidance_at(level)
        self.guided = options.guided_at(level)
        rows_per_item = 2 if self.guided else 1
        items_per_batch = max(1, tile_batch // rows_per_item)
        self.batches = [slice(i, min(i + items_per_batch, len(self.item_sample)))
                        for i in range(0, len(self.item_sample), items_per_batch)]
        # Each tile's pixels weigh tile_weights (all ones for the paper's uniform average); their sum per pixel
        # divides the canvas.
        self.tile_weights = tile_weights(self.geometry.patch, overlap, options.tile_blend).to(self.device)
        self.weight = tile_coverage(self.geometry, level, overlap, options.tile_blend).to(self.device)
        self.context_sigma = torch.tensor([diffusion.context_sigma(k, denoiser.cfg) for k in range(level)],
                                          device=self.device)
        self.caches: dict[int, object] = {}
        # A level evaluated once per tile (N_l = 1) gains nothing from a cache: encoding costs a pass.
        self.use_cache = options.cache and level > 0 and evaluations_per_tile(options.steps, level) > 1

    def _rows(self, items: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(chains, labels) of a tile batch; with guidance, the null-class copies follow the cond rows."""
        chains, labels = self.item_chain[items], self.item_label[items]
        if self.guided:
            chains = torch.cat([chains, chains])
            labels = conditioning.concat([labels, conditioning.null_like(labels, self.denoiser.num_classes)])
        return chains, labels

    def _context(self, items: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean lower-level patches [n, l, C, *r] of a tile batch and their sigmas [n, l]."""
        samples = self.item_sample[items]
        chains = self.item_chain[items]
        patch = self.geometry.patch
        x = torch.stack([crop(self.lower[k], chains[:, k], patch, rows=samples) for k in range(self.level)], 1)
        if self.guided:
            x = torch.cat([x, x])
        return x, self.context_sigma.expand(x.shape[0], -1)

    def _cache(self, index: int, items: slice):
        if index not in self.caches:
            chains, labels = self._rows(items)
            x, sigma = self._context(items)
            with autocast(self.device, self.options.bf16):
                self.caches[index] = self.denoiser.encode_context(x, sigma, chains[:, :self.level], labels,
                                                                  offload=self.options.offload_cache)
        return self.caches[index]

    def _denoise_batch(self, index: int, items: slice, canvas: torch.Tensor, sigma: float) -> torch.Tensor:
        """Denoised top-level patches [n_items, C, *r] of one tile batch, guidance applied."""
        chains, labels = self._rows(items)
        top = crop(canvas, self.item_chain[items, -1], self.geometry.patch, rows=self.item_sample[items])
        if self.guided:
            top = torch.cat([top, top])
        top = top.unsqueeze(1)
        sigma_top = torch.full((top.shape[0], 1), float(sigma), device=self.device)
        with autocast(self.device, self.options.bf16):
            if self.level == 0:
                out = self.denoiser(top, sigma_top, chains, labels)
            elif self.use_cache:
                out = self.denoiser(top, sigma_top, chains, labels, context=self._cache(index, items))
            else:
                x, ctx_sigma = self._context(items)
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
        total = torch.zeros_like(canvas)
        for index, items in enumerate(self.batches):
            patches = self._denoise_batch(index, items, canvas, sigma) * self.tile_weights
            add_tiles(total, self.item_sample[items], self.item_chain[items, -1], patches)
        return total / self.weight

    def release(self) -> None:
        self.caches.clear()


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
