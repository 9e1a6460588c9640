"""StepBatches builds each row from its uint8 clip, region by region: the same float32 batches, bit for bit,
as the old computation (stack the float clips of a step, box-filter them whole, crop)."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hpdm_core import pyramid
from hpdm_core.data.batches import StepBatches
from hpdm_core.data.dataset import ClipDataset
from hpdm_core.data.h5store import VideoStoreWriter
from hpdm_core.pyramid import PatchGeometry, extract_chain, extract_hierarchy, sample_nested_offsets
from hpdm_core.seeding import DATA_STREAM, generator

GEOMETRY = PatchGeometry((4, 8, 8), 3)  # target 16x32x32: pooled by 4, 2 and 1


def old_batch(steps: StepBatches, step: int) -> dict[str, torch.Tensor]:
    """StepBatches.__getitem__ before the change, verbatim: float32 clips stacked, then extract_hierarchy."""
    clips, labels, offsets = [], [], []
    for row in steps.rows:
        g = generator(steps.seed, step, row, DATA_STREAM)
        clip, label = steps.clips.clip(int(torch.randint(len(steps.clips), (1,), generator=g)), g)
        clips.append(clip)
        labels.append(label)
        offsets.append(sample_nested_offsets(1, steps.geometry, generator=g))
    clips, offsets = torch.stack(clips).float(), torch.cat(offsets)
    labels = torch.tensor(labels, dtype=torch.long)
    labels = torch.where(labels < 0, steps.null_class, labels)
    return {"patches": extract_hierarchy(clips, offsets, steps.geometry), "offsets": offsets, "labels": labels}


def write_noise_videos(path, size: int, count: int = 4, frames: int = 40, seed: int = 0):
    """Uniform random pixels: every bit of every pooled sum matters."""
    rng = np.random.default_rng(seed)
    writer = VideoStoreWriter(path, size, size)
    for v in range(count):
        writer.append(rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8), label=v % 3 - 1, name=f"v{v}")
    return writer.finish(["a", "b"], fps=10)


@pytest.fixture(scope="module", params=[32, 48], ids=["stored-size", "area-resized"])
def clips(request, tmp_path_factory):
    path = write_noise_videos(tmp_path_factory.mktemp("b") / "noise.h5", request.param)
    return ClipDataset(path, frames=16, resolution=32, frame_stride=2, flip=True)


@pytest.mark.parametrize("chunk_bytes", [pyramid.CHUNK_BYTES, 1], ids=["default-chunks", "one-frame-chunks"])
def test_batches_are_bit_identical_to_pooling_whole_float_clips(clips, chunk_bytes, monkeypatch):
    monkeypatch.setattr(pyramid, "CHUNK_BYTES", chunk_bytes)
    steps = StepBatches(clips, GEOMETRY, range(3, 9), seed=5, num_steps=4, null_class=2)
    for step in range(4):
        new, old = steps[step], old_batch(steps, step)
        assert new["patches"].dtype == torch.float32 and new["patches"].shape == (6, 3, 3, 4, 8, 8)
        for key in old:
            assert torch.equal(new[key], old[key]), key
    assert (new["labels"] == 2).any()  # the unlabelled videos' rows train with the null class


def test_worker_batches_equal_in_process_batches(clips):
    """A DataLoader worker allocates the batch in shared memory; what arrives is the same batch."""
    steps = StepBatches(clips, GEOMETRY, range(4), seed=1, num_steps=3, null_class=2)
    loaded = list(DataLoader(steps, batch_size=None, sampler=range(3), num_workers=1))
    for step, batch in enumerate(loaded):
        assert all(torch.equal(batch[k], v) for k, v in steps[step].items())


def test_pixels_scale_to_clip(clips):
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pixels, label = clips.pixels(1, a)
    clip, same_label = clips.clip(1, b)
    assert pixels.dtype == (torch.uint8 if clips.store.resolution == (32, 32) else torch.float32)
    assert label == same_label and torch.equal(pixels.float() / 127.5 - 1.0, clip)


def test_extract_chain_of_any_dtype_equals_extract_hierarchy():
    geometry = PatchGeometry((2, 4, 6), 4)
    clip = torch.randint(0, 256, (3, *geometry.target), dtype=torch.uint8)
    offsets = sample_nested_offsets(1, geometry, torch.Generator().manual_seed(0))
    values = lambda x: x.float() / 127.5 - 1.0  # noqa: E731
    expected = extract_hierarchy(values(clip)[None], offsets, geometry)[0]
    assert torch.equal(extract_chain(clip, offsets[0], geometry, values), expected)
