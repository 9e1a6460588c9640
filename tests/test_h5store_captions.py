"""Captions and kind in the dataset file: written when given, absent files read as uncaptioned."""

import h5py
import numpy as np
import pytest

from hpdm_core.data.h5store import VideoStore, VideoStoreWriter
from hpdm_core.errors import BadInputError


def _video(frames: int, value: int) -> np.ndarray:
    return np.full((frames, 4, 4, 3), value, np.uint8)


def test_captions_round_trip_utf8(tmp_path):
    writer = VideoStoreWriter(tmp_path / "c.h5", 4, 4)
    captions = ["a red disc drifting left", "", "ein grüner Würfel — 緑"]
    for i, caption in enumerate(captions):
        writer.append(_video(2 + i, i), label=0, caption=caption)
    store = VideoStore(writer.finish(["x"], fps=8))
    store.verify()
    assert store.captions == captions
    assert store.summary()["captioned"] == 2
    assert store.kind == "videos" and store.summary()["kind"] == "videos"


def test_file_without_captions_keeps_old_layout(tmp_path):
    writer = VideoStoreWriter(tmp_path / "n.h5", 4, 4)
    writer.append(_video(3, 1), label=0)
    store = VideoStore(writer.finish(["x"], fps=8))
    assert "captions" not in store.file and "kind" not in store.file.attrs
    assert store.captions == [""] and store.summary()["captioned"] == 0 and store.kind == "videos"


def test_images_kind_and_damaged_captions_are_checked(tmp_path):
    writer = VideoStoreWriter(tmp_path / "i.h5", 4, 4)
    writer.append(_video(1, 1), caption="one")
    writer.append(_video(1, 2))
    store = VideoStore(writer.finish([], fps=1, kind="images"))
    store.verify()
    assert store.kind == "images" and store.captions == ["one", ""]
    store.close()
    with h5py.File(tmp_path / "i.h5", "a") as f:  # an images file whose entry has two frames
        offsets = f["offsets"][...]
        offsets[1:] += 1
        del f["offsets"]
        f["offsets"] = offsets
        f["frames"].resize(3, axis=0)
    with pytest.raises(BadInputError, match="more than one frame"):
        VideoStore(tmp_path / "i.h5").verify()
    with h5py.File(tmp_path / "i.h5", "a") as f:
        del f["captions"]
        f.create_dataset("captions", data=np.asarray(["x"], dtype=object), dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(BadInputError, match="captions"):
        VideoStore(tmp_path / "i.h5")
