"""What training reads: the data file checked against a config, and every step's batch.

Determinism (docs/design.md, "Conventions"): row j of the global batch of step s draws its clip, start frame,
flip and patch offsets from a generator keyed by (seed, s, j), so any process (rank, DataLoader
worker, a resumed run) builds exactly the same row.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from hpdm_core.config import Config
from hpdm_core.data.dataset import to_unit
from hpdm_core.data.h5store import VideoStore, dataset_fingerprint
from hpdm_core.errors import BadInputError
from hpdm_core.pyramid import PatchGeometry, extract_chain, sample_nested_offsets
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
    if cfg.model.conditioning == "class" and len(labels) and int(labels.max()) >= cfg.model.num_classes:
        raise BadInputError(f"{cfg.data.path} has labels up to {int(labels.max())} but model.num_classes is "
                            f"{cfg.model.num_classes}; use --set model.num_classes={int(labels.max()) + 1}")
    fingerprint = dataset_fingerprint(store)
    store.close()
    if cfg.model.conditioning == "text":
        check_text(cfg)
    return fingerprint


def check_text(cfg: Config) -> dict:
    """The text embeddings' info (encoder, fingerprint, dim) of the data file; BadInputError unless a
    text-conditional config can train on them."""
    from hpdm_core.text.store import TextEmbeddings

    info = TextEmbeddings(cfg.data.path).info  # raises when the file holds no (complete) embeddings
    if int(info["dim"]) != cfg.model.text_dim:
        raise BadInputError(f"{cfg.data.path} holds text embeddings of width {info['dim']} (encoder "
                            f"{info.get('encoder', '?')}) but model.text_dim is {cfg.model.text_dim}; use "
                            f"--set model.text_dim={info['dim']} or encode the captions with the model's encoder")
    return info


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

    def __init__(self, clips, geometry: PatchGeometry, rows: range, seed: int, num_steps: int, null_class: int,
                 text=None):
        self.clips, self.geometry, self.null_class = clips, geometry, null_class
        self.rows, self.seed, self.num_steps = rows, seed, num_steps
        self.text = text  # text.store.TextEmbeddings of the file: rows then carry text_tokens, text_mask

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        # Host memory stays what the batch keeps (2.4 MB a row at the paper's size): each row's clip is
        # read as uint8, its patches are cut and pooled from only the regions they cover (extract_chain,
        # the same float32 numbers as stacking the float clips and pooling them whole: 50 MB a row), and
        # it is freed before the next row is read. In a DataLoader worker the batch is allocated in
        # shared memory, so sending it to the main process copies nothing.
        patches, labels, offsets, videos = None, [], [], []
        for j, row in enumerate(self.rows):
            # The row's generator picks the video, its start frame and flip, then the patch offsets:
            # the same draws whichever process (rank, DataLoader worker) builds the row.
            g = generator(self.seed, step, row, DATA_STREAM)
            index = int(torch.randint(len(self.clips), (1,), generator=g))
            pixels, label = self.clips.pixels(index, g)
            videos.append(int(self.clips.indices[index]))
            labels.append(label)
            offsets.append(sample_nested_offsets(1, self.geometry, generator=g))
            if patches is None:
                patches = self._empty_patches(pixels.shape[0])
            extract_chain(pixels, offsets[-1][0], self.geometry, to_unit, out=patches[j])
            del pixels
        offsets = torch.cat(offsets)
        labels = torch.tensor(labels, dtype=torch.long)
        labels = torch.where(labels < 0, self.null_class, labels)  # unlabelled videos train unconditionally
        batch = {"patches": patches, "offsets": offsets, "labels": labels}
        if self.text is not None:
            # HDF5 reads want increasing, distinct indices: read each video once, then put the rows in order.
            unique, order = np.unique(np.asarray(videos), return_inverse=True)
            tokens, mask = self.text.rows(unique.tolist())
            batch["text_tokens"] = torch.from_numpy(np.ascontiguousarray(tokens[order]))
            batch["text_mask"] = torch.from_numpy(np.ascontiguousarray(mask[order]))
        return batch

    def _empty_patches(self, channels: int) -> torch.Tensor:
        patches = torch.empty(len(self.rows), self.geometry.num_levels, channels, *self.geometry.patch)
        return patches.share_memory_() if get_worker_info() is not None else patches
