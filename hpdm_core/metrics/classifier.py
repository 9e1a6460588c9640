"""A small video classifier trained on a dataset file: a quality measure that needs no download.

Pretrained detectors (I3D, C3D) exist for Kinetics and UCF-101 only. For any other labelled dataset,
and for the synthetic demo, `train_classifier` fits a small 3-D conv net on the file's own labels,
keeping a held-out split of the videos unseen. Generated videos with requested classes are then
scored in its eyes: how often it recognises the requested class (`accuracy`), and the Fréchet
distance between its features of real held-out and generated videos (`fd`). The numbers are
specific to one classifier checkpoint: compare models with the same checkpoint, never across
checkpoints or with published tables.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hpdm_core.checkpoint import load_error_reason
from hpdm_core.data.h5store import VideoStore, dataset_fingerprint, fingerprint_matches
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.files import atomic_save
from hpdm_core.metrics.clips import fake_clips
from hpdm_core.memory import FLOAT, check_fits
from hpdm_core.metrics.frechet import FeatureStats, fid_from_stats
from hpdm_core.precision import autocast
from hpdm_core.seeding import derive_seed

CHECKPOINT_FORMAT = "hpdm-video-classifier"
CHECKPOINT_VERSION = 1
DEFAULT_STEPS = 200
DEFAULT_BATCH_SIZE = 32
DEFAULT_WIDTH = 16
DEFAULT_LR = 3e-3
# Frames are area-downsampled to at most this many pixels a side unless --resolution says otherwise:
# at 64 px training costs four times as much, for no held-out accuracy on the synthetic set.
DEFAULT_MAX_RESOLUTION = 32
MAX_TRAIN_EVAL_VIDEOS = 256  # train accuracy is measured on at most this many training videos

Progress = Callable[[int, int, dict], None]


# ---- the network -------------------------------------------------------------------------------

def _stage(c_in: int, c_out: int, kernel: tuple[int, int, int], pool: tuple[int, int, int] | None) -> list[nn.Module]:
    # Pooling before the norm and ReLU gives the same kind of features for a quarter of their cost.
    layers = [nn.Conv3d(c_in, c_out, kernel, padding=tuple(k // 2 for k in kernel), bias=False)]
    layers += [nn.MaxPool3d(pool, ceil_mode=True)] if pool else []
    return layers + [nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


class VideoClassifier(nn.Module):
    """uint8 videos [N, F, H, W, 3] -> features [N, 8 * width] -> logits over the dataset's classes.

    Two per-frame stages (1x3x3 convs) find edges and parts; two 3x3x3 stages add motion; a global
    average pool gives the feature vector the Fréchet distance is measured in. Each stage is conv,
    2x max pool (time too from the second on), BatchNorm and ReLU. Measured on the synthetic set,
    whose classes 0 and 7 share a colour and differ only in shape: with strided convs, patch stems or
    GroupNorm instead, that pair stayed near chance on unseen videos after 1000 steps while the
    training loss fell; with max pooling and BatchNorm it is separated within 300 steps.
    """

    def __init__(self, num_classes: int, frames: int = 16, resolution: int = 32, width: int = DEFAULT_WIDTH,
                 class_names: Sequence[str] | None = None):
        super().__init__()
        if num_classes < 1 or frames < 1 or resolution < 1 or width < 1:
            raise BadInputError(f"classes, frames, resolution and width must be positive "
                                f"(got {num_classes}, {frames}, {resolution}, {width})")
        self.num_classes, self.frames, self.resolution, self.width = num_classes, frames, resolution, width
        self.class_names = list(class_names) if class_names else [f"class_{k}" for k in range(num_classes)]
        w = width
        self.body = nn.Sequential(
            *_stage(3, w, (1, 3, 3), (1, 2, 2)),
            *_stage(w, 2 * w, (1, 3, 3), (2, 2, 2)),
            *_stage(2 * w, 4 * w, (3, 3, 3), (2, 2, 2)),
            *_stage(4 * w, 8 * w, (3, 3, 3), None),
        )
        self.head = nn.Linear(8 * w, num_classes)
        self.feature_dim = 8 * w
        # Filled in by load_classifier: where the classifier came from and what it never saw.
        self.data_path: str | None = None
        self.data_fingerprint: str | None = None
        self.heldout = np.zeros(0, np.int64)
        self.heldout_labels = np.zeros(0, np.int64)
        self.heldout_accuracy: float | None = None

    def arch(self) -> dict:
        return {"num_classes": self.num_classes, "frames": self.frames, "resolution": self.resolution,
                "width": self.width}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, 3, F, H, W] in [-1, 1] -> [B, feature_dim]."""
        # Channels-last tensors take oneDNN's fast 3-D convolutions (about 1.7x faster on a CPU).
        return self.body(x.contiguous(memory_format=torch.channels_last_3d)).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def prepare(self, videos) -> torch.Tensor:
        """uint8 [N, F, H, W, 3] (numpy or torch) -> float [N, 3, frames, res, res] in [-1, 1] on its device."""
        videos = torch.as_tensor(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos)
        if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise BadInputError(f"expected uint8 videos [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
        if videos.shape[1] < self.frames:
            raise BadInputError(f"the classifier looks at {self.frames} frames; these videos have {videos.shape[1]}")
        x = videos[:, :self.frames].to(self.device).permute(0, 4, 1, 2, 3).float()  # [N, 3, F, H, W]
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            size = (self.frames, self.resolution, self.resolution)
            x = F.interpolate(x, size=size, mode="area")
        return x / 127.5 - 1.0

    @torch.no_grad()
    def embed(self, videos) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, D] float64, class probabilities [N, K] float64) of uint8 videos [N, F, H, W, 3]."""
        training = self.training
        self.eval()  # BatchNorm with its running statistics: a video's features do not depend on its batch
        try:
            features = self.features(self.prepare(videos)).float()
        finally:
            self.train(training)
        probs = F.softmax(self.head(features), dim=-1)
        return features.double().cpu().numpy(), probs.double().cpu().numpy()


# ---- the dataset file: labels, split, clips ------------------------------------------------------

def heldout_split(labels: np.ndarray, groups: np.ndarray | None, holdout: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of the held-out videos: about `holdout` of each class, drawn by `seed`.

    Videos of one (class, group) are held out together (UCF-101's clips of one group cut from one
    recording; splitting them would leak near-copies into the held-out set). Videos with group -1
    stand alone; videos with label -1 are never held out. A class with a single unit keeps it for
    training.
    """
    if not 0 <= holdout < 1:
        raise BadInputError(f"--holdout must be in [0, 1), got {holdout}")
    labels = np.asarray(labels, np.int64)
    groups = np.full_like(labels, -1) if groups is None else np.asarray(groups, np.int64)
    rng = np.random.default_rng(derive_seed(seed, 0x5E7))
    held: list[np.ndarray] = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        # Units: one per group >= 0, one per ungrouped video.
        unit_keys = np.where(groups[members] >= 0, groups[members], -1 - np.arange(len(members)))
        units = [members[unit_keys == key] for key in np.unique(unit_keys)]
        target = round(holdout * len(members))
        if len(units) < 2 or target == 0:
            continue
        taken = 0
        for u in rng.permutation(len(units)):
            if taken >= target:
                break
            if taken + len(units[u]) >= len(members):
                continue  # the class keeps at least one unit for training
            held.append(units[u])
            taken += len(units[u])
    return np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)


def first_clips(store: VideoStore, indices: Iterable[int], frames: int) -> Iterator[np.ndarray]:
    """The first `frames` frames of each video (what evaluation reads of generated videos too)."""
    for index in indices:
        yield store.video(int(index), 0, frames)


# ---- training ----------------------------------------------------------------------------------

def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over 5 % of the steps, then a cosine decay to zero."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _train_batch(store: VideoStore, train: np.ndarray, lengths: np.ndarray, labels: np.ndarray, frames: int,
                 batch_size: int, flip: bool, step: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 clips [B, F, H, W, 3], labels [B], flip mask [B]) of one step, drawn from (seed, step)."""
    rng = np.random.default_rng(derive_seed(seed, step, 0xDA7A))
    chosen = rng.choice(train, size=batch_size)
    starts = [rng.integers(0, lengths[i] - frames + 1) for i in chosen]
    flips = rng.random(batch_size) < 0.5 if flip else np.zeros(batch_size, bool)
    clips = np.stack([store.video(int(i), int(s), frames) for i, s in zip(chosen, starts)])
    return clips, labels[chosen], flips


@torch.no_grad()
def _accuracy_on(model: VideoClassifier, store: VideoStore, indices: np.ndarray, labels: np.ndarray,
                 batch_size: int) -> float | None:
    if len(indices) == 0:
        return None
    correct = 0
    for begin in range(0, len(indices), batch_size):
        chunk = indices[begin:begin + batch_size]
        _, probs = model.embed(np.stack(list(first_clips(store, chunk, model.frames))))
        correct += int((probs.argmax(1) == labels[chunk]).sum())
    return correct / len(indices)


def _eligible(store: VideoStore, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, eligible mask): labelled videos with at least `frames` frames."""
    labels = store.labels
    return labels, (labels >= 0) & (store.lengths >= frames)


def _resolution_for(store: VideoStore, resolution: int | None) -> int:
    stored = min(store.resolution)
    resolution = min(stored, DEFAULT_MAX_RESOLUTION) if resolution is None else int(resolution)
    if not 1 <= resolution <= stored:
        raise BadInputError(f"--resolution must be between 1 and the stored {stored} pixels of {store.path}, "
                            f"got {resolution}")
    return resolution


def train_classifier(data: str | os.PathLike, out: str | os.PathLike, *, frames: int = 16,
                     resolution: int | None = None, steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                     holdout: float = 0.1, seed: int = 0, device: str = "cpu", progress: Progress | None = None,
                     width: int = DEFAULT_WIDTH, lr: float = DEFAULT_LR, flip: bool = True) -> dict:
    """Train a VideoClassifier on the labels of dataset file `data` and write it to `out` (atomically).

    Random clips of `frames` consecutive frames, area-downsampled to `resolution` (default: the
    file's, at most DEFAULT_MAX_RESOLUTION), horizontally flipped when `flip` (turn it off for classes
    that differ by left and right). AdamW with warm-up and cosine decay. Returns a summary: held-out
    and train accuracy (on the first `frames` frames of each video), steps, seconds, parameters,
    held-out videos.
    """
    if frames < 1 or steps < 1 or batch_size < 1 or width < 1 or not (math.isfinite(lr) and lr > 0):
        raise BadInputError(f"--frames, --steps, --batch-size and width must be at least 1 and lr positive "
                            f"(got {frames}, {steps}, {batch_size}, {width}, {lr})")
    started = time.perf_counter()
    store = VideoStore(data)
    class_names = store.class_names
    labels, eligible = _eligible(store, frames)
    if not eligible.any():
        raise BadInputError(f"{store.path}: no labelled video with at least {frames} frames to train a classifier on")
    num_classes = max(len(class_names), int(labels.max()) + 1)
    resolution = _resolution_for(store, resolution)
    # A batch's clips (float32) and the first stage's activations (width channels, full size) at least.
    check_fits(batch_size * frames * resolution ** 2 * (3 + width) * FLOAT, device,
               f"a classifier batch of {batch_size} clips", "lower --batch-size")
    candidates = np.flatnonzero(eligible)
    heldout = candidates[heldout_split(labels[candidates], store.groups[candidates], holdout, seed)]
    train = np.setdiff1d(candidates, heldout)
    lengths = store.lengths

    torch.manual_seed(derive_seed(seed, 0x1417))
    model = VideoClassifier(num_classes, frames, resolution, width, class_names or None)
    model = model.to(device, memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps))
    model.train()
    for step in range(steps):
        clips, targets, flips = _train_batch(store, train, lengths, labels, frames, batch_size, flip, step, seed)
        x = model.prepare(clips)
        x = torch.where(torch.as_tensor(flips, device=x.device)[:, None, None, None, None], x.flip(-1), x)
        with autocast(device):
            logits = model(x)
        target = torch.as_tensor(targets, device=x.device)
        loss = F.cross_entropy(logits.float(), target)
        if not torch.isfinite(loss):
            raise BadInputError(f"the classifier's loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            batch_accuracy = (logits.argmax(1) == target).float().mean().item()
            progress(step + 1, steps, {"loss": loss.item(), "batch_accuracy": batch_accuracy})

    model.eval()
    eval_batch = max(batch_size, 16)
    heldout_accuracy = _accuracy_on(model, store, heldout, labels, eval_batch)
    train_subset = train if len(train) <= MAX_TRAIN_EVAL_VIDEOS else np.sort(
        np.random.default_rng(derive_seed(seed, 0x7EA1)).choice(train, MAX_TRAIN_EVAL_VIDEOS, replace=False))
    train_accuracy = _accuracy_on(model, store, train_subset, labels, eval_batch)
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": model.arch(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "class_names": model.class_names, "frames": frames, "resolution": resolution,
        "heldout": torch.from_numpy(heldout.astype(np.int64)),
        "heldout_labels": torch.from_numpy(labels[heldout].astype(np.int64)),
        "heldout_accuracy": heldout_accuracy, "train_accuracy": train_accuracy,
        "data": {"path": str(store.path.resolve()), "fingerprint": dataset_fingerprint(store), "videos": len(labels)},
        "train": {"steps": steps, "batch_size": batch_size, "holdout": holdout, "seed": seed, "lr": lr,
                  "flip": flip, "train_videos": len(train)},
    }
    atomic_save(out, lambda tmp: torch.save(checkpoint, tmp), what="the classifier",
                needed=sum(v.numel() * v.element_size() for v in checkpoint["state_dict"].values()))
    store.close()
    return {
        "out": str(out), "heldout_accuracy": heldout_accuracy, "train_accuracy": train_accuracy, "steps": steps,
        "seconds": round(time.perf_counter() - started, 2),
        "parameters": sum(p.numel() for p in model.parameters()), "heldout_videos": len(heldout),
        "train_videos": len(train), "classes": num_classes, "frames": frames, "resolution": resolution,
        "skipped_videos": int((~eligible).sum()), "device": str(device),
    }


# ---- loading -----------------------------------------------------------------------------------

def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> VideoClassifier:
    """The VideoClassifier of a checkpoint from train_classifier, in eval mode on `device`."""
    path = Path(path)
    if not path.exists():
        raise MissingResourceError(f"classifier {path} not found; train one with "
                                   f"`hpdm train-classifier --data FILE.h5 --out {path}`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights-only errors all mean: not our checkpoint
        raise BadInputError(f"{path} is not a classifier checkpoint from `hpdm train-classifier` "
                            f"({load_error_reason(err)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise BadInputError(f"{path} is not a classifier checkpoint from `hpdm train-classifier`")
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise BadInputError(f"{path} was written by a newer hpdm (classifier format "
                            f"{checkpoint['version']}); upgrade hpdm")
    model = VideoClassifier(**checkpoint["arch"], class_names=checkpoint["class_names"])
    model.load_state_dict(checkpoint["state_dict"])
    model = model.to(memory_format=torch.channels_last_3d)
    model.data_path = checkpoint["data"]["path"]
    model.data_fingerprint = checkpoint["data"]["fingerprint"]
    model.heldout = checkpoint["heldout"].numpy()
    model.heldout_labels = checkpoint["heldout_labels"].numpy()
    model.heldout_accuracy = checkpoint["heldout_accuracy"]
    return model.to(device).eval()


def heldout_videos(classifier: VideoClassifier, data: str | os.PathLike | None = None
                   ) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """(videos, labels) of the classifier's held-out real videos: the reference set it never saw.

    Videos are the first `classifier.frames` frames, read lazily from `data` (default: the dataset
    file recorded at training); the file must be the one it was trained on (same fingerprint).
    """
    path = Path(data if data is not None else classifier.data_path or "")
    if not path.is_file():
        raise MissingResourceError(f"the classifier's dataset file {path} is not here; pass the file it was "
                                   "trained on (e.g. as --real)")
    store = VideoStore(path)
    if not fingerprint_matches(classifier.data_fingerprint, store):
        raise BadInputError(f"{path} is not the dataset file this classifier was trained on (its held-out "
                            "videos are recorded by index in that file)")
    return first_clips(store, classifier.heldout, classifier.frames), classifier.heldout_labels.copy()


# ---- scores ------------------------------------------------------------------------------------

def _embed_all(classifier: VideoClassifier, videos: Iterable, batch_size: int,
               progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    features, probs, batch = [], [], []

    def flush() -> None:
        f, p = classifier.embed(np.stack(batch))
        features.append(f)
        probs.append(p)
        batch.clear()
        if progress is not None:
            progress(sum(len(x) for x in probs))

    for video in videos:
        video = np.asarray(video)
        if batch and video.shape != batch[0].shape:  # a folder of mixed sizes: the classifier resizes each batch
            flush()
        batch.append(video)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not probs:
        return np.zeros((0, classifier.feature_dim)), np.zeros((0, classifier.num_classes))
    return np.concatenate(features), np.concatenate(probs)


def _accuracy(probs: np.ndarray, labels, num_classes: int, what: str) -> float | None:
    """Share of videos whose most likely class is its label; unlabelled (-1) videos do not count."""
    if labels is None:
        return None
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != len(probs):
        raise BadInputError(f"{len(labels)} labels for {len(probs)} {what} videos")
    if labels.size and labels.max() >= num_classes:
        raise BadInputError(f"{what} label {labels.max()} is not one of the classifier's {num_classes} classes")
    known = labels >= 0
    return float((probs[known].argmax(1) == labels[known]).mean()) if known.any() else None


def classifier_scores(classifier: VideoClassifier, fake_videos: Iterable, fake_labels=None,
                      real_videos: Iterable | None = None, real_labels=None, batch_size: int = 16,
                      progress: Callable[[str, int], None] | None = None) -> dict:
    """Generated videos in the classifier's eyes.

    accuracy: share of generated videos classified as their requested class (None without labels);
    fd: Fréchet distance between the real and generated features (biased covariance; None without
    at least 2 videos on each side); real_accuracy: the same accuracy on the real videos given.
    Videos: uint8 [F, H, W, 3] each, an iterable or an array [N, F, H, W, 3].
    """
    def report(label: str) -> Callable[[int], None] | None:
        return None if progress is None else (lambda done: progress(label, done))

    fake_features, fake_probs = _embed_all(classifier, fake_videos, batch_size, report("generated"))
    result = {"accuracy": _accuracy(fake_probs, fake_labels, classifier.num_classes, "generated"),
              "fd": None, "real_accuracy": None, "num_fake": len(fake_probs), "num_real": 0}
    if real_videos is None:
        return result
    real_features, real_probs = _embed_all(classifier, real_videos, batch_size, report("real"))
    result["real_accuracy"] = _accuracy(real_probs, real_labels, classifier.num_classes, "real")
    result["num_real"] = len(real_probs)
    if len(real_features) >= 2 and len(fake_features) >= 2:
        dim = classifier.feature_dim
        real_stats, fake_stats = FeatureStats(dim).update(real_features), FeatureStats(dim).update(fake_features)
        result["fd"] = fid_from_stats(real_stats, fake_stats, unbiased=False)
    return result


# ---- evaluation of a file of generated videos (what `hpdm eval-fvd --classifier` adds) --------------

def generated_labels(path: str | os.PathLike, count: int) -> np.ndarray | None:
    """Requested classes of the first `count` generated videos: an .npz's `labels`, an .h5's labels
    (None when all are -1), None for a folder of videos."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            labels = np.asarray(arrays["labels"], np.int64) if "labels" in arrays.files else None
    elif path.suffix in (".h5", ".hdf5"):
        labels = VideoStore(path).labels
        labels = labels if (labels >= 0).any() else None
    else:
        return None
    if labels is not None and len(labels) < count:
        raise BadInputError(f"{path}: {len(labels)} labels for {count} videos")
    return None if labels is None else labels[:count]


def _reference_file(classifier: VideoClassifier, real: str | os.PathLike | None) -> str | os.PathLike | None:
    """The classifier's dataset file: `real` when it is that file (paths recorded elsewhere move)."""
    if real is not None and Path(real).is_file():
        try:
            if fingerprint_matches(classifier.data_fingerprint, VideoStore(real)):
                return real
        except BadInputError:
            pass
    return None


def classifier_evaluation(checkpoint: str | os.PathLike, fake: str | os.PathLike, *,
                          real: str | os.PathLike | None = None, num: int | None = None, batch_size: int = 16,
                          device: str | torch.device = "cpu",
                          progress: Callable[[str, int, int], None] | None = None) -> dict:
    """classifier_* fields of eval-fvd's result for generated videos `fake` (.h5, folder or .npz).

    The reference is the classifier's held-out real videos, read from `real` when that is the file it
    was trained on, else from the path recorded at training. Notes (e.g. no labels) go to
    `classifier_notes`, apart from FVD's comparability warnings.
    """
    classifier = load_classifier(checkpoint, device)
    clips, count = fake_clips(fake, num if num is not None else 1 << 62, classifier.frames)
    labels = generated_labels(fake, count)
    reference = _reference_file(classifier, real)
    real_videos, real_labels = heldout_videos(classifier, reference)
    totals = {"generated": count, "real": len(real_labels)}

    def report(label: str, done: int) -> None:
        if progress is not None:
            progress(f"classifier: {label} videos", done, totals[label])

    scores = classifier_scores(classifier, clips, labels, real_videos, real_labels, batch_size, report)
    notes = []
    if labels is None:
        notes.append(f"{Path(fake).name} records no requested classes (an .npz `labels` array or .h5 labels do): "
                     "classifier accuracy not computed")
    fake_size = next(fake_clips(fake, 1, classifier.frames)[0]).shape[1:3]
    real_size = VideoStore(reference if reference is not None else classifier.data_path).resolution
    if tuple(fake_size) != tuple(real_size):
        notes.append(f"generated videos are {fake_size[0]}x{fake_size[1]}, the real ones {real_size[0]}x{real_size[1]}: "
                     f"the classifier sees both at {classifier.resolution}x{classifier.resolution}, so its numbers "
                     "mix quality with the size difference; generate at the real videos' size")
    if scores["fd"] is None:
        notes.append(f"classifier FD needs at least 2 generated and 2 held-out real videos "
                     f"(have {scores['num_fake']} and {scores['num_real']})")
    return {"classifier_accuracy": scores["accuracy"], "classifier_fd": scores["fd"],
            "classifier_real_accuracy": scores["real_accuracy"], "classifier_fake_videos": scores["num_fake"],
            "classifier_real_videos": scores["num_real"], "classifier_checkpoint": str(checkpoint),
            "classifier_notes": notes}
