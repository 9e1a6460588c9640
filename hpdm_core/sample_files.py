"""The files a sample is written to: mp4/gif grids (and one file per video), the h5 dataset layout,
npz arrays, and the prompts beside a grid; `output_files` lists them beforehand so a command can check
them before it samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpdm_core.errors import BadInputError
from hpdm_core.files import atomic_write
from hpdm_core.sampling import SampleResult


FORMATS = ("mp4", "gif", "h5", "npz")
PER_SAMPLE_FILES_UP_TO = 16  # mp4/gif: one file per sample besides the grid when N is this small


def _with_suffix(out: Path, tag: str) -> Path:
    return out.with_name(f"{out.stem}_{tag}{out.suffix}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as tmp, tmp.open("wb") as f:  # a file object: numpy appends no suffix
        np.savez_compressed(f, **arrays)


def output_files(out: str | Path, fmt: str, num: int, num_levels: int = 1, save_levels: bool = False,
                 prompts: bool = False) -> list[Path]:
    """Every file save_samples writes for these arguments, the main one first (to check them beforehand)."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() != f".{fmt}":
        out = out.with_name(out.name + f".{fmt}")
    files = [out]
    if fmt in ("mp4", "gif") and num <= PER_SAMPLE_FILES_UP_TO:
        files += [_with_suffix(out, f"{i:03d}") for i in range(num)]
    if save_levels and fmt != "npz":
        files += [_with_suffix(out, f"level{level}") for level in range(num_levels - 1)]
    if prompts and fmt in ("mp4", "gif"):
        files.append(prompts_file(out))
    return files


def prompts_file(out: Path) -> Path:
    """The sidecar of an mp4/gif grid made from prompts: one prompt per line, in the grid's row order."""
    return out.with_name(f"{out.stem}_prompts.txt")


def _write_h5(path: Path, videos: np.ndarray, labels: list[int], class_names: list[str], fps: float,
              attrs: dict, prompts: list[str]) -> None:
    from hpdm_core.data.h5store import VideoStoreWriter

    with VideoStoreWriter(path, videos.shape[2], videos.shape[3]) as writer:
        for i, (video, label) in enumerate(zip(videos, labels)):
            writer.append(video, label=label, name=f"sample_{i:06d}", **({"caption": prompts[i]} if prompts else {}))
        writer.finish(class_names, fps, split="generated", source="hpdm sample", **attrs)


def save_samples(result: SampleResult, out: str | Path, fmt: str, fps: float = 8.0,
                 class_names: list[str] | None = None, save_levels: bool = False,
                 attrs: dict | None = None) -> list[Path]:
    """Write the videos (and with save_levels each lower level's canvases) and return the files written.

    mp4/gif: a grid video at `out` and, for at most PER_SAMPLE_FILES_UP_TO samples, `out_000.mp4`, ...;
    h5: the dataset layout (labels = classes, names sample_000000, ..., prompts as captions), readable by eval-fvd;
    npz: `videos` uint8 [N, F, H, W, 3], `labels` [N] and, from prompts, `prompts` [N] (with save_levels also
    `level_0`, ...); mp4/gif from prompts: the prompts beside the grid (`prompts_file`).
    Levels are written beside `out` as `out_level0.mp4` / `.h5`, or inside the npz.
    """
    from hpdm_core.data.video_io import to_uint8, write_video, write_video_grid

    out = output_files(out, fmt, len(result.videos))[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = result.labels.tolist()
    videos = to_uint8(result.videos)
    lower = [to_uint8(level) for level in result.levels[:-1]] if save_levels else []
    written: list[Path] = []
    if fmt == "npz":
        arrays = {"videos": videos, "labels": np.asarray(labels, dtype=np.int64)}
        if result.prompts:
            arrays["prompts"] = np.asarray(result.prompts, dtype=str)
        arrays.update({f"level_{level}": canvas for level, canvas in enumerate(lower)})
        _write_npz(out, arrays)
        return [out]
    if fmt == "h5":
        names = class_names or [f"class_{k}" for k in range(max(labels) + 1)]
        _write_h5(out, videos, labels, names, fps, attrs or {}, result.prompts)
        written.append(out)
        for level, canvas in enumerate(lower):
            path = _with_suffix(out, f"level{level}")
            _write_h5(path, canvas, labels, names, fps, {**(attrs or {}), "level": level}, result.prompts)
            written.append(path)
        return written
    written.append(write_video_grid(out, videos, fps))
    if len(videos) <= PER_SAMPLE_FILES_UP_TO:
        written += [write_video(_with_suffix(out, f"{i:03d}"), video, fps) for i, video in enumerate(videos)]
    for level, canvas in enumerate(lower):
        written.append(write_video_grid(_with_suffix(out, f"level{level}"), canvas, fps))
    if result.prompts:
        sidecar = prompts_file(out)
        with atomic_write(sidecar) as tmp:
            tmp.write_text("".join(" ".join(p.split()) + "\n" for p in result.prompts), encoding="utf-8")
        written.append(sidecar)
    return written
