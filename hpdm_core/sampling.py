"""Hierarchical, overlapped, patch-wise sampling with activation caching (docs/design.md, "Sampling").

The video is generated level by level and never passed through the network whole:
- level 0 is one tile (its whole canvas), sampled with EDM's stochastic Heun sampler (Algorithm 2 of
  Karras et al. 2022, churn from cfg.sample); levels l >= 1 use the deterministic Heun sampler with
  N_l = max(1, N_0 // 2**l) steps on diffusion.sampling_sigmas(N_l, l, cfg);
- at every step, each tile of the level-l canvas is denoised together with its parent chain, whose
  lower levels are crops of the already generated canvases of levels < l, given to the network as
  clean context at sigma = diffusion.context_sigma(k, cfg); the tiles' denoised predictions are
  averaged into the canvas, and one Heun step is taken on the whole canvas;
- the lower levels of a tile chain do not change while level l is sampled, so their activations are
  computed once per level (denoiser.encode_context) and reused at every step (`cache=True`).

The sampler only needs the Denoiser interface: forward(x_noisy, sigma, offsets, labels, context=None),
encode_context(x, sigma, offsets, labels, offload=False) and the attributes geometry, cfg,
num_classes. Every sample draws its noise from its own generator seeded by (seed, sample, level)
(seeding.sample_seed), so a seed gives the same videos whatever batch_size and tile_batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hpdm_core import conditioning, diffusion
from hpdm_core.conditioning import Condition, TextCondition
from hpdm_core.compiling import CompiledDenoiser
from hpdm_core.config import SampleConfig
from hpdm_core.errors import BadInputError
from hpdm_core.files import atomic_write
from hpdm_core.precision import autocast
from hpdm_core.pyramid import Overlap, PatchGeometry, add_tiles, crop, parse_overlap, tile_chains, tile_coverage
from hpdm_core.seeding import sample_seed

CPU_TILE_BATCH = 16  # chains per network call on CPU: large enough to amortise Python overhead


@dataclass
class SampleResult:
    videos: torch.Tensor  # [N, C, *R] float in [-1, 1] (clamped), on CPU
    labels: torch.Tensor  # [N] classes; -1 for videos made from a text that names no class
    prompts: list[str] = field(default_factory=list)  # one per video for a text-conditional model
    levels: list[torch.Tensor] = field(default_factory=list)  # level canvases [N, C, *R_l] if kept
    tile_evaluations: int = 0  # network rows evaluated (chains), excluding cache encodes
    seconds: float = 0.0
    tile_batch: int = 0


# ----------------------------------------------------------------------------- schedule and plan

def level_steps(steps: int, level: int) -> int:
    """N_l = max(1, N_0 // 2**l): steps halve per level."""
    return max(1, steps // 2 ** level)


def evaluations_per_tile(steps: int, level: int) -> int:
    """Network evaluations of one chain over a level: N_l Heun steps, the last one without correction."""
    return 2 * level_steps(steps, level) - 1


def count_tile_evaluations(geometry: PatchGeometry, options: SampleConfig, num_samples: int) -> int:
    """Total chains the network evaluates for num_samples videos (the progress bar's total)."""
    overlap = parse_overlap(options.overlap)
    return num_samples * sum(
        (2 if options.guided_at(level) else 1)  # a guided level evaluates a null-class copy too
        * evaluations_per_tile(options.steps, level) * tile_chains(geometry, level, overlap).shape[0]
        for level in range(geometry.num_levels))


# ----------------------------------------------------------------------------- network evaluation

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
        self.weight = tile_coverage(self.geometry, level, overlap).to(self.device)
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
            patches = self._denoise_batch(index, items, canvas, sigma)
            add_tiles(total, self.item_sample[items], self.item_chain[items, -1], patches)
        return total / self.weight

    def release(self) -> None:
        self.caches.clear()


# ----------------------------------------------------------------------------- the Heun sampler

def heun_sample(denoise: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, sigmas: torch.Tensor,
                churn_noise: Callable[[], torch.Tensor] | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """EDM Algorithm 2 from x_0 = noise * sigma_0; churn only when churn_noise is given (level 0).

    The last step (to sigma = 0) is an Euler step: x_N = D(x_hat; t_hat) exactly.
    """
    sigmas = [float(s) for s in sigmas]
    num_steps = len(sigmas) - 1
    x = noise * sigmas[0]
    for i, (t_cur, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        gamma = 0.0
        if churn_noise is not None and s_tmin <= t_cur <= s_tmax:
            gamma = min(s_churn / num_steps, math.sqrt(2) - 1)
        t_hat = t_cur + gamma * t_cur
        x_hat = x
        if gamma > 0:
            x_hat = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * s_noise * churn_noise()
        d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x = x_hat + (t_next - t_hat) * d_cur
        if t_next > 0:
            d_next = (x - denoise(x, t_next)) / t_next
            x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_next)
    return x


# ----------------------------------------------------------------------------- batch sizes

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
    x = torch.zeros(probe, n, _channels(denoiser), *geometry.patch, device=device)
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


# ----------------------------------------------------------------------------- the whole pyramid

def _channels(denoiser) -> int:
    """Pixel channels of the videos the denoiser makes (3 unless its model says otherwise)."""
    model_cfg = getattr(getattr(denoiser, "model", None), "cfg", None)
    return int(getattr(denoiser, "channels", None) or getattr(model_cfg, "channels", None) or 3)


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
    channels = _channels(denoiser)
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
    from hpdm_core import distributed as dist_lib

    options = (options or SampleConfig()).validate()
    overlap = parse_overlap(options.overlap)  # once: the typed value goes down to every level
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, got {batch_size}")
    if seed < 0:
        raise BadInputError(f"seed must be >= 0, got {seed}")
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
    if num_levels is not None and not 1 <= num_levels <= denoiser.geometry.num_levels:
        raise BadInputError(f"num_levels must lie in 1..{denoiser.geometry.num_levels}, got {num_levels}")
    num_levels = num_levels or denoiser.geometry.num_levels
    mine = dist_lib.shard(num) if distributed else list(range(num))
    videos, levels = [], [[] for _ in range(num_levels)]
    for first in range(0, len(mine), batch_size):
        indices = mine[first:first + batch_size]
        canvases = sample_batch(denoiser, labels[indices].to(device), indices, seed, options, overlap, tile_batch, count,
                                num_levels)
        videos.append(canvases[-1].float().cpu())
        if keep_levels:
            for level, canvas in enumerate(canvases):
                levels[level].append(canvas.float().cpu())
    if distributed:
        # Contiguous shards: concatenating them in rank order restores the sample order.
        parts = dist_lib.gather_to_main((videos, levels))
        evaluated = int(dist_lib.all_reduce_sum(torch.tensor([evaluated], dtype=torch.float64)).item())
        if parts is None:
            return None
        videos = [v for part_videos, _ in parts for v in part_videos]
        levels = [[c for _, part_levels in parts for c in part_levels[level]] for level in range(num_levels)]
    classes = torch.full((num,), -1, dtype=torch.long) if isinstance(labels, TextCondition) else labels
    return SampleResult(videos=torch.cat(videos), labels=classes,
                        levels=[torch.cat(c) for c in levels] if keep_levels else [],
                        tile_evaluations=evaluated, seconds=time.perf_counter() - start, tile_batch=tile_batch)


# ----------------------------------------------------------------------------- writing samples

FORMATS = ("mp4", "gif", "h5", "npz")
PER_SAMPLE_FILES_UP_TO = 16  # mp4/gif: one file per sample besides the grid when N is this small


def _with_suffix(out: Path, tag: str) -> Path:
    return out.with_name(f"{out.stem}_{tag}{out.suffix}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as tmp, tmp.open("wb") as f:  # a file object: numpy appends no suffix
        np.savez_compressed(f, **arrays)


def output_files(out: str | Path, fmt: str, num: int, num_levels: int = 1, save_levels: bool = False,
                 prompts: bool = False) -> list[Path]:
    """Every file save_samples writes for these arguments, the main one first (to check them beforehand)."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() != f".{fmt}":
        out = out.with_name(out.name + f".{fmt}")
    files = [out]
    if fmt in ("mp4", "gif") and num <= PER_SAMPLE_FILES_UP_TO:
        files += [_with_suffix(out, f"{i:03d}") for i in range(num)]
    if save_levels and fmt != "npz":
        files += [_with_suffix(out, f"level{level}") for level in range(num_levels - 1)]
    if prompts and fmt in ("mp4", "gif"):
        files.append(prompts_file(out))
    return files


def prompts_file(out: Path) -> Path:
    """The sidecar of an mp4/gif grid made from prompts: one prompt per line, in the grid's row order."""
    return out.with_name(f"{out.stem}_prompts.txt")


def _write_h5(path: Path, videos: np.ndarray, labels: list[int], class_names: list[str], fps: float,
              attrs: dict, prompts: list[str]) -> None:
    from hpdm_core.data.h5store import VideoStoreWriter

    with VideoStoreWriter(path, videos.shape[2], videos.shape[3]) as writer:
        for i, (video, label) in enumerate(zip(videos, labels)):
            writer.append(video, label=label, name=f"sample_{i:06d}", **({"caption": prompts[i]} if prompts else {}))
        writer.finish(class_names, fps, split="generated", source="hpdm sample", **attrs)


def save_samples(result: SampleResult, out: str | Path, fmt: str, fps: float = 8.0,
                 class_names: list[str] | None = None, save_levels: bool = False,
                 attrs: dict | None = None) -> list[Path]:
    """Write the videos (and with save_levels each lower level's canvases) and return the files written.

    mp4/gif: a grid video at `out` and, for at most PER_SAMPLE_FILES_UP_TO samples, `out_000.mp4`, ...;
    h5: the dataset layout (labels = classes, names sample_000000, ..., prompts as captions), readable by eval-fvd;
    npz: `videos` uint8 [N, F, H, W, 3], `labels` [N] and, from prompts, `prompts` [N] (with save_levels also
    `level_0`, ...); mp4/gif from prompts: the prompts beside the grid (`prompts_file`).
    Levels are written beside `out` as `out_level0.mp4` / `.h5`, or inside the npz.
    """
    from hpdm_core.data.video_io import to_uint8, write_video, write_video_grid

    out = output_files(out, fmt, len(result.videos))[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = result.labels.tolist()
    videos = to_uint8(result.videos)
    lower = [to_uint8(level) for level in result.levels[:-1]] if save_levels else []
    written: list[Path] = []
    if fmt == "npz":
        arrays = {"videos": videos, "labels": np.asarray(labels, dtype=np.int64)}
        if result.prompts:
            arrays["prompts"] = np.asarray(result.prompts, dtype=str)
        arrays.update({f"level_{level}": canvas for level, canvas in enumerate(lower)})
        _write_npz(out, arrays)
        return [out]
    if fmt == "h5":
        names = class_names or [f"class_{k}" for k in range(max(labels) + 1)]
        _write_h5(out, videos, labels, names, fps, attrs or {}, result.prompts)
        written.append(out)
        for level, canvas in enumerate(lower):
            path = _with_suffix(out, f"level{level}")
            _write_h5(path, canvas, labels, names, fps, {**(attrs or {}), "level": level}, result.prompts)
            written.append(path)
        return written
    written.append(write_video_grid(out, videos, fps))
    if len(videos) <= PER_SAMPLE_FILES_UP_TO:
        written += [write_video(_with_suffix(out, f"{i:03d}"), video, fps) for i, video in enumerate(videos)]
    for level, canvas in enumerate(lower):
        written.append(write_video_grid(_with_suffix(out, f"level{level}"), canvas, fps))
    if result.prompts:
        sidecar = prompts_file(out)
        with atomic_write(sidecar) as tmp:
            tmp.write_text("".join(" ".join(p.split()) + "\n" for p in result.prompts), encoding="utf-8")
        written.append(sidecar)
    return written
