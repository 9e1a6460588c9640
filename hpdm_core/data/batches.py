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
                            f"{cfg.model.num_classes}; set model.num_classes={int(labels.max()) + 1}")
    fingerprint = dataset_fingerprint(store)
    store.close()
    if cfg.model.conditioning == "text":
        check_text(cfg)
    return fingerprint


def check_text(cfg: Config, path: str | None = None) -> dict:
    """The text embeddings' info (encoder, fingerprint, dim) of the data file (or of `path`); BadInputError
    unless a text-conditional config can train on them."""
    from hpdm_core.text.store import TextEmbeddings

    path = path or cfg.data.path
    info = TextEmbeddings(path).info  # raises when the file holds no (complete) embeddings
    if int(info["dim"]) != cfg.model.text_dim:
        raise BadInputError(f"{path} holds text embeddings of width {info['dim']} (encoder "
                            f"{info.get('encoder', '?')}) but model.text_dim is {cfg.model.text_dim}; use "
                            f"set model.text_dim={info['dim']} or encode the captions with the model's encoder")
    return info


def open_clips(cfg: Config):
    """The ClipDataset at the target resolution (random start frame and flip per read)."""
    from hpdm_core.data.dataset import ClipDataset

    check_data(cfg)
    frames, height, width = cfg.model.target
    return ClipDataset(cfg.data.path, frames=frames, resolution=(height, width), frame_stride=cfg.data.frame_stride,
                       flip=cfg.data.flip)


def check_images(cfg: Config) -> str:
    """The image file's fingerprint; BadInputError unless it is an image file (attrs kind="images", 1-frame
    entries) that can feed this config's still-image rows."""
    path = cfg.data.image_path
    store = VideoStore(path)
    kind = store.attrs.get("kind", "videos")
    if kind != "images":
        raise BadInputError(f"{path} holds {kind}, not images (attrs kind=\"images\"): make an image file with "
                            "`hpdm prepare images` or `hpdm prepare synthetic --still`, or give the videos as `data`")
    _, height, width = cfg.model.target
    have_h, have_w = store.resolution
    if have_h < height or have_w < width:
        raise BadInputError(f"{path} holds {have_h}x{have_w} images but the target is {height}x{width}; prepare the "
                            "images at a larger resolution")
    labels = store.labels
    if len(labels) == 0:
        raise BadInputError(f"{path} holds no images")
    if cfg.model.conditioning == "text":
        images_text, videos_text = check_text(cfg, path), check_text(cfg)
        if images_text["fingerprint"] != videos_text["fingerprint"]:
            raise BadInputError(f"the captions of {path} and of {cfg.data.path} were encoded by different text "
                                "encoders; encode both with the same one (`hpdm encode-text --overwrite`)")
    elif int(labels.max()) >= cfg.model.num_classes:
        raise BadInputError(f"{path} has labels up to {int(labels.max())} but model.num_classes is "
                            f"{cfg.model.num_classes}")
    fingerprint = dataset_fingerprint(store)
    store.close()
    return fingerprint


def open_images(cfg: Config):
    """The image file as 1-frame clips at the target resolution (random flip per read)."""
    from hpdm_core.data.dataset import ClipDataset

    check_images(cfg)
    _, height, width = cfg.model.target
    return ClipDataset(cfg.data.image_path, frames=1, resolution=(height, width), flip=cfg.data.flip)


def still_video(clip: torch.Tensor, frames: int) -> torch.Tensor:
    """A 1-frame clip [C, 1, H, W] repeated along time: the still video [C, frames, H, W] (the paper's
    joint image+video training)."""
    return clip.expand(-1, frames, -1, -1)


class StepBatches(Dataset):
    """Item s = this rank's rows of the global batch of step s: patches [B, n, C, f, h, w], offsets [B, n, 3],
    labels [B]; every row draws from its own generator keyed by (seed, s, row).

    With `images` (a 1-frame ClipDataset) and `image_rows`, still-image rows follow the video rows: each a
    still video of the target's frame count, cut into a patch chain like a video row, and the item gains
    `still` [B] (True on image rows). With `text` (and `image_text` for the image rows), the rows' text
    embeddings come as text_tokens [B, T, D] and text_mask [B, T]."""

    def __init__(self, clips, geometry: PatchGeometry, rows: range, seed: int, num_steps: int, null_class: int,
                 text=None, images=None, image_rows: range = range(0), image_text=None):
        self.clips, self.geometry, self.null_class = clips, geometry, null_class
        self.rows, self.seed, self.num_steps = rows, seed, num_steps
        self.images, self.image_rows = images, image_rows if images is not None else range(0)
        self.text, self.image_text = text, image_text  # text.store.TextEmbeddings of the two files

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        # Host memory stays what the batch keeps (2.4 MB a row at the paper's size): each row's clip is
        # read as uint8, its patches are cut and pooled from only the regions they cover (extract_chain,
        # the same float32 numbers as stacking the float clips and pooling them whole: 50 MB a row), and
        # it is freed before the next row is read. In a DataLoader worker the batch is allocated in
        # shared memory, so sending it to the main process copies nothing.
        patches, labels, offsets, sources = None, [], [], []
        rows = [(row, False) for row in self.rows] + [(row, True) for row in self.image_rows]
        for j, (row, still) in enumerate(rows):
            # The row's generator picks the video (or image), its start frame and flip, then the patch
            # offsets: the same draws whichever process (rank, DataLoader worker) builds the row.
            g = generator(self.seed, step, row, DATA_STREAM)
            data = self.images if still else self.clips
            index = int(torch.randint(len(data), (1,), generator=g))
            pixels, label = data.pixels(index, g)
            if still:
                pixels = still_video(pixels, self.geometry.target[0])  # a view: no copy per frame
            sources.append((still, int(data.indices[index])))
            labels.append(label)
            offsets.append(sample_nested_offsets(1, self.geometry, generator=g))
            if patches is None:
                patches = self._empty_patches(len(rows), pixels.shape[0])
            extract_chain(pixels, offsets[-1][0], self.geometry, to_unit, out=patches[j])
            del pixels
        offsets = torch.cat(offsets)
        labels = torch.tensor(labels, dtype=torch.long)
        labels = torch.where(labels < 0, self.null_class, labels)  # unlabelled videos train unconditionally
        batch = {"patches": patches, "offsets": offsets, "labels": labels}
        if self.image_rows:
            batch["still"] = torch.arange(len(labels)) >= len(self.rows)
        if self.text is not None:  # video rows first, then image rows, as in the batch
            videos, images = [i for s, i in sources if not s], [i for s, i in sources if s]
            parts = [read_rows(self.text, videos)] + ([read_rows(self.image_text, images)] if images else [])
            batch["text_tokens"] = torch.from_numpy(np.concatenate([tokens for tokens, _ in parts]))
            batch["text_mask"] = torch.from_numpy(np.concatenate([mask for _, mask in parts]))
        return batch

    def _empty_patches(self, rows: int, channels: int) -> torch.Tensor:
        patches = torch.empty(rows, self.geometry.num_levels, channels, *self.geometry.patch)
        return patches.share_memory_() if get_worker_info() is not None else patches


def read_rows(text, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask) of the videos `indices` (any order, repeats allowed) of a TextEmbeddings file; HDF5
    reads want increasing, distinct indices, so each video is read once and the rows are put in order."""
    unique, order = np.unique(np.asarray(indices), return_inverse=True)
    tokens, mask = text.rows(unique.tolist())
    return np.ascontiguousarray(tokens[order]), np.ascontiguousarray(mask[order])
