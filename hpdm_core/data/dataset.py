"""Training clips from a dataset file: a random run of consecutive frames per video.

Randomness (start frame, flip) comes from torch's global generator, which DataLoader seeds per
worker, or from an explicit generator through `clip(i, generator)` (what training uses, so that a
row's clip depends only on its seed). The HDF5
file is opened lazily by VideoStore in each process, so this works with fork and spawn workers.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hpdm_core.data.h5store import VideoStore
from hpdm_core.errors import BadInputError


def area_resize(clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, F, H, W] -> [C, F, h, w] by averaging the source pixels each target pixel covers."""
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    return F.interpolate(clip.transpose(0, 1), size=size, mode="area").transpose(0, 1)


class ClipDataset(Dataset):
    """(clip float [3, frames, H, W] in [-1, 1], label) from the videos of a dataset file.

    frame_stride: take every k-th frame (a clip spans (frames - 1) * k + 1 stored frames).
    resolution: int or (H, W), at most the stored size; smaller sizes are area-downsampled.
    Videos too short for one clip are left out; `skipped` counts them.
    """

    def __init__(self, path: str | os.PathLike, frames: int, resolution: int | tuple[int, int],
                 frame_stride: int = 1, flip: bool = False):
        if frames < 1 or frame_stride < 1:
            raise BadInputError(f"frames and frame_stride must be at least 1, got {frames} and {frame_stride}")
        self.store = VideoStore(path)
        self.frames, self.frame_stride, self.flip = int(frames), int(frame_stride), bool(flip)
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        stored = self.store.resolution
        if len(size) != 2 or size[0] > stored[0] or size[1] > stored[1] or min(size) < 1:
            raise BadInputError(f"clip resolution {list(size)} must be positive and at most the stored "
                                f"{list(stored)} of {path} (prepare the data at a higher --resolution)")
        self.resolution = (int(size[0]), int(size[1]))
        self.span = (self.frames - 1) * self.frame_stride + 1
        lengths = self.store.lengths
        self.indices = np.flatnonzero(lengths >= self.span)
        self.skipped = int(len(lengths) - len(self.indices))
        if len(self.indices) == 0:
            raise BadInputError(f"no video in {path} has the {self.span} frames that a clip of {self.frames} "
                                f"frames at stride {self.frame_stride} needs (the longest has {lengths.max()})")
        self.lengths = lengths[self.indices]
        self.labels = self.store.labels[self.indices]
        self.class_names = self.store.class_names
        self.num_classes = len(self.class_names)
        self.store.close()  # workers reopen it; no open handle travels with the dataset

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.clip(i)

    def clip(self, i: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Item i with its start frame and flip drawn from `generator` (default: torch's global one)."""
        pixels, label = self.pixels(i, generator)
        return to_unit(pixels), label

    def pixels(self, i: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Item i before scaling to [-1, 1]: [3, F, H, W] pixel values 0..255, uint8 when the clip is read
        at the stored resolution (4x smaller than float32), float32 when area-resized. The same random
        draws as `clip`, and `to_unit` of it is exactly `clip`'s tensor: training scales crops of it, not
        the whole clip (data/batches.py)."""
        start = int(torch.randint(0, int(self.lengths[i]) - self.span + 1, (), generator=generator).item())
        pixels = self.store.video(int(self.indices[i]), start, self.frames, self.frame_stride)
        clip = torch.from_numpy(np.ascontiguousarray(pixels)).permute(3, 0, 1, 2)  # [3, F, H, W] uint8
        if tuple(clip.shape[-2:]) != self.resolution:
            clip = area_resize(clip.float(), self.resolution)
        if self.flip and bool(torch.rand((), generator=generator) < 0.5):
            clip = clip.flip(-1)
        return clip, int(self.labels[i])


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 (uint8 or float) -> float32 in [-1, 1]; elementwise, so scaling a crop gives
    the same numbers as cropping the scaled clip."""
    return pixels.float() / 127.5 - 1.0
