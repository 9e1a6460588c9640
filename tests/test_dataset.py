"""ClipDataset: clip placement, stride, area downsampling, flip, skipping, DataLoader workers."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hpdm_core.data.dataset import ClipDataset
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.errors import BadInputError

LENGTHS = [12, 3, 20, 9, 16]  # the 3-frame video is too short for the clips below


def frame_value(video: int, t: int) -> int:
    return 25 * video + t  # < 256 for these sizes; says which frame of which video a clip holds


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """8x8 videos: red carries frame_value, green a left-to-right ramp, blue a 2x2 checker."""
    path = tmp_path_factory.mktemp("clips") / "clips.h5"
    writer = VideoStoreWriter(path, 8, 8)
    checker = (np.indices((8, 8)).sum(0) % 2) * 200
    for v, length in enumerate(LENGTHS):
        video = np.zeros((length, 8, 8, 3), np.uint8)
        for t in range(length):
            video[t, ..., 0] = frame_value(v, t)
            video[t, ..., 1] = np.arange(8)[None, :] * 30
            video[t, ..., 2] = checker
        writer.append(video, label=v % 2, name=f"v{v}")
    return writer.finish(["even", "odd"], fps=10)


def to_pixels(clip: torch.Tensor) -> np.ndarray:
    return np.rint((clip.numpy() + 1) * 127.5).astype(int)


def check_clip(clip: torch.Tensor, label: int, frames: int, stride: int) -> None:
    """Consecutive frames (at the stride) of one video whose label matches."""
    red = to_pixels(clip)[0, :, 0, 0]
    video, start = divmod(int(red[0]), 25)
    assert red.tolist() == [frame_value(video, start + stride * k) for k in range(frames)]
    assert start + stride * (frames - 1) < LENGTHS[video] and label == video % 2


def test_clips_are_runs_of_consecutive_frames(store_path):
    ds = ClipDataset(store_path, frames=4, resolution=8, frame_stride=2)  # spans 7 frames
    assert ds.skipped == 1 and len(ds) == 4 and ds.num_classes == 2
    starts = set()
    for _ in range(30):
        for i in range(len(ds)):
            clip, label = ds[i]
            assert clip.shape == (3, 4, 8, 8) and clip.dtype == torch.float32
            assert -1 <= clip.min() and clip.max() <= 1
            check_clip(clip, label, 4, 2)
            starts.add(int(to_pixels(clip)[0, 0, 0, 0]))
    assert len(starts) > 8  # random starts, not always frame 0


def test_area_downsampling_and_flip(store_path):
    torch.manual_seed(1)
    ds = ClipDataset(store_path, frames=2, resolution=4, flip=True)
    flipped = 0
    for _ in range(40):
        clip, _ = ds[0]
        pixels = to_pixels(clip)
        ramp = pixels[1, 0, 0]
        # Area pooling averages 2x2 blocks: the ramp (0, 30, ..., 210) becomes 15, 75, 135, 195 and the
        # checker becomes flat 100 (a strided subsample would give 0 or 200).
        assert ramp.tolist() in ([15, 75, 135, 195], [195, 135, 75, 15])
        flipped += ramp[0] == 195
        assert (pixels[2] == 100).all()
    assert 5 < flipped < 35
    assert ClipDataset(store_path, 2, (4, 8))[0][0].shape == (3, 2, 4, 8)


def test_bad_requests(store_path):
    with pytest.raises(BadInputError, match="at most the stored"):
        ClipDataset(store_path, frames=2, resolution=16)
    with pytest.raises(BadInputError, match="frames"):
        ClipDataset(store_path, frames=30, resolution=8)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(store_path, context):
    ds = ClipDataset(store_path, frames=3, resolution=8)
    loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=2, multiprocessing_context=context)
    seen = 0
    for clips, labels in loader:
        assert clips.shape[1:] == (3, 3, 8, 8)
        for clip, label in zip(clips, labels):
            check_clip(clip, int(label), 3, 1)
        seen += len(clips)
    assert seen == len(ds)
