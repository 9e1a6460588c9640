"""Video files in and out: decode with PyAV, write mp4 (H.264) or gif, tile videos into a grid.

On disk and here a video is uint8 [F, H, W, 3] RGB; in the model it is float [C, F, H, W] in [-1, 1]
(`to_uint8` converts back). Resizing happens inside PyAV's swscale pass with AREA interpolation: the
YUV->RGB conversion and the resize are one C pass with no float copy, and area averaging is the right
filter for the usual downscale (no aliasing) while it behaves like bilinear for small upscales
(UCF-101's 240 lines -> 256).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from hpdm_core.errors import BadInputError
from hpdm_core.files import atomic_write


class VideoReadError(BadInputError):
    """A video file that cannot be decoded; the message is the reason."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    native_fps: float
    source_frames: int  # frames decoded from the file (before fps resampling and max_frames)


def resized_shape(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """(H, W) after scaling so that the shorter side is `shorter_side`, aspect kept."""
    if height <= width:
        return shorter_side, max(shorter_side, round(width * shorter_side / height))
    return max(shorter_side, round(height * shorter_side / width)), shorter_side


def resample_index(k: int, native_fps: float, fps: float) -> int:
    """Source frame shown as output frame k when `native_fps` is resampled to `fps` (by index)."""
    return int(math.floor(k * native_fps / fps + 1e-6))


def decode_video(path: str | os.PathLike, resolution: int | None = None, fps: float | None = None,
                 max_frames: int | None = None) -> DecodedVideo:
    """Decode a video file to uint8 [F, H, W, 3].

    resolution: scale the shorter side to this many pixels, then centre-crop a square.
    fps: resample by frame index (drops or repeats frames; timestamps are ignored, as the
    UCF-101 protocols do). max_frames: stop after this many output frames.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"file not found: {path}")
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError("no video stream")
            stream = container.streams.video[0]
            # One thread per decode: `hpdm prepare` runs one process per core over many videos.
            stream.codec_context.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            native_fps = float(rate) if rate else 0.0
            if fps is not None and native_fps <= 0:
                raise VideoReadError("the file has no frame rate, so it cannot be resampled to --fps")
            target = fps or native_fps
            next_k, index = 0, -1
            for index, frame in enumerate(container.decode(stream)):
                wanted = resample_index(next_k, native_fps, target) if fps else next_k
                if wanted != index:
                    continue
                rgb = _frame_to_rgb(frame, resolution)
                while wanted == index and (max_frames is None or len(out) < max_frames):
                    out.append(rgb)
                    next_k += 1
                    wanted = resample_index(next_k, native_fps, target) if fps else next_k
                if max_frames is not None and len(out) >= max_frames:
                    break
    except VideoReadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoReadError(f"{type(err).__name__}: {err}") from None
    if not out:
        raise VideoReadError("no decodable video frames")
    return DecodedVideo(np.stack(out), native_fps, index + 1)


def _frame_to_rgb(frame: av.VideoFrame, resolution: int | None) -> np.ndarray:
    if resolution is None:
        return frame.to_ndarray(format="rgb24")
    height, width = resized_shape(frame.height, frame.width, resolution)
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (height - resolution) // 2, (width - resolution) // 2
    return np.ascontiguousarray(rgb[top:top + resolution, left:left + resolution])


def read_video(path: str | os.PathLike, resolution: int | None = None, fps: float | None = None,
               max_frames: int | None = None) -> np.ndarray:
    """uint8 [F, H, W, 3] frames of a video file (see `decode_video` for the options)."""
    return decode_video(path, resolution, fps, max_frames).frames


def to_uint8(video: Any) -> np.ndarray:
    """float [C, F, H, W] or [B, C, F, H, W] in [-1, 1] (torch or numpy) -> uint8 [..., F, H, W, 3]."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    video = np.asarray(video, dtype=np.float32)
    if video.ndim not in (4, 5) or video.shape[-4] != 3:
        raise BadInputError(f"expected a video [C=3, F, H, W] or [B, 3, F, H, W], got {list(video.shape)}")
    pixels = np.clip(np.rint((video + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(pixels, -4, -1))


def _check_video(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise BadInputError(f"expected uint8 video [F, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 [F, H, W, 3] as .mp4 (H.264, yuv420p) or .gif, chosen by the suffix."""
    path = Path(path)
    frames = _check_video(frames)
    if fps <= 0:
        raise BadInputError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise BadInputError(f"cannot write {path.name}: use a .mp4 or .gif suffix")
    with atomic_write(path) as tmp:
        (_write_mp4 if suffix == ".mp4" else _write_gif)(tmp, frames, fps)
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    # yuv420p halves chroma resolution, so H.264 needs even sizes: pad by repeating the edge.
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                      options={"crf": "17", "preset": "medium"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    # Pillow rather than PyAV: PyAV's gif encoder takes rgb8/pal8, and swscale's conversion to those
    # uses a fixed 3-3-2 palette (visible banding); Pillow builds an adaptive palette per frame.
    from PIL import Image

    images = [Image.fromarray(rgb) for rgb in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)


def make_grid(videos: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 [N, F, H, W, 3] into one uint8 [F, H', W', 3] video, row-major, black gaps."""
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[0] == 0:
        raise BadInputError(f"expected uint8 videos [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    n, f, h, w, _ = videos.shape
    columns = columns or math.ceil(math.sqrt(n))
    if columns < 1:
        raise BadInputError(f"columns must be at least 1, got {columns}")
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    grid = np.zeros((f, rows * h + (rows - 1) * padding, columns * w + (columns - 1) * padding, 3), np.uint8)
    for i in range(n):
        top, left = (i // columns) * (h + padding), (i % columns) * (w + padding)
        grid[:, top:top + h, left:left + w] = videos[i]
    return grid


def write_video_grid(path: str | os.PathLike, videos: np.ndarray, fps: float, columns: int | None = None,
                     padding: int = 2) -> Path:
    """Write uint8 [N, F, H, W, 3] as one grid video (mp4 or gif by suffix)."""
    return write_video(path, make_grid(videos, columns, padding), fps)


def frame_grid(videos: np.ndarray, columns: int = 8, padding: int = 2) -> np.ndarray:
    """uint8 [N, F, H, W, 3] -> one uint8 image [H', W', 3]: a row per video, `columns` frames spread
    evenly over time, white gaps. The still that shows motion at a glance (README, reports)."""
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[0] == 0:
        raise BadInputError(f"expected uint8 videos [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    n, f, h, w, _ = videos.shape
    picks = np.linspace(0, f - 1, min(columns, f)).round().astype(int)
    image = np.full((n * (h + padding) + padding, len(picks) * (w + padding) + padding, 3), 255, np.uint8)
    for i, video in enumerate(videos):
        for j, k in enumerate(picks):
            top, left = padding + i * (h + padding), padding + j * (w + padding)
            image[top:top + h, left:left + w] = video[k]
    return image


def write_frame_grid(path: str | os.PathLike, videos: np.ndarray, columns: int = 8, scale: int = 1) -> Path:
    """Write frame_grid(videos) as a PNG, each pixel repeated `scale` times, atomically."""
    from PIL import Image

    path = Path(path)
    image = frame_grid(videos, columns)
    if scale > 1:
        image = image.repeat(scale, 0).repeat(scale, 1)
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)
    return path
