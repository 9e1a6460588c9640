"""FVD and video IS over real and generated clips, following two published protocols to the letter.

Protocol `styleganv` (default) is StyleGAN-V's `fvd2048_16f` and `isv2048_ucf`. Sources, all in
universome/stylegan-v: [S1] src/metrics/metric_main.py, [S2] src/metrics/frechet_video_distance.py
(compute_fvd), [S3] src/metrics/metric_utils.py (compute_feature_stats_for_dataset, FeatureStats),
[S4] src/training/dataset.py (VideoFramesFolderDataset), [S5] src/metrics/video_inception_score.py,
[S6] src/scripts/calc_metrics_for_dataset.py.
  real videos  those with at least frames * subsample frames; shorter ones are dropped first
               (discard_short_videos=True [S2]; the filter in [S4] __init__)
  order        by the video's name as stored in the dataset file, in Python's string order: [S4] lists
               its frames folders with sorted(), and a UCF-101 folder is named after its .avi, as ours are
  which        the first num = 2048 in that order (max_items [S1, S3]); fewer eligible videos give
               fewer clips, never a second clip of a video
  clips        one per video: `frames` = 16 frames, every `subsample`-th (1), from a start drawn
               uniformly over every start that fits (random.randint in [S4] __getitem__)
  generated    the first 2048 generated videos (an .h5 in the order of its names, a folder in the
               order of its file names, an .npz in array order), frames from frame 0
               (load_n_consecutive_random_offset=False [S2]); a shorter video is an error
  resolution   real and generated clips reach the detector at one size, the generator's ([S6] gives
               both datasets one `resolution`)
  resize       the TorchScript I3D resizes inside (rescale=True, resize=True [S2]); our own I3D
               resizes each frame to 224x224 with half-pixel bilinear, as that TorchScript does
  value range  uint8 in, [-1, 1] at the network (rescale=True [S2])
  features     the 400 logits before the softmax (return_features=True [S2]), summed in float64 [S3]
  covariance   biased, 1/N (FeatureStats.get_mean_cov [S3])
  IS           C3D probabilities of the first 16 frames of the same 2048 generated videos, shuffled
               with np.random.RandomState(42), 10 splits [S5] (inception_score.py)
  weights      StyleGAN-V's i3d_torchscript.pt / c3d_ucf101.pt or the same networks in other files; every
               result carries the file's sha256, and weights whose hash is documented as another I3D
               (detectors.KNOWN_WEIGHTS) break the rule
  real set     UCF-101 train+test (--split all), frames as StyleGAN-V's convert_videos_to_frames.py makes
               them (prepare ucf101 --preparation styleganv); the file records both and so does the result
  no resize    clips reach the detector at the size they were prepared at: --resolution breaks the rule
Protocol `tf` is the original TensorFlow FVD. Sources: [T1] google-research/google-research,
frechet_video_distance/frechet_video_distance.py; [T2] tensorflow/gan,
tensorflow_gan/python/eval/classifier_metrics.py (frechet_classifier_distance_from_activations).
  resize       every frame to 224x224 with TF1's tf.image.resize_bilinear, no half-pixel centres
               (preprocess [T1]); a TorchScript I3D resizes its own way, so it breaks this rule
  value range  2 * x / 255 - 1 after the resize (preprocess [T1])
  features     TF-Hub deepmind/i3d-kinetics-400/1 logits, RGB/inception_i3d/Mean:0 (create_id3_embedding [T1])
  covariance   unbiased, 1/(N-1), in float64 [T2]
  the rest     [T1] embeds whatever videos it is handed: which videos, their order, how many, the
               clips, the resolution rule and the IS are not defined there, so `tf` takes them from
               `styleganv` above. A `tf` result is therefore comparable with other hpdm `tf` results,
               not with published TF-FVD tables (the result's `comparable_with` says so).
What we cannot reproduce bit for bit: StyleGAN-V draws each start with Python's `random` inside its
DataLoader workers, each seeded from torch's global RNG when the loader starts, so its starts follow
process state, not a seed. We draw from the same distribution with np.random.default_rng(seed), one
draw per chosen video in the order above; --seed picks the draw and keys the cache.
`comparable` is True only when every rule above held; each broken rule is one entry of `warnings`.
Real statistics are cached under a hash of everything that changes them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from hpdm_core import distributed as dist_lib
from hpdm_core.distributed import as_device
from hpdm_core.data.h5store import VideoStore
from hpdm_core.errors import BadInputError
from hpdm_core.memory import check_fits, fvd_batch_bytes
from hpdm_core.metrics.classifier import classifier_evaluation
from hpdm_core.metrics.clips import RealClipChoice, choose_real_clips, fake_clips, read_real_clips, required_length
from hpdm_core.metrics.detectors import identify_weights, load_c3d, load_i3d, random_i3d_detector, weights_hash
from hpdm_core.metrics.frechet import FeatureStats, cache_file, fid_from_stats, load_stats, save_stats
from hpdm_core.metrics.i3d import StyleGANVI3D
from hpdm_core.metrics.inception_score import IS_SPLITS, inception_score
from hpdm_core.metrics.options import EvalOptions

CACHE_VERSION = 2  # 2: real clips are the first videos by name, one clip each
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Protocol:
    name: str
    num: int
    frames: int
    unbiased: bool
    resize: str
    subsample: int = 1


PROTOCOLS = {
    "styleganv": Protocol("styleganv", num=2048, frames=16, unbiased=False, resize="torch"),
    "tf": Protocol("tf", num=2048, frames=16, unbiased=True, resize="tf"),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise BadInputError(f"unknown `protocol` {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def cache_root() -> Path:
    return Path(os.environ.get("HPDM_CACHE", Path.home() / ".cache" / "hpdm"))


# ---- clips -------------------------------------------------------------------------------------

def _resize_clip(clip: np.ndarray, resolution: int | None) -> np.ndarray:
    if resolution is None or clip.shape[1:3] == (resolution, resolution):
        return clip
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def batches(clips: Iterable[np.ndarray], batch_size: int, resolution: int | None = None) -> Iterator[torch.Tensor]:
    """uint8 tensors [B, F, H, W, 3] from single clips (all clips of one batch must share a shape)."""
    batch: list[np.ndarray] = []
    shape = None
    for clip in clips:
        batch.append(_resize_clip(np.asarray(clip), resolution))
        if shape is None:
            shape = batch[-1].shape
        elif batch[-1].shape != shape:
            raise BadInputError(f"videos of different sizes ({'x'.join(map(str, shape[1:3]))} and "
                                f"{'x'.join(map(str, batch[-1].shape[1:3]))}): give `resolution` to bring them to one")
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


def compute_is(fake_videos: Iterable[np.ndarray], c3d: torch.nn.Module, batch_size: int = 8,
               splits: int = IS_SPLITS) -> tuple[float, float]:
    """Video IS (mean, std over `splits`) of uint8 clips [F, H, W, 3] in their given order (the
    first 2048 generated videos for the protocols) with a C3D network from `load_c3d`, which
    looks at the first 16 frames; the probabilities are shuffled as StyleGAN-V does (inception_score.py)."""
    probs = torch.cat(list(detector_outputs(fake_videos, c3d, batch_size))).numpy()
    return inception_score(probs, splits)


# ---- cache -------------------------------------------------------------------------------------

def real_stats_fields(real_path: Path, detector_id: str, protocol: Protocol, num: int, frames: int,
                      subsample: int, resolution: int | None, seed: int, repeat: bool = False) -> dict:
    """Everything that changes the real statistics: their cache key."""
    stat = real_path.stat()
    return {"version": CACHE_VERSION, "real": str(real_path.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "detector": detector_id, "protocol": protocol.name,
            "resize": protocol.resize, "num": num, "frames": frames, "subsample": subsample,
            "resolution": resolution, "seed": seed, "repeat": repeat}


# ---- the whole evaluation ----------------------------------------------------------------------

# What a `comparable: true` result may be compared with.
COMPARABLE_WITH = {
    "styleganv": "FVD numbers computed with StyleGAN-V's fvd2048_16f (and its isv2048_ucf)",
    "tf": "other hpdm results under --protocol tf: TF's FVD code defines no choice of videos or clips, so the "
          "clips are hpdm's own (StyleGAN-V's choice), not those of any published TF-FVD table",
}


def real_provenance(store: VideoStore) -> dict:
    """Where the real videos come from, as the dataset file records it: source, split, fold, preparation."""
    attrs = store.attrs
    source = attrs.get("source", "")
    # Files written before the attribute: hpdm's UCF-101 frames were always area-resized.
    preparation = attrs.get("preparation") or ("area" if source == "ucf101" else source or "unknown")
    return {"path": str(store.path), "source": source, "split": attrs.get("split", ""),
            "fold": int(attrs.get("fold", 0)), "preparation": preparation, "videos": len(store),
            "resolution": list(store.resolution)}


def protocol_deviations(proto: Protocol, num: int, frames: int, subsample: int, choice: RealClipChoice,
                        real_count: int, fake_count: int, sizes: tuple[tuple[int, int], tuple[int, int]],
                        scripted_i3d: bool, with_is: bool, real_data: dict | None = None,
                        resized: bool = False) -> list[str]:
    """Every rule of the protocol (module docstring) that this evaluation breaks, one message each."""
    reasons = []
    if resized:
        reasons.append("--resolution resizes the clips before the detector; the references feed the videos at the "
                       "size they were prepared at")
    if real_data is not None and real_data["source"] == "ucf101":
        if real_data["split"] != "all":
            reasons.append(f"the real set is UCF-101's {real_data['split']} split; the protocol's is train+test "
                           "(prepare with --split all): its first videos by name cover other classes")
        if proto.name == "styleganv" and real_data["preparation"] != "styleganv":
            reasons.append(f"the real frames were prepared with {real_data['preparation']!r} resizing; StyleGAN-V's "
                           "are LANCZOS-resized JPEGs (prepare with --preparation styleganv)")
    if scripted_i3d and proto.resize == "tf":
        reasons.append("the TorchScript I3D resizes frames its own way; the tf protocol resizes with TF1's legacy "
                       "resize_bilinear (pass a state dict or the TF-Hub folder with --i3d)")
    if num != proto.num:
        reasons.append(f"FVD@{num}: only comparable with numbers computed on {num} clips")
    if frames != proto.frames:
        reasons.append(f"clips of {frames} frames: only comparable with FVD_{frames} numbers")
    if subsample != proto.subsample:
        reasons.append(f"subsample {subsample}: only comparable with numbers that subsample frames the same way")
    if choice.repeated:
        reasons.append(f"real videos repeated: {len(choice)} clips from {choice.eligible} videos (up to "
                       f"{choice.most_per_video} per video); the protocol takes one clip per video")
    elif real_count < num:
        reasons.append(f"only {choice.eligible} real videos have the {required_length(frames, subsample)} frames a "
                       f"clip needs, so {real_count} real clips for FVD@{num}: the number is not comparable")
    if fake_count < num:
        reasons.append(f"only {fake_count} generated videos for FVD@{num}: the number is not comparable")
    (real_h, real_w), (fake_h, fake_w) = sizes
    if (real_h, real_w) != (fake_h, fake_w):
        reasons.append(f"real clips reach the detector at {real_h}x{real_w}, generated ones at {fake_h}x{fake_w}: "
                       "use one size (--resolution, or a real set prepared at the generator's size)")
    if with_is and fake_count != proto.num:
        reasons.append(f"IS over {fake_count} generated videos: the protocol's IS uses {proto.num}")
    if with_is and subsample != 1:
        reasons.append(f"IS on clips subsampled by {subsample}: the protocol's IS takes 16 consecutive frames")
    return reasons


def evaluate(real: str | os.PathLike, fake: str | os.PathLike, options: EvalOptions, *,
             progress: Progress | None = None, distributed: bool = False) -> dict | None:
    """FVD (and IS when `options.c3d` is given) of generated videos `fake` against the dataset file `real`.

    options.repeat_real (not a protocol): with fewer long-enough real videos than `num`, take further
    clips of the same videos (new starts) up to `num`; the result says so and is not comparable.

    options.classifier: a checkpoint of `hpdm train-classifier`; adds classifier_accuracy, classifier_fd and
    classifier_real_accuracy (against its held-out real videos). Given alone (no I3D), FVD is not
    computed: `fvd` is None and a warning says so.

    distributed=True (under torchrun): every rank reads and embeds a contiguous shard of the real and
    the generated clips; the float64 statistics are summed over ranks (equal to one process's) and
    rank 0 alone writes the cache and returns the result (the other ranks return None).

    Returns a JSON-ready dict; `comparable` is False (with the reasons in `warnings`) when the
    number cannot be compared with published ones. (In it `classifier` and `classifier_sha256` are the
    C3D's, and the `classifier_*` scores the trained classifier's: the names eval-fvd's --json has always had.)
    """
    o = options.validate()
    proto = get_protocol(o.protocol)
    num = proto.num if o.num is None else o.num
    frames = proto.frames if o.frames is None else o.frames
    subsample, resolution, seed, batch_size = o.subsample, o.resolution, o.seed, o.batch_size
    device = as_device(o.device)
    check_fits(fvd_batch_bytes(batch_size, frames), device, f"an FVD batch of {batch_size} clips of {frames} frames",
               "lower `batch_size`")
    notes: list[str] = []
    if o.i3d is None and o.random_i3d_seed is None:  # the trained classifier's scores alone
        if distributed and not dist_lib.is_main():
            return None
        scores = classifier_evaluation(o.classifier, fake, real=real, num=num, batch_size=batch_size,
                                       device=device, progress=progress)
        notes.append("FVD not computed: it needs I3D weights (`i3d`) or a proxy (`random_i3d_seed`)")
        return {"fvd": None, "protocol": proto.name, "num": num, "frames": frames, "detector": None, "proxy": False,
                "real_clips": None, "fake_clips": None, **scores, "comparable": False, "warnings": notes}
    weights = None
    if o.i3d is not None:
        detector = load_i3d(o.i3d, resize=proto.resize, device=device)
        weights = identify_weights(weights_hash(o.i3d))
        # A TorchScript detector resizes internally; our network's resize mode is part of the key.
        detector_id = weights["sha256"] + ("" if isinstance(detector, StyleGANVI3D) else f"-{proto.resize}")
        if weights["tfhub_i3d"] is False:
            notes.append(f"the I3D weights are {weights['known_as']}, not the TF-Hub I3D that published FVD uses "
                         "(StyleGAN-V reports that they give other numbers)")
    else:
        detector = random_i3d_detector(o.random_i3d_seed, resize=proto.resize, device=device)
        detector_id = f"random-i3d-seed{o.random_i3d_seed}"
        notes.append("FVD uses a random-weight I3D: a proxy for relative comparisons, not the published metric")
    if frames < detector.min_frames:
        raise BadInputError(f"I3D needs clips of at least {detector.min_frames} frames; `frames` is {frames}")
    c3d = None  # the C3D of the video IS (not the trained classifier of options.classifier)
    if o.c3d is not None:
        c3d = load_c3d(o.c3d, o.c3d_mean, device=device)
        c3d_weights = identify_weights(weights_hash(o.c3d))
        if frames < c3d.min_frames:
            raise BadInputError(f"C3D needs clips of {c3d.min_frames} frames; `frames` is {frames}")

    real_path = Path(real)
    store = VideoStore(real_path)
    choice = choose_real_clips(store, num, frames, subsample, seed, o.repeat_real)  # cheap: names and lengths
    stats_file = None
    if o.use_cache:
        stats_file = cache_file(Path(o.cache_dir or cache_root()) / "fvd", real_stats_fields(
            real_path, detector_id, proto, num, frames, subsample, resolution, seed, o.repeat_real))
    cached = load_stats(stats_file) if stats_file is not None and stats_file.exists() else None
    real_stats = cached[0] if cached else None
    cache_note = None
    if distributed:  # rank 0's view of the cache decides for everyone
        real_stats = dist_lib.broadcast_object(real_stats)
    cache_hit = real_stats is not None
    if real_stats is None:
        select = dist_lib.shard(len(choice)) if distributed else None
        clips = read_real_clips(store, choice, frames, subsample, select)
        real_stats = compute_feature_stats(clips, detector, batch_size, resolution, progress, "real clips", len(choice))
        if distributed:
            real_stats = dist_lib.merge_feature_stats(real_stats)
        if stats_file is not None and dist_lib.is_main():
            cache_note = save_stats(stats_file, [real_stats])
    clips, fake_count = fake_clips(fake, num, frames, subsample)
    if distributed:
        clips, _ = fake_clips(fake, num, frames, subsample, select=dist_lib.shard(fake_count))
    if progress is not None:
        progress("generated clips", 0, fake_count)
    if fake_count < 2:
        raise BadInputError(f"{fake}: FVD needs at least 2 generated videos, found {fake_count}")
    stored = (store.resolution, tuple(int(n) for n in next(fake_clips(fake, 1, frames, subsample)[0]).shape[1:3]))
    sizes = ((resolution, resolution),) * 2 if resolution is not None else stored  # what the detector sees
    real_data = real_provenance(store)
    notes += protocol_deviations(proto, num, frames, subsample, choice, real_stats.count, fake_count, sizes,
                                 isinstance(detector, StyleGANVI3D), c3d is not None, real_data,
                                 resized=resolution is not None and any(s != (resolution, resolution) for s in stored))

    fake_stats = FeatureStats(detector.feature_dim)
    probs = []
    for batch in batches(clips, batch_size, resolution):
        batch = batch.to(_device_of(detector))
        with torch.no_grad():
            fake_stats.update(detector(batch))
            if c3d is not None:
                probs.append(c3d(batch).cpu())
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
        "real_videos_too_short": choice.too_short, "real_clips_repeated": choice.repeated,
        "detector": detector.name, "proxy": o.i3d is None,
        "detector_sha256": weights["sha256"] if weights else None,
        "detector_weights": (weights["known_as"] or "no documented hash to check it against") if weights else None,
        "real_data": real_data, "comparable_with": COMPARABLE_WITH[proto.name],
        "real_stats_cached": cache_hit, "cache_file": str(stats_file) if stats_file is not None else None,
    }
    if c3d is not None:
        probs_all = torch.cat(probs).numpy()
        if len(probs_all) < IS_SPLITS:
            raise BadInputError(f"IS over {IS_SPLITS} splits needs at least {IS_SPLITS} generated videos")
        result["is_mean"], result["is_std"] = inception_score(probs_all, IS_SPLITS)
        result["classifier"] = c3d.name
        result["classifier_sha256"] = c3d_weights["sha256"]
    if o.classifier is not None:  # its notes are not about FVD's comparability: kept apart
        result.update(classifier_evaluation(o.classifier, fake, real=real, num=num, batch_size=batch_size,
                                            device=device, progress=progress))
    result["comparable"] = not notes
    result["warnings"] = notes
    if cache_note:  # not about comparability: apart from the warnings
        result["cache_notes"] = [cache_note]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return result
