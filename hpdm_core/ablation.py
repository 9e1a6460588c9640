"""The paper's ablations on your data: architecture variants (Table 2) and overlap strategies (Table 3).

Architecture suite: every variant is a normal run folder OUT/<variant>/ trained from the same base
config, seed and step budget; then sampled with the same seed and labels, and scored per pyramid
level. Level l of a generated video is its level-l canvas; the real level-l video is the real target
clip box-downsampled by 2**(L-l), exactly what level l is trained on.

Inference suite: one checkpoint, sampled once per overlap strategy with the paper's one tiling (whatever
the run's sample.tile_shifts); the levels >= 1 are scored (level 0 is a single tile, so overlap cannot
change it) and timed.

Scores: FVD@N with real I3D weights; without them a Fréchet distance in the feature space of a fixed,
seeded random-weight I3D, labelled "FD (random I3D)": useful to rank variants against each other,
never comparable with published FVD. Both come with the consistency checks that need no network
(hpdm_core.consistency).

Resumable: each variant's result is written atomically to OUT/<variant>/result.json and reused when
its settings match; a variant that stopped mid-training resumes from its latest checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hpdm_core.distributed import resolve_device
from hpdm_core.config import Config
from hpdm_core.errors import BadInputError
from hpdm_core.files import atomic_write_text, check_folder
from hpdm_core.seeding import REAL_CLIPS_STREAM, generator, rng

RESULT_NAME = "result.json"
PROXY_SEED = 0  # the random I3D behind the proxy distance; fixed so tables of different runs agree
PROXY_MIN_SIZE = 32  # the proxy I3D sees canvases at their own size, upsampled to at least this
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- what is compared

@dataclass(frozen=True)
class Variant:
    name: str  # folder name and --variants key
    label: str  # the row label of the paper's Table 2
    overrides: tuple[str, ...] = ()

    def apply(self, base: Config) -> Config:
        from hpdm_core.config import apply_overrides

        return apply_overrides(base, list(self.overrides)).validate()


# In the order of the paper's Table 2 (its default row last).
ARCHITECTURE_VARIANTS = {v.name: v for v in (
    Variant("shallow", "Shallow fusion", ("model.fusion=shallow",)),
    Variant("detach", "Context detach", ("model.detach_context=true",)),
    Variant("no-adaptive", "No adaptive computation", ("model.adaptive_computation=false",)),
    Variant("no-coords", "No coordinates", ("model.use_coords=false",)),
    Variant("default", "Default model"),
)}

# Table 3's rows: overlapped axes and their labels.
OVERLAP_STRATEGIES = {
    "none": "No overlapping", "w": "50% w-overlapping", "h": "50% h-overlapping", "hw": "50% h/w-overlapping",
    "f": "50% f-overlapping", "fw": "50% f/w-overlapping", "fh": "50% f/h-overlapping",
    "fhw": "50% f/h/w-overlapping",
}


def parse_names(text: str | None, known: dict, what: str) -> list[str]:
    """Comma-separated names -> a list in the table's order; None or "all" -> all of them."""
    if text is None or text.strip() in ("", "all"):
        return list(known)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)}")
    return [n for n in known if n in names]


# ----------------------------------------------------------------------------- the detector

@dataclass
class Scorer:
    """An I3D detector and how its inputs are prepared; `metric` names the number it gives."""

    detector: torch.nn.Module
    metric: str  # "FVD" or "FD (random I3D)"
    detector_id: str
    proxy: bool
    min_size: int  # spatial minimum of the input canvases (0: the detector resizes internally)

    @property
    def min_frames(self) -> int:
        return int(self.detector.min_frames)


def make_scorer(i3d: str | Path | None, device: str | torch.device = "cpu") -> Scorer:
    """Real I3D weights (resized to 224 inside, as the FVD protocol does) or the seeded random proxy.

    The proxy looks at canvases near their own size: its features are no better at 224 pixels, and
    the small levels would cost as much as the large ones.
    """
    from hpdm_core.metrics.detectors import load_i3d, random_i3d_detector, weights_hash

    if i3d is not None:
        detector = load_i3d(i3d, resize="torch", device=device)
        return Scorer(detector, "FVD", weights_hash(i3d), proxy=False, min_size=0)
    detector = random_i3d_detector(PROXY_SEED, resize=None, device=device)
    return Scorer(detector, "FD (random I3D)", f"random-i3d-seed{PROXY_SEED}", proxy=True, min_size=PROXY_MIN_SIZE)


def detector_input(videos: torch.Tensor, scorer: Scorer) -> torch.Tensor:
    """float [B, C, F, H, W] in [-1, 1] -> uint8 [B, F', H', W', 3], repeated (nearest) up to the
    detector's minimum frames and size: integer factors, so no detail is invented or lost."""
    from hpdm_core.data.video_io import to_uint8

    _, _, frames, height, width = videos.shape
    factor_f = math.ceil(scorer.min_frames / frames)
    factor_s = math.ceil(scorer.min_size / min(height, width)) if scorer.min_size else 1
    if factor_f > 1 or factor_s > 1:
        videos = F.interpolate(videos.float(), scale_factor=(factor_f, factor_s, factor_s), mode="nearest")
    return torch.from_numpy(to_uint8(videos))


def level_stats(videos: torch.Tensor, scorer: Scorer, stats=None, batch_size: int = 8):
    """FeatureStats of videos [N, C, F, H, W] in [-1, 1] under the scorer's detector (added to `stats`)."""
    from hpdm_core.metrics.frechet import FeatureStats

    stats = FeatureStats(scorer.detector.feature_dim) if stats is None else stats
    device = next((p.device for p in scorer.detector.parameters()), torch.device("cpu"))
    for first in range(0, videos.shape[0], batch_size):
        batch = detector_input(videos[first:first + batch_size], scorer)
        with torch.no_grad():
            stats.update(scorer.detector(batch.to(device)).cpu())
    return stats


# ----------------------------------------------------------------------------- real data per level

def real_level_batches(cfg: Config, num: int, seed: int = 0, chunk: int = 16):
    """`num` real target clips (seeded picks and starts, no flip), `chunk` at a time, as the list of
    their pyramid levels [n, C, *R_l] (box-downsampled), so memory stays bounded at any --num."""
    from hpdm_core.data.dataset import ClipDataset

    frames, height, width = cfg.model.target
    clips = ClipDataset(cfg.data.path, frames=frames, resolution=(height, width),
                        frame_stride=cfg.data.frame_stride, flip=False)
    draws = rng(seed, REAL_CLIPS_STREAM)
    order = np.concatenate([draws.permutation(len(clips)) for _ in range(-(-num // len(clips)))])[:num]
    last = cfg.model.num_levels - 1
    for first in range(0, num, chunk):
        videos = []
        for i in range(first, min(first + chunk, num)):
            # Clip i's start frame from its own generator: the caller's global RNG is left alone.
            clip, _ = clips.clip(int(order[i]), generator(seed, i, REAL_CLIPS_STREAM))
            videos.append(clip.float())
        top = torch.stack(videos)
        yield [F.avg_pool3d(top, 2 ** (last - level)) if level < last else top for level in range(last + 1)]


def real_level_stats(cfg: Config, scorer: Scorer, num: int, cache_dir: Path, seed: int = 0,
                     log: Log | None = None) -> list:
    """Per-level real statistics, cached in cache_dir under everything that changes them."""
    from hpdm_core.metrics.frechet import FeatureStats, cache_file, load_stats, save_stats

    data = Path(cfg.data.path)
    stat = data.stat()
    path = cache_file(cache_dir, {
        "version": 3, "data": str(data.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
        "detector": scorer.detector_id, "num": num, "seed": seed, "target": cfg.model.target,
        "levels": cfg.model.num_levels, "stride": cfg.data.frame_stride, "min_size": scorer.min_size})
    levels = range(cfg.model.num_levels)
    cached = load_stats(path) if path.is_file() else None
    if cached is not None and len(cached) == len(levels):
        return cached
    if log:
        log(f"real statistics: {num} clips of {cfg.data.path} at {cfg.model.num_levels} levels")
    stats = [FeatureStats(scorer.detector.feature_dim) for _ in levels]
    for batch in real_level_batches(cfg, num, seed):
        for level in levels:
            level_stats(batch[level], scorer, stats[level])
    save_stats(path, stats)
    return stats


# ----------------------------------------------------------------------------- one run: sample and score

def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or cut short: recomputed


SAMPLE_CHUNK = 64  # videos generated and scored at a time: memory stays bounded at any --num


def _mean_report(reports: list[tuple[int, dict]]) -> dict:
    """Consistency reports of chunks, averaged with the chunk sizes as weights (None stays None)."""
    def mean(values: list[tuple[int, float | None]]) -> float | None:
        kept = [(n, v) for n, v in values if v is not None]
        return sum(n * v for n, v in kept) / sum(n for n, _ in kept) if kept else None

    first = reports[0][1]
    return {"coarse_mae": [mean([(n, r["coarse_mae"][i]) for n, r in reports]) for i in range(len(first["coarse_mae"]))],
            "seam": {k: mean([(n, r["seam"][k]) for n, r in reports]) for k in first["seam"]}}


def sample_and_score(run_dir: Path, real_stats: list, scorer: Scorer, levels: list[int], num: int, seed: int,
                     steps: int | None, overlap: str | None, batch_size: int, device: str,
                     progress: Callable[[int], None] | None = None, tile_shifts: list[int] | None = None) -> dict:
    """Sample `num` videos from a run folder's EMA weights (same seed and labels for every run) and
    score the given levels against the real statistics; with the consistency checks and timings.
    steps, overlap and tile_shifts override the run's sample settings where given."""
    from hpdm_core.checkpoint import load_for_inference
    from hpdm_core.consistency import consistency_report
    from hpdm_core.metrics.frechet import FeatureStats, fid_from_stats
    from hpdm_core.sampling import generate, resolve_labels

    cfg, denoiser, info = load_for_inference(run_dir, use_ema=True, device=device)
    options = cfg.sample.replace(steps=steps, overlap=overlap, tile_shifts=tile_shifts).validate()
    labels = resolve_labels([], num, denoiser.num_classes)
    fake = {level: FeatureStats(scorer.detector.feature_dim) for level in levels}
    reports, seconds, evaluations = [], 0.0, 0
    for chunk, first in enumerate(range(0, num, SAMPLE_CHUNK)):
        # generate() seeds sample i by (seed, i); each chunk gets its own seed so no noise repeats.
        result = generate(denoiser, labels[first:first + SAMPLE_CHUNK], seed=seed + 1_000_003 * chunk,
                          options=options, batch_size=batch_size, device=next(denoiser.parameters()).device,
                          keep_levels=True, progress=progress)
        seconds += result.seconds
        evaluations += result.tile_evaluations
        for level in levels:
            level_stats(result.levels[level], scorer, fake[level])
        reports.append((len(result.videos), consistency_report(result.videos, result.levels, tuple(cfg.model.patch))))
    return {"checkpoint_step": info["step"], "sample_steps": options.steps, "overlap": options.overlap,
            "tile_shifts": list(options.tile_shifts), "sample_seconds": seconds, "tile_evaluations": evaluations,
            "fd": {str(level): fid_from_stats(real_stats[level], fake[level], unbiased=False) for level in levels},
            "consistency": _mean_report(reports)}


# ----------------------------------------------------------------------------- training one variant

def training_speed(run_dir: Path) -> float | None:
    """Median videos/s over the run's logged intervals: robust to the first (warm-up) interval."""
    from hpdm_core.train_log import read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    speeds = [m.get("videos_per_s") for m in read_metrics(path)]
    speeds = [s for s in speeds if isinstance(s, (int, float)) and s and math.isfinite(s)]
    return statistics.median(speeds) if speeds else None


def train_variant(cfg: Config, run_dir: Path, device: str, log: Log | None = None,
                  on_log: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume) one variant's run folder to cfg.train.steps; returns its training summary."""
    from hpdm_core.training import Trainer, setup_run

    cfg, _ = setup_run(run_dir, copy.deepcopy(cfg), data=cfg.data.path, steps=cfg.train.steps)
    trainer = Trainer(cfg, run_dir, device=device)
    start = trainer.resume()
    if log:
        log(f"{run_dir.name}: {trainer.num_parameters:,} parameters, "
            f"{'resuming at step ' + str(start) if start else 'from scratch'} to {cfg.train.steps}")
    begin = time.perf_counter()
    final = trainer.fit(on_log=on_log)
    seconds = time.perf_counter() - begin
    return {"step": final, "parameters": trainer.num_parameters, "trained_steps": final - start,
            "train_seconds": seconds, "videos_per_s": training_speed(run_dir)}


# ----------------------------------------------------------------------------- the suites

@dataclass
class SuiteOptions:
    out: Path
    num: int = 512
    seed: int = 0  # sampling seed (the training seed is the config's train.seed, equal for all)
    sample_steps: int | None = None
    overlap: str | None = None
    batch_size: int = 4
    device: str = "auto"
    i3d: str | Path | None = None

    def validate(self) -> "SuiteOptions":
        """Every option checked before anything is trained or sampled."""
        from hpdm_core.pyramid import parse_overlap

        if self.num < 2:
            raise BadInputError("--num must be at least 2: a Fréchet distance needs two or more videos")
        if self.batch_size < 1 or self.seed < 0 or (self.sample_steps is not None and self.sample_steps < 1):
            raise BadInputError(f"need --batch-size >= 1, --seed >= 0 and --sample-steps >= 1 (got {self.batch_size}, "
                                f"{self.seed}, {self.sample_steps})")
        if self.overlap is not None:
            parse_overlap(self.overlap)
        if self.i3d is not None and not Path(self.i3d).exists():
            from hpdm_core.metrics.detectors import missing_i3d

            raise missing_i3d(self.i3d)
        check_folder(self.out, "--out")
        return self

    def request(self, **extra) -> dict:
        """What a stored result must match to be reused."""
        return {"num": self.num, "seed": self.seed, "sample_steps": self.sample_steps, "overlap": self.overlap,
                "i3d": str(self.i3d) if self.i3d else None, **extra}


def _finished(folder: Path, request: dict, name: str, log: Log | None) -> dict | None:
    """The stored result of a variant already run with these exact settings (resume), else None."""
    stored = read_json(folder / RESULT_NAME)
    if stored is None or stored.get("request") != request:
        return None
    if log:
        log(f"{name}: finished earlier, reusing {folder / RESULT_NAME}")
    return {**stored, "reused": True}


def run_architecture_suite(base: Config, steps: int, options: SuiteOptions, variants: list[str] | None = None,
                           log: Log | None = None, on_train_log: Callable[[str, dict], None] | None = None,
                           progress: Callable[[int], None] | None = None) -> dict:
    """Train, sample and score each variant; returns the results dict (also OUT/results.json)."""
    if steps < 1:
        raise BadInputError("--steps must be at least 1")
    options.validate()
    names = variants or list(ARCHITECTURE_VARIANTS)
    device = str(resolve_device(options.device))
    base = copy.deepcopy(base)
    base.train.steps = steps
    configs = {name: ARCHITECTURE_VARIANTS[name].apply(base) for name in names}  # bad --set fails early
    options.out.mkdir(parents=True, exist_ok=True)
    scorer = make_scorer(options.i3d, device)
    levels = list(range(base.model.num_levels))
    real_stats = None
    rows = []
    for name in names:
        run_dir = options.out / name
        request = options.request(steps=steps, variant=name, metric=scorer.metric)
        stored = _finished(run_dir, request, name, log)
        if stored is not None:
            rows.append(stored)
            continue
        training = train_variant(configs[name], run_dir, device, log,
                                 (lambda m, n=name: on_train_log(n, m)) if on_train_log else None)
        if real_stats is None:
            real_stats = real_level_stats(configs[name], scorer, options.num, options.out, seed=0, log=log)
        if log:
            log(f"{name}: sampling {options.num} videos")
        scores = sample_and_score(run_dir, real_stats, scorer, levels, options.num, options.seed,
                                  options.sample_steps, options.overlap, options.batch_size, device, progress)
        row = {"variant": name, "label": ARCHITECTURE_VARIANTS[name].label, "request": request, **training,
               **scores}
        write_json(run_dir / RESULT_NAME, row)
        rows.append({**row, "reused": False})
    return _finish("architecture", base, scorer, options, levels, rows)


def run_inference_suite(run_dir: Path, options: SuiteOptions, strategies: list[str] | None = None,
                        data: str | Path | None = None, log: Log | None = None,
                        progress: Callable[[int], None] | None = None) -> dict:
    """Sample one checkpoint with each overlap strategy; FD at the levels >= 1 and time per strategy. Every
    strategy samples with the paper's one tiling (sample.tile_shifts [0]), as Table 3 compares them."""
    from hpdm_core.checkpoint import load_run_config

    options.validate()
    cfg = load_run_config(run_dir)
    if data is not None:
        cfg.data.path = str(data)
    if not cfg.data.path or not Path(cfg.data.path).is_file():
        raise BadInputError(f"the real data {cfg.data.path or '(none)'} of {run_dir} is not there; pass --data FILE.h5")
    if cfg.model.num_levels < 2:
        raise BadInputError("the inference suite compares tilings of levels >= 1; this model has a single level")
    names = strategies or list(OVERLAP_STRATEGIES)
    device = str(resolve_device(options.device))
    options.out.mkdir(parents=True, exist_ok=True)
    scorer = make_scorer(options.i3d, device)
    levels = list(range(1, cfg.model.num_levels))
    real_stats = None
    rows = []
    for name in names:
        folder = options.out / f"overlap-{name}"
        request = options.request(run=str(Path(run_dir).resolve()), overlap=name, metric=scorer.metric)
        stored = _finished(folder, request, f"overlap {name}", log)
        if stored is not None:
            rows.append(stored)
            continue
        if real_stats is None:
            real_stats = real_level_stats(cfg, scorer, options.num, options.out, seed=0, log=log)
        if log:
            log(f"overlap {name}: sampling {options.num} videos")
        scores = sample_and_score(Path(run_dir), real_stats, scorer, levels, options.num, options.seed,
                                  options.sample_steps, name, options.batch_size, device, progress,
                                  tile_shifts=[0])
        row = {"variant": f"overlap-{name}", "label": OVERLAP_STRATEGIES[name], "request": request, **scores}
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / RESULT_NAME, row)
        rows.append({**row, "reused": False})
    return _finish("inference", cfg, scorer, options, levels, rows)


def _finish(suite: str, cfg: Config, scorer: Scorer, options: SuiteOptions, levels: list[int], rows: list[dict]) -> dict:
    from hpdm_core import report

    results = {"suite": suite, "metric": scorer.metric, "proxy": scorer.proxy, "detector": scorer.detector_id,
               "num": options.num, "levels": levels,
               "resolutions": {str(l): [p * 2 ** l for p in cfg.model.patch] for l in levels},
               "rows": rows, "notes": report.notes(scorer.proxy, options.num)}
    write_json(options.out / "results.json", results)
    atomic_write_text(options.out / "table.md", report.to_markdown(results))
    return results
