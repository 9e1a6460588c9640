"""What training reads: the data file checked against a config, and every step's batch.

Determinism (docs/design.md, "Conventions"): row j of the global batch of step s draws its clip, start frame,
flip and patch offsets from a generator keyed by (seed, s, j), so any process (rank, DataLoader
worker, a resumed run) builds exactly the same row.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from hpdm_core.config import Config
from hpdm_core.data.h5store import VideoStore, dataset_fingerprint
from hpdm_core.errors import BadInputError
from hpdm_core.pyramid import PatchGeometry, extract_hierarchy, sample_nested_offsets
from hpdm_core.seeding import DATA_STREAM, generator


def check_data(cfg: Config) -> str:
    """The data file's fingerprint; BadInputError (MissingResourceError for no file) unless it can feed this config."""
    store = VideoStore(cfg.data.path)  # raises for a missing, foreign or incomplete file
    frames, height, width = cfg.model.target
    stride = cfg.data.frame_stride
    if stride < 1:
        raise BadInputError("data.frame_stride must be at least 1")
    have_h, have_w = store.resolution
    if have_h < height or have_w < width:
        raise BadInputError(f"{cfg.data.path} holds {have_h}x{have_w} videos but the target is {height}x{width} "
                            f"(model.patch {cfg.model.patch} x 2^{cfg.model.num_levels - 1}); prepare the data at "
                            "a larger resolution or use a smaller model.patch / model.num_levels")
    needed = (frames - 1) * stride + 1
    lengths = store.lengths
    if len(lengths) == 0 or int(lengths.max()) < needed:
        longest = int(lengths.max()) if len(lengths) else 0
        raise BadInputError(f"{cfg.data.path}: every video is shorter than the {needed} frames a target clip needs "
                            f"({frames} frames, data.frame_stride {stride}); the longest has {longest}. Use "
                            "longer videos or a smaller model.patch frames / data.frame_stride")
    labels = store.labels
    if len(labels) and int(labels.max()) >= cfg.model.num_classes:
        raise BadInputError(f"{cfg.data.path} has labels up to {int(labels.max())} but model.num_classes is "
                            f"{cfg.model.num_classes}; use --set model.num_classes={int(labels.max()) + 1}")
    fingerprint = dataset_fingerprint(store)
    store.close()
    return fingerprint


def open_clips(cfg: Config):
    """The ClipDataset at the target resolution (random start frame and flip per read)."""
    from hpdm_core.data.dataset import ClipDataset

    check_data(cfg)
    frames, height, width = cfg.model.target
    return ClipDataset(cfg.data.path, frames=frames, resolution=(height, width), frame_stride=cfg.data.frame_stride,
                       flip=cfg.data.flip)


class StepBatches(Dataset):
    """Item s = this rank's rows of the global batch of step s: patches [B, n, C, f, h, w], offsets [B, n, 3],
    labels [B]; every row draws from its own generator keyed by (seed, s, row)."""

    def __init__(self, clips, geometry: PatchGeometry, rows: range, seed: int, num_steps: int, null_class: int):
        self.clips, self.geometry, self.null_class = clips, geometry, null_class
        self.rows, self.seed, self.num_steps = rows, seed, num_steps

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        clips, labels, offsets = [], [], []
        for row in self.rows:
            # The row's generator picks the video, its start frame and flip, then the patch offsets:
            # the same draws whichever process (rank, DataLoader worker) builds the row.
            g = generator(self.seed, step, row, DATA_STREAM)
            clip, label = self.clips.clip(int(torch.randint(len(self.clips), (1,), generator=g)), g)
            clips.append(clip)
            labels.append(label)
            offsets.append(sample_nested_offsets(1, self.geometry, generator=g))
        clips, offsets = torch.stack(clips).float(), torch.cat(offsets)
        labels = torch.tensor(labels, dtype=torch.long)
        labels = torch.where(labels < 0, self.null_class, labels)  # unlabelled videos train unconditionally
        return {"patches": extract_hierarchy(clips, offsets, self.geometry), "offsets": offsets, "labels": labels}
