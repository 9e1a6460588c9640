"""Video decode options, mp4/gif writing, grids and the float -> uint8 conversion."""

import av
import numpy as np
import pytest
import torch

from hpdm_core.data.video_io import (VideoReadError, decode_video, make_grid, read_video, resample_index,
                                     resized_shape, to_uint8, write_video, write_video_grid)
from hpdm_core.errors import BadInputError


def striped_video(frames: int = 6, height: int = 40, width: int = 60) -> np.ndarray:
    """Flat blocks (codec-friendly) whose colours change per frame; the top-left block marks t."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    for t in range(frames):
        video[t, :, : width // 2] = (200, 40 + 30 * t, 40)
        video[t, :, width // 2:] = (30, 90, 220 - 25 * t)
    return video


def test_mp4_roundtrip_pads_odd_sizes(tmp_path):
    video = striped_video(height=41, width=61)
    path = write_video(tmp_path / "v.mp4", video, fps=10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == 10
    back = read_video(path)
    assert back.shape == (6, 42, 62, 3)  # padded to even sizes by repeating the edge
    assert np.abs(back[:, 4:-5, 4:26].astype(int) - video[:, 4:-4, 4:26]).max() <= 6
    assert np.abs(back[:, 4:-5, 36:-5].astype(int) - video[:, 4:-4, 36:-4]).max() <= 6
    assert not list(tmp_path.glob("*.tmp"))


def test_gif_roundtrip_and_grid(tmp_path):
    video = striped_video()
    back = read_video(write_video(tmp_path / "v.gif", video, fps=8))
    assert back.shape == video.shape and np.abs(back.astype(int) - video).max() <= 4
    videos = np.stack([video, 255 - video, video // 2])
    grid = make_grid(videos, columns=2, padding=2)
    assert grid.shape == (6, 2 * 40 + 2, 2 * 60 + 2, 3)
    np.testing.assert_array_equal(grid[:, 42:, :60], videos[2])
    np.testing.assert_array_equal(grid[:, :40, 62:], videos[1])
    assert grid[:, 42:, 62:].max() == 0 and grid[:, 40:42].max() == 0  # the empty cell and the gap
    out = read_video(write_video_grid(tmp_path / "g.mp4", videos, fps=8))
    assert out.shape == (6, 82, 122, 3)  # 3 videos: ceil(sqrt(3)) = 2 columns by default
    with pytest.raises(BadInputError):
        write_video(tmp_path / "v.avi", video, fps=8)


def test_decode_resizes_shorter_side_and_centre_crops(tmp_path):
    # Portrait 40 x 60 (H > W): the width becomes 20, the height 30, then the middle 20 rows remain.
    video = np.zeros((5, 60, 40, 3), np.uint8)
    video[:, :30] = (220, 30, 30)
    video[:, 30:] = (30, 30, 220)
    path = write_video(tmp_path / "p.mp4", video, fps=25)
    decoded = decode_video(path, resolution=20)
    assert resized_shape(60, 40, 20) == (30, 20)
    assert decoded.frames.shape == (5, 20, 20, 3) and decoded.native_fps == 25 and decoded.source_frames == 5
    assert np.abs(decoded.frames[:, :8].astype(int) - (220, 30, 30)).max() <= 12
    assert np.abs(decoded.frames[:, 12:].astype(int) - (30, 30, 220)).max() <= 12


def test_fps_resampling_by_index(tmp_path):
    assert [resample_index(k, 30, 10) for k in range(4)] == [0, 3, 6, 9]
    assert [resample_index(k, 10, 25) for k in range(6)] == [0, 0, 0, 1, 1, 2]
    path = write_video(tmp_path / "v.mp4", striped_video(frames=6), fps=10)
    slow = decode_video(path, fps=5)  # frames 0, 2, 4
    fast = decode_video(path, fps=20, max_frames=5)  # frames 0, 0, 1, 1, 2
    marker = lambda v: (v[:, 10, 10, 1].astype(int) - 40 + 15) // 30  # noqa: E731 (the frame index)
    assert marker(slow.frames).tolist() == [0, 2, 4]
    assert marker(fast.frames).tolist() == [0, 0, 1, 1, 2]


def test_unreadable_files_raise_with_reason(tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 50)
    with pytest.raises(VideoReadError) as err:
        decode_video(bad)
    assert str(err.value)
    with pytest.raises(VideoReadError, match="not found"):
        decode_video(tmp_path / "missing.avi")


def test_to_uint8_layout_and_range():
    x = torch.linspace(-1.2, 1.2, 2 * 3 * 2 * 2 * 2).reshape(2, 3, 2, 2, 2)
    out = to_uint8(x)
    assert out.shape == (2, 2, 2, 2, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out[1, :, :, :, 2], to_uint8(x[1].numpy())[..., 2])
    assert to_uint8(torch.zeros(3, 1, 1, 1)).tolist() == [[[[128, 128, 128]]]]
    assert out[0, 0, 0, 0, 1] == round((float(x[0, 1, 0, 0, 0]) + 1) * 127.5)
    with pytest.raises(BadInputError):
        to_uint8(torch.zeros(4, 2, 2, 2))
