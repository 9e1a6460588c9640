"""Reading the clips that FVD, IS and the classifier scores look at.

Real clips: which videos of a dataset file and which start frames the protocols take
(`choose_real_clips`), then reading them (`read_real_clips`). Generated clips: the first frames of the
first videos of an .h5, a folder of video files or an .npz (`fake_clips`). The rules, with their
sources in StyleGAN-V, are listed in the docstring of `hpdm_core.metrics.fvd`; this module only reads,
the detectors and the statistics live there.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from hpdm_core.data.h5store import VideoStore
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.seeding import protocol_rng

VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".webm", ".mkv", ".mov")


def clip_span(frames: int, subsample: int) -> int:
    """Frames a clip covers: what reading it needs."""
    return (frames - 1) * subsample + 1


def required_length(frames: int, subsample: int) -> int:
    """Frames a video needs to count as long enough: StyleGAN-V asks for frames * subsample, a few
    more than the clip covers when subsample > 1 (discard_short_videos and its assert, [S4])."""
    return frames * subsample


def order_by_name(names: Sequence[str]) -> np.ndarray:
    """Indices in Python's string order of the names (ties keep file order): what sorted() gives
    StyleGAN-V for its frames folders."""
    return np.asarray(sorted(range(len(names)), key=lambda i: (names[i], i)), np.int64)


@dataclass(frozen=True)
class RealClipChoice:
    """Which real clips the protocol takes: video index and first frame of each, in order."""

    videos: np.ndarray
    starts: np.ndarray
    eligible: int  # videos long enough for a clip
    too_short: int  # videos dropped for being too short

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def repeated(self) -> int:
        """Clips beyond the first of their video (0 under the protocols)."""
        return len(self.videos) - len(np.unique(self.videos))

    @property
    def most_per_video(self) -> int:
        return int(np.bincount(self.videos).max(initial=0))


def choose_real_clips(store: VideoStore, num: int, frames: int, subsample: int = 1, seed: int = 0,
                      repeat: bool = False) -> RealClipChoice:
    """The first `num` long-enough videos by name, one clip each at a uniformly drawn start.

    repeat=True (not a protocol): when fewer videos are long enough than `num`, pass over them again
    in the same order, with new starts, until there are `num` clips.
    """
    lengths = store.lengths
    long_enough = lengths >= required_length(frames, subsample)
    if not long_enough.any():
        raise BadInputError(f"{store.path}: no video has the {required_length(frames, subsample)} frames a clip of "
                            f"{frames} frames with subsample {subsample} needs "
                            f"(longest: {int(lengths.max(initial=0))})")
    by_name = order_by_name(store.names)
    eligible = by_name[long_enough[by_name]]
    passes = -(-num // len(eligible)) if repeat else 1
    videos = np.tile(eligible, passes)[:num]
    draws = protocol_rng(seed)
    # One draw per clip in order; high is exclusive, so every start that fits the clip is possible.
    starts = np.asarray([draws.integers(0, lengths[v] - clip_span(frames, subsample) + 1) for v in videos], np.int64)
    return RealClipChoice(videos, starts, len(eligible), int((~long_enough).sum()))


def read_real_clips(store: VideoStore, choice: RealClipChoice, frames: int, subsample: int = 1,
                    select: Sequence[int] | None = None) -> Iterator[np.ndarray]:
    """uint8 clips [frames, H, W, 3] of `choice`; `select`: only these positions (a rank's shard)."""
    for position in (range(len(choice)) if select is None else select):
        yield store.video(int(choice.videos[position]), int(choice.starts[position]), frames, subsample)


def real_clips(store: VideoStore, num: int, frames: int, subsample: int = 1, seed: int = 0,
               select: Sequence[int] | None = None, repeat: bool = False) -> tuple[Iterator[np.ndarray], int, int]:
    """(clips, how many, how many videos were too short): `choose_real_clips`, then read."""
    choice = choose_real_clips(store, num, frames, subsample, seed, repeat)
    return read_real_clips(store, choice, frames, subsample, select), len(choice), choice.too_short


def _npz_videos(path: Path) -> np.ndarray:
    try:
        with np.load(path) as arrays:
            names = arrays.files
            key = "videos" if "videos" in names else (names[0] if len(names) == 1 else None)
            if key is None:
                raise BadInputError(f"{path}: expected one array (or one named 'videos') uint8 [N, F, H, W, 3]; "
                                    f"found {names}")
            videos = arrays[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as err:  # text, pickles, cut short
        raise BadInputError(f"{path} is not a readable .npz of videos ({type(err).__name__}: {err})") from None
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise BadInputError(f"{path}: expected uint8 [N, F, H, W, 3], got {videos.dtype} {list(videos.shape)}")
    return videos


def _read_video_file(path: Path, max_frames: int) -> np.ndarray:
    from hpdm_core.data.video_io import read_video

    return read_video(path, max_frames=max_frames)


def fake_clips(path: str | os.PathLike, num: int, frames: int, subsample: int = 1,
               select: Sequence[int] | None = None) -> tuple[Iterator[np.ndarray], int]:
    """(clips, how many): the first `frames` frames (every `subsample`-th) of the first `num` generated
    videos of a dataset file (.h5, in the order of its names), a folder of video files (in the order
    of their names) or an npz uint8 [N, F, H, W, 3] (in array order).
    `select`: read only these positions (a rank's shard); `how many` still counts them all."""
    path = Path(path)
    span, needed = clip_span(frames, subsample), required_length(frames, subsample)
    if not path.exists():
        raise MissingResourceError(f"generated videos {path} not found")

    def positions(count: int) -> Sequence[int]:
        return range(count) if select is None else [i for i in select if i < count]

    def check(clip: np.ndarray, name: str) -> np.ndarray:
        if clip.shape[0] < needed:
            raise BadInputError(f"generated video {name} has {clip.shape[0]} frames; clips of {frames} frames "
                                f"(subsample {subsample}) need {needed}. Generate longer videos or lower `frames`")
        return clip[:span:subsample]

    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES), key=lambda p: p.name)[:num]
        if not files:
            raise BadInputError(f"{path} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
        return (check(_read_video_file(files[i], needed), files[i].name) for i in positions(len(files))), len(files)
    if path.suffix == ".npz":
        videos = _npz_videos(path)[:num]
        return (check(videos[i], f"{path.name}[{i}]") for i in positions(len(videos))), len(videos)
    if path.suffix in (".h5", ".hdf5"):
        store = VideoStore(path)
        names = store.names
        order = order_by_name(names)[:num]
        return ((check(store.video(int(order[i]), 0, needed), names[order[i]]) for i in positions(len(order))),
                len(order))
    raise BadInputError(f"{path}: generated videos must be a dataset file (.h5), a folder of videos or an .npz")
