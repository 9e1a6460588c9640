"""Any folder of videos (or of images) -> one dataset file, with classes and captions.

A video is a video file (mp4, avi, webm, mov, mkv, gif) or a folder of numbered frames (png/jpg,
the StyleGAN-V layout: one folder per video; images beside video files are thumbnails, not frames),
found anywhere under SRC. Its name in the file is its
path relative to SRC. Its class, when classes are on, is its first sub-folder (SRC/<class>/...).
Captions come in the forms people keep them, first match wins:
  1. a JSON-lines file (SRC/captions.jsonl, or --captions FILE.jsonl): {"video": path, "caption": text}
  2. a CSV file (--captions FILE.csv, WebVid style): a path column and a caption column, named by options
  3. a .txt file beside the video with the same base name (clip.mp4 -> clip.txt, frames/ -> frames.txt)
A path in a captions file may be the relative path, that path without its suffix, or (when it names
one video only) its bare file name or stem: WebVid's `videoid` column works as it is.

Decoding and packing are `prepare ucf101`'s (ucf101.stage_and_pack): parallel, resumable after a
crash, unreadable videos reported and skipped.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import av
import numpy as np

from hpdm_core.data.ucf101 import (STAGING_FORMAT, PrepareReport, Progress, VideoEntry, check_decode_options,
                                   stage_and_pack)
from hpdm_core.data.video_io import DecodedVideo, VideoReadError, _frame_to_rgb, decode_video, resample_index
from hpdm_core.errors import BadInputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")  # the frames of a folder-of-frames video
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # `prepare images`
DEFAULT_CAPTIONS = "captions.jsonl"
DEFAULT_FRAMES_FPS = 25.0


@dataclass
class FolderReport(PrepareReport):
    classes: list[str] = field(default_factory=list)
    captioned: int = 0  # videos in the file with a caption
    unmatched_captions: list[str] = field(default_factory=list)  # caption paths that name no video found

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["classes"] = len(self.classes)
        return d


# ----------------------------------------------------------------------------- finding videos

def _digits_key(path: Path) -> tuple:
    """Numbered frames in numeric order (frame_2 before frame_10), then by name."""
    numbers = re.findall(r"\d+", path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.endswith(".parts")  # a prepare's own staging folder


def find_sources(src: Path, images: bool = False) -> list[Path]:
    """Videos under `src` (files and folders of frames), or image files when `images`; sorted."""
    found: list[Path] = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        root_path = Path(root)
        names = sorted(f for f in files if not _hidden(f))
        if images:
            found += [root_path / f for f in names if Path(f).suffix.lower() in IMAGE_SUFFIXES]
            continue
        videos = [root_path / f for f in names if Path(f).suffix.lower() in VIDEO_SUFFIXES]
        found += videos
        # A folder of frames (images and no video files: images beside videos are thumbnails) is one
        # video; what is below it is not looked at.
        if root_path != src and not videos and any(Path(f).suffix.lower() in FRAME_SUFFIXES for f in names):
            found.append(root_path)
            dirs[:] = []
    return sorted(found, key=lambda p: p.relative_to(src).as_posix())


def frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not _hidden(p.name)),
                  key=_digits_key)


# ----------------------------------------------------------------------------- decoding

def _read_image(path: Path, resolution: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise VideoReadError(f"{path.name}: {type(err).__name__}: {err}") from None
    # The same resize as decoded videos (swscale, AREA, shorter side then centre crop).
    return _frame_to_rgb(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"), resolution)


def decode_frame_folder(folder: Path, resolution: int | None = None, fps: float | None = None,
                        max_frames: int | None = None, frames_fps: float = DEFAULT_FRAMES_FPS) -> DecodedVideo:
    """A folder of numbered frames as a video whose native rate is `frames_fps`."""
    files = frame_files(folder)
    if not files:
        raise VideoReadError("no frames (png/jpg) in the folder")
    picks, k = [], 0
    while max_frames is None or len(picks) < max_frames:
        index = resample_index(k, frames_fps, fps) if fps else k
        if index >= len(files):
            break
        picks.append(index)
        k += 1
    decoded: dict[int, np.ndarray] = {}
    for index in picks:  # repeated indices (fps above the native rate) are read once
        if index not in decoded:
            decoded[index] = _read_image(files[index], resolution)
    shapes = {frame.shape for frame in decoded.values()}
    if len(shapes) > 1:
        raise VideoReadError(f"frames of different sizes {sorted(shapes)}; pass --resolution to resize them")
    return DecodedVideo(np.stack([decoded[i] for i in picks]), frames_fps, len(files))


def decode_image(path: Path, resolution: int | None = None, fps: float | None = None,
                 max_frames: int | None = None) -> DecodedVideo:
    """A still image as a 1-frame video."""
    return DecodedVideo(_read_image(Path(path), resolution)[None], 1.0, 1)


def decode_source(path: Path, resolution: int | None = None, fps: float | None = None,
                  max_frames: int | None = None, frames_fps: float = DEFAULT_FRAMES_FPS) -> DecodedVideo:
    """Decode a video file, a folder of frames or (for `prepare images`) an image file."""
    path = Path(path)
    if path.is_dir():
        return decode_frame_folder(path, resolution, fps, max_frames, frames_fps)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return decode_image(path, resolution)
    return decode_video(path, resolution, fps, max_frames)


# ----------------------------------------------------------------------------- captions

def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadInputError(f"{path}:{number}: not JSON ({err.msg}); expected "
                                '{"video": "relative/path.mp4", "caption": "text"}') from None
        if not (isinstance(row, dict) and isinstance(row.get("video"), str) and isinstance(row.get("caption"), str)):
            raise BadInputError(f"{path}:{number}: expected an object with string fields \"video\" and \"caption\"")
        pairs.append((row["video"], row["caption"]))
    return pairs


def _read_csv(path: Path, path_column: str, caption_column: str) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a BOM from Excel is not a column name
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in (path_column, caption_column) if c not in columns]
        if missing:
            raise BadInputError(f"{path} has no column {', '.join(map(repr, missing))} (its columns: "
                                f"{', '.join(columns) or 'none'}); name them with --path-column/--caption-column")
        return [(row[path_column] or "", row[caption_column] or "") for row in reader]


def read_caption_file(path: str | os.PathLike, path_column: str = "video",
                      caption_column: str = "caption") -> list[tuple[str, str]]:
    """(video path, caption) pairs of a .jsonl or .csv captions file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"captions file {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            return _read_csv(path, path_column, caption_column)
        if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            return _read_jsonl(path)
    except UnicodeDecodeError as err:
        raise BadInputError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    raise BadInputError(f"captions file {path}: use a .jsonl or a .csv file")


def _lookup_keys(name: str) -> list[str]:
    """Keys a captions file may use for the video named `name` (its relative path), most exact first."""
    path = PurePosixPath(name)
    return [name, str(path.with_suffix("")) if path.suffix else name, path.name, path.stem]


def match_captions(names: list[str], pairs: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """({video name: caption}, caption paths that name no video)."""
    index: dict[str, set[str]] = {}
    for level in range(4):  # exact path, path without suffix, file name, stem: first unique match wins
        for name in names:
            index.setdefault(f"{level}:{_lookup_keys(name)[level]}", set()).add(name)
    captions: dict[str, str] = {}
    unmatched: list[str] = []
    for raw, caption in pairs:
        key = raw.strip().replace("\\", "/").removeprefix("./")
        for level in range(4):
            hits = index.get(f"{level}:{key}", set())
            if len(hits) == 1:
                captions.setdefault(next(iter(hits)), caption.strip())
                break
        else:
            unmatched.append(raw)
    return captions, unmatched


def sidecar_caption(source: Path) -> str:
    """The caption in the .txt beside a video (clip.mp4 -> clip.txt; frames/ -> frames.txt), or ""."""
    text = source.with_name(source.name + ".txt") if source.is_dir() else source.with_suffix(".txt")
    if not text.is_file():
        return ""
    try:
        return text.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise BadInputError(f"{text} is not UTF-8 text ({err.reason} at byte {err.start})") from None


# ----------------------------------------------------------------------------- the whole job

def list_entries(src: str | os.PathLike, images: bool = False, classes: bool | None = None,
                 captions: str | os.PathLike | None = None, path_column: str = "video",
                 caption_column: str = "caption") -> tuple[list[VideoEntry], list[str], list[str]]:
    """(entries, class names, unmatched caption paths) of a folder; see the module docstring."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise BadInputError(f"source folder {src} does not exist")
    sources = find_sources(src, images)
    what = "images (png, jpg, webp)" if images else \
        "videos (mp4, avi, webm, mov, mkv, gif, or folders of png/jpg frames)"
    if not sources:
        raise BadInputError(f"no {what} under {src}")
    names = [s.relative_to(src).as_posix() for s in sources]
    # A video's class is its first folder below SRC; a folder of frames right in SRC has none.
    class_of = [n.split("/")[0] if "/" in n else None for n in names]
    if classes is None:
        classes = all(c is not None for c in class_of)
    elif classes and None in class_of:
        raise BadInputError(f"--classes: {names[class_of.index(None)]} is not in a class sub-folder of {src} "
                            "(put every video in SRC/<class>/ or pass --no-classes)")
    class_names = sorted({c for c in class_of if c is not None}) if classes else []
    label_of = {c: i for i, c in enumerate(class_names)}

    caption_file = Path(captions).expanduser() if captions is not None else src / DEFAULT_CAPTIONS
    pairs = read_caption_file(caption_file, path_column, caption_column) if (
        captions is not None or caption_file.is_file()) else []
    from_file, unmatched = match_captions(names, pairs)
    entries = []
    for source, name, cls in zip(sources, names, class_of):
        caption = from_file.get(name) or sidecar_caption(source)
        entries.append(VideoEntry(source, name, label_of[cls] if classes else -1, -1, caption))
    return entries, class_names, unmatched


def prepare_folder(src: str | os.PathLike, out: str | os.PathLike, resolution: int = 256,
                   fps: float | None = None, max_frames: int | None = None, workers: int = 1,
                   compression: str = "none", restart: bool = False, progress: Progress | None = None,
                   overwrite: bool = False, classes: bool | None = None, captions: str | os.PathLike | None = None,
                   path_column: str = "video", caption_column: str = "caption",
                   frames_fps: float = DEFAULT_FRAMES_FPS, images: bool = False) -> FolderReport:
    """Decode every video (or, with `images`, every image) under `src` into `out`.

    Resumable like `prepare_ucf101`: rerun with the same arguments after a crash. classes=None: on
    when every video is in a sub-folder. frames_fps: the frame rate of folders of frames."""
    start_time = time.perf_counter()
    out = check_decode_options(out, resolution, fps, max_frames, workers, compression)
    if not (frames_fps > 0 and np.isfinite(frames_fps)):
        raise BadInputError(f"--frames-fps must be a positive number, got {frames_fps}")
    entries, class_names, unmatched = list_entries(src, images, classes, captions, path_column, caption_column)
    # The captions change only the packed file (a resume keeps the decoded parts); their digest makes
    # an up-to-date file with other captions count as out of date.
    digest = hashlib.sha256(json.dumps([[e.name, e.caption] for e in entries]).encode()).hexdigest()[:16]
    args = {"format": STAGING_FORMAT, "source": str(Path(src).expanduser().resolve()),
            "kind": "images" if images else "videos", "classes": class_names, "resolution": resolution,
            "fps": None if images else fps, "max_frames": None if images else max_frames,
            "frames_fps": frames_fps, "compression": compression, "captions": digest}
    report = stage_and_pack(
        entries, class_names, out, args, resolution=resolution, fps=None if images else fps,
        max_frames=1 if images else max_frames, workers=workers, compression=compression, restart=restart,
        progress=progress, overwrite=overwrite,
        attrs={"split": "all", "fold": 0, "source": "images" if images else "folder",
               "kind": "images" if images else "videos", "unmatched_captions": json.dumps(unmatched)},
        decode=functools.partial(decode_source, frames_fps=frames_fps), start_time=start_time)
    failed = {name for name, _ in report.failed}
    captioned = sum(1 for e in entries if e.caption and e.name not in failed)
    return FolderReport(**vars(report), classes=class_names, captioned=captioned, unmatched_captions=unmatched)
