"""FVD and video IS over real and generated clips, with the community protocols.

`styleganv` (default): 2048 real clips of 16 consecutive frames (one per video at a random start,
videos drawn without replacement), 2048 generated clips (their first frames), biased covariance
(1/N), half-pixel bilinear resize. `tf`: the original TF FVD: unbiased covariance (1/(N-1)) and
TF1's legacy bilinear resize. Real statistics are cached under a hash of everything that changes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hpdm_core import distributed as dist_lib
from hpdm_core.data.h5store import VideoStore
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.metrics.detectors import (load_c3d, load_i3d, missing_c3d, missing_i3d, random_i3d_detector,
                                         weights_hash)
from hpdm_core.metrics.frechet import FeatureStats, fid_from_stats
from hpdm_core.metrics.i3d import StyleGANVI3D
from hpdm_core.metrics.inception_score import inception_score

VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".webm", ".mkv", ".mov")
CACHE_VERSION = 1
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Protocol:
    name: str
    num: int
    frames: int
    unbiased: bool
    resize: str


PROTOCOLS = {
    "styleganv": Protocol("styleganv", num=2048, frames=16, unbiased=False, resize="torch"),
    "tf": Protocol("tf", num=2048, frames=16, unbiased=True, resize="tf"),
}
IS_SPLITS = 10


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise BadInputError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def cache_root() -> Path:
    return Path(os.environ.get("HPDM_CACHE", Path.home() / ".cache" / "hpdm"))


# ---- clips -------------------------------------------------------------------------------------

def clip_span(frames: int, subsample: int) -> int:
    return (frames - 1) * subsample + 1


def real_clips(store: VideoStore, num: int, frames: int, subsample: int = 1, seed: int = 0,
               select: Sequence[int] | None = None) -> tuple[Iterator[np.ndarray], int, int]:
    """(clips, how many, how many videos were too short). One clip per video at a random start,
    videos in a seeded random order; when `num` exceeds the videos, another pass with new starts.
    `select`: read only these clip positions (a rank's shard); the draw of every clip is unchanged."""
    span = clip_span(frames, subsample)
    lengths = store.lengths
    eligible = np.flatnonzero(lengths >= span)
    if len(eligible) == 0:
        raise BadInputError(f"{store.path}: no video has the {span} frames a clip of {frames} frames "
                            f"with subsample {subsample} needs (longest: {int(lengths.max(initial=0))})")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(eligible) for _ in range(-(-num // len(eligible)))])[:num]
    starts = [int(rng.integers(0, lengths[i] - span + 1)) for i in order]

    def generate():
        for position in (range(len(order)) if select is None else select):
            yield store.video(int(order[position]), starts[position], frames, subsample)

    return generate(), len(order), int(len(lengths) - len(eligible))


def _npz_videos(path: Path) -> np.ndarray:
    with np.load(path) as arrays:
        names = arrays.files
        key = "videos" if "videos" in names else (names[0] if len(names) == 1 else None)
        if key is None:
            raise BadInputError(f"{path}: expected one array (or one named 'videos') uint8 [N, F, H, W, 3]; found {names}")
        videos = arrays[key]
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise BadInputError(f"{path}: expected uint8 [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    return videos


def _read_video_file(path: Path, max_frames: int) -> np.ndarray:
    from hpdm_core.data.video_io import read_video

    return read_video(path, max_frames=max_frames)


def fake_clips(path: str | os.PathLike, num: int, frames: int, subsample: int = 1,
               select: Sequence[int] | None = None) -> tuple[Iterator[np.ndarray], int]:
    """(clips, how many): the first `frames` frames (every `subsample`-th) of up to `num` generated
    videos from a dataset file (.h5), a folder of video files, or an npz uint8 [N, F, H, W, 3].
    `select`: read only these positions (a rank's shard); `how many` still counts them all."""
    path = Path(path)
    span = clip_span(frames, subsample)
    if not path.exists():
        raise MissingResourceError(f"generated videos {path} not found")

    def positions(count: int) -> Sequence[int]:
        return range(count) if select is None else [i for i in select if i < count]

    def check(clip: np.ndarray, name: str) -> np.ndarray:
        if clip.shape[0] < span:
            raise BadInputError(f"generated video {name} has {clip.shape[0]} frames; clips of {frames} frames "
                                f"(subsample {subsample}) need {span}. Generate longer videos or lower --frames")
        return clip[:span:subsample]

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)[:num]
        if not files:
            raise BadInputError(f"{path} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
        return (check(_read_video_file(files[i], span), files[i].name) for i in positions(len(files))), len(files)
    if path.suffix == ".npz":
        videos = _npz_videos(path)[:num]
        return (check(videos[i], f"{path.name}[{i}]") for i in positions(len(videos))), len(videos)
    if path.suffix in (".h5", ".hdf5"):
        store = VideoStore(path)
        count = min(num, len(store))
        return (check(store.video(i, 0, span), f"{path.name}[{i}]") for i in positions(count)), count
    raise BadInputError(f"{path}: generated videos must be a dataset file (.h5), a folder of videos or an .npz")


def _resize_clip(clip: np.ndarray, resolution: int | None) -> np.ndarray:
    if resolution is None or clip.shape[1:3] == (resolution, resolution):
        return clip
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def batches(clips: Iterable[np.ndarray], batch_size: int, resolution: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 tensors [B, F, H, W, 3] from single clips (all clips of one batch must share a shape)."""
    batch: list[np.ndarray] = []
    for clip in clips:
        batch.append(_resize_clip(np.asarray(clip), resolution))
        if len(batch) == batch_size:
            yield torch.from_numpy(np.stack(batch))
            batch = []
    if batch:
        yield torch.from_numpy(np.stack(batch))


# ---- features ----------------------------------------------------------------------------------

def _device_of(detector: torch.nn.Module) -> torch.device:
    for tensor in list(detector.parameters()) + list(detector.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def detector_outputs(clips: Iterable[np.ndarray], detector: torch.nn.Module, batch_size: int = 8,
                     resolution: int | None = None, progress: Progress | None = None,
                     label: str = "clips", total: int = 0) -> Iterator[torch.Tensor]:
    device, done = _device_of(detector), 0
    for batch in batches(clips, batch_size, resolution):
        if batch.shape[1] < detector.min_frames:
            raise BadInputError(f"{detector.name} needs clips of at least {detector.min_frames} frames, "
                                f"got {batch.shape[1]}")
        yield detector(batch.to(device)).cpu()
        done += batch.shape[0]
        if progress is not None:
            progress(label, done, total)


def compute_feature_stats(clips: Iterable[np.ndarray], detector: torch.nn.Module, batch_size: int = 8,
                          resolution: int | None = None, progress: Progress | None = None,
                          label: str = "clips", total: int = 0) -> FeatureStats:
    """float64 streaming statistics of the detector's features over uint8 clips [F, H, W, 3]."""
    stats = FeatureStats(detector.feature_dim)
    for features in detector_outputs(clips, detector, batch_size, resolution, progress, label, total):
        stats.update(features)
    return stats


def compute_fvd(real_videos: Iterable[np.ndarray], fake_videos: Iterable[np.ndarray], detector: torch.nn.Module,
                protocol: str = "styleganv", batch_size: int = 8) -> float:
    """FVD between two collections of uint8 clips [F, H, W, 3] (both already sampled as the protocol
    says) with an I3D detector from `load_i3d` or `random_i3d_detector`."""
    unbiased = get_protocol(protocol).unbiased
    real = compute_feature_stats(real_videos, detector, batch_size)
    fake = compute_feature_stats(fake_videos, detector, batch_size)
    return fid_from_stats(real, fake, unbiased)


def compute_is(fake_videos: Iterable[np.ndarray], classifier: torch.nn.Module, batch_size: int = 8,
               splits: int = IS_SPLITS) -> tuple[float, float]:
    """Video IS (mean, std over `splits`) with a C3D classifier from `load_c3d`."""
    probs = torch.cat(list(detector_outputs(fake_videos, classifier, batch_size))).numpy()
    return inception_score(probs, splits)


# ---- cache -------------------------------------------------------------------------------------

def real_stats_key(real_path: Path, detector_id: str, protocol: Protocol, num: int, frames: int, subsample: int,
                   resolution: int | None, seed: int) -> str:
    stat = real_path.stat()
    fields = {"version": CACHE_VERSION, "real": str(real_path.resolve()), "size": stat.st_size,
              "mtime_ns": stat.st_mtime_ns, "detector": detector_id, "protocol": protocol.name,
              "resize": protocol.resize, "num": num, "frames": frames, "subsample": subsample,
              "resolution": resolution, "seed": seed}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def load_cached_stats(path: Path) -> FeatureStats | None:
    try:
        with np.load(path) as arrays:
            return FeatureStats.from_arrays(arrays)
    except (OSError, KeyError, ValueError):
        return None  # unreadable cache entries are recomputed


def save_cached_stats(path: Path, stats: FeatureStats) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **stats.to_arrays())
    os.replace(tmp, path)


# ---- the whole evaluation ----------------------------------------------------------------------

def evaluate(real: str | os.PathLike, fake: str | os.PathLike, i3d: str | os.PathLike | None = None,
             c3d: str | os.PathLike | None = None, c3d_mean: str | os.PathLike | None = None,
             random_i3d_seed: int | None = None, protocol: str = "styleganv", num: int | None = None,
             frames: int | None = None, subsample: int = 1, resolution: int | None = None, seed: int = 0,
             batch_size: int = 8, device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
             use_cache: bool = True, progress: Progress | None = None, distributed: bool = False) -> dict | None:
    """FVD (and IS when `c3d` is given) of generated videos `fake` against the dataset file `real`.

    distributed=True (under torchrun): every rank reads and embeds a contiguous shard of the real and
    the generated clips; the float64 statistics are summed over ranks (equal to one process's) and
    rank 0 alone writes the cache and returns the result (the other ranks return None).

    Returns a JSON-ready dict; `comparable` is False (with the reasons in `warnings`) when the
    number cannot be compared with published ones.
    """
    proto = get_protocol(protocol)
    num = proto.num if num is None else num
    frames = proto.frames if frames is None else frames
    if num < 2 or frames < 1 or subsample < 1:
        raise BadInputError(f"need --num >= 2, --frames >= 1 and --subsample >= 1 (got {num}, {frames}, {subsample})")
    notes: list[str] = []
    if i3d is None and random_i3d_seed is None:
        raise missing_i3d("(none given)")
    if i3d is not None:
        detector = load_i3d(i3d, resize=proto.resize, device=device)
        # A TorchScript detector resizes internally; our network's resize mode is part of the key.
        detector_id = weights_hash(i3d) + ("" if isinstance(detector, StyleGANVI3D) else f"-{proto.resize}")
    else:
        detector = random_i3d_detector(random_i3d_seed, resize=proto.resize, device=device)
        detector_id = f"random-i3d-seed{random_i3d_seed}"
        notes.append("FVD uses a random-weight I3D: a proxy for relative comparisons, not the published metric")
    if frames < detector.min_frames:
        raise BadInputError(f"I3D needs clips of at least {detector.min_frames} frames; --frames is {frames}")
    classifier = None
    if c3d is not None:
        if not Path(c3d).exists():
            raise missing_c3d(c3d)
        classifier = load_c3d(c3d, c3d_mean, device=device)
        if frames < classifier.min_frames:
            raise BadInputError(f"C3D needs clips of {classifier.min_frames} frames; --frames is {frames}")
        if frames > classifier.min_frames:
            notes.append(f"IS uses the first {classifier.min_frames} of the {frames} frames of each clip")
    if num != proto.num:
        notes.append(f"FVD@{num}: only comparable with numbers computed on {num} clips")
    if frames != proto.frames:
        notes.append(f"clips of {frames} frames: only comparable with FVD_{frames} numbers")

    real_path = Path(real)
    store = VideoStore(real_path)
    cache_file = None
    if use_cache:
        key = real_stats_key(real_path, detector_id, proto, num, frames, subsample, resolution, seed)
        cache_file = Path(cache_dir) if cache_dir is not None else cache_root()
        cache_file = cache_file / "fvd" / f"{key}.npz"
    real_stats = load_cached_stats(cache_file) if cache_file is not None and cache_file.exists() else None
    if distributed:  # rank 0's view of the cache decides for everyone
        real_stats = dist_lib.broadcast_object(real_stats)
    cache_hit = real_stats is not None
    skipped = 0
    if real_stats is None:
        clips, count, skipped = real_clips(store, num, frames, subsample, seed)
        if distributed:
            clips, _, _ = real_clips(store, num, frames, subsample, seed, select=dist_lib.shard(count))
        real_stats = compute_feature_stats(clips, detector, batch_size, resolution, progress, "real clips", count)
        if distributed:
            real_stats = dist_lib.merge_feature_stats(real_stats)
        if cache_file is not None and dist_lib.is_main():
            save_cached_stats(cache_file, real_stats)
    clips, fake_count = fake_clips(fake, num, frames, subsample)
    if distributed:
        clips, _ = fake_clips(fake, num, frames, subsample, select=dist_lib.shard(fake_count))
    if progress is not None:
        progress("generated clips", 0, fake_count)
    if fake_count < 2:
        raise BadInputError(f"{fake}: FVD needs at least 2 generated videos, found {fake_count}")
    if fake_count < num:
        notes.append(f"only {fake_count} generated videos for FVD@{num}: the number is not comparable")
    if real_stats.count < num:
        notes.append(f"only {real_stats.count} real clips for FVD@{num}: the number is not comparable")

    fake_stats = FeatureStats(detector.feature_dim)
    probs = []
    for batch in batches(clips, batch_size, resolution):
        batch = batch.to(_device_of(detector))
        with torch.no_grad():
            fake_stats.update(detector(batch))
            if classifier is not None:
                probs.append(classifier(batch).cpu())
        if progress is not None:
            progress("generated clips", fake_stats.count, fake_count)
    if distributed:
        fake_stats = dist_lib.merge_feature_stats(fake_stats)
        gathered = dist_lib.gather_to_main(probs)  # contiguous shards: rank order is sample order (IS splits)
        if gathered is None:
            return None
        probs = [p for part in gathered for p in part]

    result = {
        "fvd": fid_from_stats(real_stats, fake_stats, proto.unbiased),
        "protocol": proto.name, "num": num, "frames": frames, "subsample": subsample, "resolution": resolution,
        "seed": seed, "real_clips": real_stats.count, "fake_clips": fake_stats.count,
        "real_videos_too_short": skipped, "detector": detector.name, "proxy": random_i3d_seed is not None and i3d is None,
        "real_stats_cached": cache_hit, "cache_file": str(cache_file) if cache_file is not None else None,
    }
    if classifier is not None:
        probs_all = torch.cat(probs).numpy()
        if len(probs_all) < IS_SPLITS:
            raise BadInputError(f"IS over {IS_SPLITS} splits needs at least {IS_SPLITS} generated videos")
        result["is_mean"], result["is_std"] = inception_score(probs_all, IS_SPLITS)
        result["classifier"] = classifier.name
    result["comparable"] = not notes
    result["warnings"] = notes
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return result
