"""UCF-101 -> one HDF5 dataset file, crash-safe and resumable.

Source layout (as downloaded):
    SRC/UCF-101/<Class>/v_<Class>_gXX_cYY.avi       (or the class folders directly in SRC)
    SRC/ucfTrainTestlist/classInd.txt, trainlist0N.txt, testlist0N.txt   (or next to SRC)

An HDF5 file open for writing is not crash-safe, so decoding and packing are separate:
  1. stage: every video is decoded (in worker processes) into its own small file in OUT.parts/,
     written under a temporary name and renamed, so a part either exists whole or not at all;
     a video that cannot be decoded leaves NAME.failed.json with the reason. OUT.parts/args.json
     records the arguments, so a rerun resumes only with the same ones.
  2. pack: the parts are appended in split-list order to OUT.tmp (as soon as each is ready, while
     the workers go on decoding); when all are in, OUT.tmp is marked complete and renamed to OUT;
     only then is OUT.parts/ removed.
A run killed at any point and started again decodes only the videos without a part.

`stage_and_pack` is that machinery for any list of entries; `hpdm prepare folder|images`
(folder.py) uses it with its own entries and decoder.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import multiprocessing

import h5py
import numpy as np
from PIL import Image

from hpdm_core.data.h5store import VideoStore, VideoStoreWriter, compression_args, frame_chunks
from hpdm_core.data.video_io import DecodedVideo, VideoReadError, decode_video
from hpdm_core.errors import BadInputError, HPDMError
from hpdm_core.files import atomic_write, atomic_write_text, check_output, lock_output, reporting_full_disk

SPLITS = ("train", "test", "all")
STAGING_FORMAT = 1
# swscale refuses frames with a side of 16384 or more (a 4:3 video's longer side gets there from ~12288);
# 4096 is far above any use and keeps one frame under 70 MB.
MIN_RESOLUTION, MAX_RESOLUTION = 8, 4096
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_GROUP = re.compile(r"_g(\d+)_c(\d+)$")
_SAFE_PART = re.compile(r"[A-Za-z0-9_.-]{1,120}")
# Arguments that change only the packed file, not the decoded parts: a resume may change them.
OUTPUT_ONLY_ARGS = ("compression", "captions")

Progress = Callable[[str, int, int], None]  # (phase "decode" | "pack", done, total)


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    name: str  # file stem, e.g. v_ApplyEyeMakeup_g08_c01 (folder prepare: the path relative to SRC)
    label: int  # 0-based index into classInd.txt (-1: unlabelled)
    group: int  # the gXX id (-1 when the name has none)
    caption: str = ""  # stored with the video ("" = none)


@dataclass
class PrepareReport:
    out: Path
    videos: int = 0  # videos in the written file
    frames: int = 0
    decoded: int = 0  # videos decoded by this run (the rest came from an interrupted run's parts)
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, reason), skipped
    up_to_date: bool = False  # OUT already held exactly this data; nothing was done
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["failed"] = [{"name": n, "reason": r} for n, r in self.failed]
        return d


# ----------------------------------------------------------------------------- source layout

def locate(src: str | os.PathLike) -> tuple[Path, Path]:
    """(video root holding the class folders, ucfTrainTestlist folder) of a UCF-101 download."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise BadInputError(f"UCF-101 source folder {src} does not exist (expected SRC/UCF-101/<Class>/*.avi)")
    video_root = src / "UCF-101" if (src / "UCF-101").is_dir() else src
    for lists in (src / "ucfTrainTestlist", video_root / "ucfTrainTestlist", src.parent / "ucfTrainTestlist"):
        if lists.is_dir():
            return video_root, lists
    raise BadInputError(
        f"no ucfTrainTestlist/ folder in or next to {src}; unpack UCF101TrainTestSplits-RecognitionTask.zip there")


def _split_lines(path: Path) -> list[str]:
    """A split file's lines; BadInputError for bytes that are not text (the official lists are ASCII)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise BadInputError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x}); the official "
                            "split lists are plain ASCII: download them again") from None


def read_class_index(lists: Path) -> list[str]:
    """Class names in label order from classInd.txt ("1 ApplyEyeMakeup" per line)."""
    path = lists / "classInd.txt"
    if not path.is_file():
        raise BadInputError(f"split file {path} is missing (it comes with the official train/test lists)")
    classes: dict[int, str] = {}
    for number, line in enumerate(_split_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise BadInputError(f"{path}:{number}: expected '<index> <ClassName>', got {line!r}")
        classes[int(parts[0])] = parts[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise BadInputError(f"{path}: class indices must run 1..N without gaps")
    return [classes[i] for i in range(1, len(classes) + 1)]


def list_videos(src: str | os.PathLike, split: str = "all", fold: int = 1) -> tuple[list[VideoEntry], list[str]]:
    """Entries of a split (train list, then test list for "all") and the class names."""
    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if fold not in (1, 2, 3):
        raise BadInputError(f"fold must be 1, 2 or 3, got {fold}")
    video_root, lists = locate(src)
    class_names = read_class_index(lists)
    label_of = {name: i for i, name in enumerate(class_names)}
    label_of_lower = {name.lower(): i for i, name in enumerate(class_names)}
    kinds = ("train", "test") if split == "all" else (split,)
    entries: list[VideoEntry] = []
    seen: set[str] = set()
    for kind in kinds:
        path = lists / f"{kind}list0{fold}.txt"
        if not path.is_file():
            raise BadInputError(f"split file {path} is missing (it comes with the official train/test lists)")
        for number, line in enumerate(_split_lines(path), 1):
            if not line.strip():
                continue
            relative = line.split()[0]
            class_dir, _, filename = relative.replace("\\", "/").rpartition("/")
            label = label_of.get(class_dir, label_of_lower.get(class_dir.lower()))
            if label is None:
                raise BadInputError(f"{path}:{number}: class {class_dir!r} is not in classInd.txt")
            name = Path(filename).stem
            if name in seen:
                continue
            seen.add(name)
            match = _GROUP.search(name)
            entries.append(VideoEntry(video_root / class_dir / filename, name, label,
                                      int(match.group(1)) if match else -1))
    return entries, class_names


# ----------------------------------------------------------------------------- staging

def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def part_name(name: str) -> str:
    """File name stem of a video's part: the name itself when it is a plain file name (UCF-101),
    else a readable tail of it plus a hash, so that "a/b" and "a_b" get different parts."""
    if _SAFE_PART.fullmatch(name) and not name.startswith("."):
        return name
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-60:].lstrip(".")
    return f"{tail}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:12]}"


# How frames become `resolution` x `resolution` (the `preparation` attribute of the file):
#   area       shorter side area-resized, centre crop (hpdm's default: the least aliasing)
#   styleganv  what StyleGAN-V's src/scripts/convert_videos_to_frames.py does to UCF-101 before its FVD:
#              PIL LANCZOS resize of the shorter side (torchvision's resize rule), torchvision's centre
#              crop, then a JPEG file. It asks for `q=95`, a keyword Pillow ignores, so its frames are
#              JPEGs at Pillow's default quality (75, 4:2:0): reproduced here by the same round trip.
PREPARATIONS = ("area", "styleganv")


def styleganv_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """One uint8 [H, W, 3] frame converted as StyleGAN-V converts UCF-101 (see PREPARATIONS)."""
    image = Image.fromarray(frame)
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)  # torchvision's rule for an int size: the shorter side becomes `size`
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    image = image.resize((new_w, new_h), Image.LANCZOS)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))  # torchvision's centre crop
    image = image.crop((left, top, left + size, top + size))
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG")  # Pillow's defaults: what `save(path, q=95)` gives
    encoded.seek(0)
    return np.asarray(Image.open(encoded).convert("RGB"))


def stage_video(entry: VideoEntry, parts: Path, resolution: int, fps: float | None,
                max_frames: int | None, compress: bool = False,
                decode: Callable[..., DecodedVideo] = decode_video, preparation: str = "area"
                ) -> tuple[str, int, float, str]:
    """Decode one video into parts/NAME.h5 (or NAME.failed.json); returns (name, frames, fps, error).

    Runs in a worker process and writes its own part, so only a few numbers cross the pipe.
    `decode(path, resolution, fps, max_frames)`: a module-level function (it is pickled to workers).
    """
    part = part_name(entry.name)
    try:
        video = decode(entry.path, resolution if preparation == "area" else None, fps, max_frames)
    except VideoReadError as err:
        atomic_write_text(parts / f"{part}.failed.json", json.dumps({"reason": str(err)}))
        return entry.name, 0, 0.0, str(err)
    frames = video.frames
    if preparation == "styleganv":
        frames = np.stack([styleganv_frame(frame, resolution) for frame in frames])
    with atomic_write(parts / f"{part}.h5") as tmp, h5py.File(tmp, "w") as f:
        # Raw parts keep the serial packing step a plain copy; when the output is compressed the
        # user cares about disk space, so the parts get the cheap lzf too.
        if compress:
            f.create_dataset("frames", data=frames, chunks=frame_chunks(*frames.shape[1:3], min(8, len(frames))),
                             **compression_args("lzf"))
        else:
            f.create_dataset("frames", data=frames)
        f.attrs["native_fps"] = video.native_fps
    return entry.name, len(frames), video.native_fps, ""


def _stage_job(job: tuple) -> tuple[str, int, float, str]:
    return stage_video(*job)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the kernel kills this worker when the parent dies, even by SIGKILL (Linux).
    Otherwise orphaned workers wait forever for jobs, holding the parent's files open."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the getppid check below still covers a dead parent
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _prepare_staging(parts: Path, args: dict, restart: bool) -> None:
    # Parts do not depend on the output's compression: a resume may change it.
    args = {k: v for k, v in args.items() if k not in OUTPUT_ONLY_ARGS}
    args_path = parts / "args.json"
    if restart and parts.exists():
        shutil.rmtree(parts)
    if parts.exists() and args_path.is_file():
        previous = json.loads(args_path.read_text())
        if previous != args:
            changed = ", ".join(f"{k}: {previous.get(k)!r} -> {v!r}" for k, v in args.items() if previous.get(k) != v)
            raise BadInputError(
                f"{parts} holds an interrupted run with other arguments ({changed}); run again with the same "
                "arguments to resume it, or pass --restart to discard it")
    parts.mkdir(parents=True, exist_ok=True)
    for leftover in [*parts.glob("*.tmp-*"), *parts.glob("*.tmp")]:  # half-written files of a killed run
        leftover.unlink(missing_ok=True)
    atomic_write_text(args_path, json.dumps(args, indent=1))


def _staged_result(parts: Path, name: str) -> tuple[str, int, float, str] | None:
    """What an earlier run left for this video, or None when it still has to be decoded."""
    failed = parts / f"{part_name(name)}.failed.json"
    if failed.is_file():
        return name, 0, 0.0, json.loads(failed.read_text())["reason"]
    part = parts / f"{part_name(name)}.h5"
    if part.is_file():
        with h5py.File(part, "r") as f:
            return name, int(f["frames"].shape[0]), float(f.attrs["native_fps"]), ""
    return None


# ----------------------------------------------------------------------------- the whole job

def prepare_ucf101(src: str | os.PathLike, out: str | os.PathLike, split: str = "all", fold: int = 1,
                   resolution: int = 256, fps: float | None = None, max_frames: int | None = None,
                   workers: int = 1, compression: str = "none", restart: bool = False,
                   progress: Progress | None = None, overwrite: bool = False,
                   preparation: str = "area") -> PrepareReport:
    """Decode a UCF-101 split into `out` (see the module docstring for the crash-safety scheme).

    An `out` that already holds this split with these arguments is left as it is (up_to_date); any
    other existing file is replaced only with overwrite=True."""
    start_time = time.perf_counter()
    out = check_decode_options(out, resolution, fps, max_frames, workers, compression)
    if preparation not in PREPARATIONS:
        raise BadInputError(f"unknown preparation {preparation!r}; choose one of {', '.join(PREPARATIONS)}")
    entries, class_names = list_videos(src, split, fold)
    if not entries:
        raise BadInputError(f"the {split} split of fold {fold} lists no videos")
    args = {"format": STAGING_FORMAT, "source": str(Path(src).expanduser().resolve()), "split": split,
            "fold": fold, "resolution": resolution, "fps": fps, "max_frames": max_frames,
            "compression": compression}
    if preparation != "area":  # only then: files and interrupted runs made before the option keep their args
        args["preparation"] = preparation
    return stage_and_pack(entries, class_names, out, args, resolution=resolution, fps=fps, max_frames=max_frames,
                          workers=workers, compression=compression, restart=restart, progress=progress,
                          overwrite=overwrite, attrs={"split": split, "fold": fold, "source": "ucf101"},
                          start_time=start_time)


def check_decode_options(out: str | os.PathLike, resolution: int, fps: float | None, max_frames: int | None,
                         workers: int, compression: str) -> Path:
    """The output path, after checking the options every decoding prepare shares (BadInputError)."""
    out = check_output(out, overwrite=True)  # a folder or an unwritable place; an existing file is decided later
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise BadInputError(f"--resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, "
                            f"got {resolution}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):  # inf would repeat frame 0 forever
        raise BadInputError(f"--fps must be a positive number, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise BadInputError(f"--max-frames must be at least 1, got {max_frames}")
    if workers < 1:
        raise BadInputError(f"--workers must be at least 1, got {workers}")
    compression_args(compression)
    return out


def stage_and_pack(entries: list[VideoEntry], class_names: list[str], out: Path, args: dict, *, resolution: int,
                   fps: float | None, max_frames: int | None, workers: int, compression: str, restart: bool,
                   progress: Progress | None, overwrite: bool, attrs: dict[str, Any],
                   decode: Callable[..., DecodedVideo] = decode_video,
                   start_time: float | None = None) -> PrepareReport:
    """Decode `entries` in parallel into staged parts and pack them, in order, into `out`.

    `args`: everything the result depends on (recorded in the file; a rerun with the same args resumes
    or finds the file up to date). `attrs`: split, fold, source and any other file attributes.
    Entries with equal names must not occur (each has its own part).

    One writer per output: a second exits 2 before touching OUT.tmp or OUT.parts/; a full disk is a message."""
    start_time = time.perf_counter() if start_time is None else start_time
    with lock_output(out), reporting_full_disk(out, what="the dataset file"):
        return _stage_and_pack_locked(entries, class_names, out, args, resolution, fps, max_frames, workers,
                                      compression, restart, progress, overwrite, attrs, decode, start_time)


def _stage_and_pack_locked(entries, class_names, out, args, resolution, fps, max_frames, workers, compression,
                           restart, progress, overwrite, attrs, decode, start_time) -> PrepareReport:
    report = PrepareReport(out)
    parts = staging_dir(out)

    if not restart and _is_up_to_date(out, args):
        shutil.rmtree(parts, ignore_errors=True)  # a run killed right after its rename
        store = VideoStore(out)
        report.videos, report.frames, report.up_to_date = len(store), int(store.lengths.sum()), True
        report.failed = [(d["name"], d["reason"]) for d in json.loads(store.attrs.get("failed", "[]"))]
        store.close()
        report.seconds = time.perf_counter() - start_time
        return report

    if out.exists() and not overwrite:
        raise BadInputError(f"{out} exists and was not made by this command with these arguments; pass --overwrite "
                            "to replace it")
    _prepare_staging(parts, args, restart)
    results: dict[str, tuple[str, int, float, str]] = {}
    pending = []
    for entry in entries:
        staged = _staged_result(parts, entry.name)
        if staged is None:
            pending.append(entry)
        else:
            results[entry.name] = staged
    report.reused = sum(not staged[3] for staged in results.values())  # videos, not failure notes
    total = len(entries)
    if progress:
        progress("decode", len(results), total)

    # Pack in split-list order while the workers decode: the main process is idle otherwise, and
    # the order (so the file) does not depend on which worker finishes first.
    writer = VideoStoreWriter(out, resolution, resolution, compression)
    packed = 0

    def pack_ready() -> None:
        nonlocal packed
        while packed < total and entries[packed].name in results:
            entry = entries[packed]
            if not results[entry.name][3]:
                with h5py.File(parts / f"{part_name(entry.name)}.h5", "r") as f:
                    writer.append(f["frames"][...], label=entry.label, name=entry.name, group=entry.group,
                                  caption=entry.caption)
            packed += 1
            if progress:
                progress("pack", packed, total)

    try:
        pack_ready()
        jobs = [(entry, parts, resolution, fps, max_frames, compression != "none", decode,
                 args.get("preparation", "area")) for entry in pending]
        for result in _run_jobs(jobs, workers):
            results[result[0]] = result
            report.decoded += not result[3]  # a video that failed to decode was not decoded
            if progress:
                progress("decode", len(results), total)
            pack_ready()
        report.failed = [(e.name, results[e.name][3]) for e in entries if results[e.name][3]]
        good = [e for e in entries if not results[e.name][3]]
        if not good:
            raise HPDMError(f"none of the {total} videos could be decoded; first error: {report.failed[0][1]}")
        native = Counter(round(results[e.name][2], 3) for e in good).most_common(1)[0][0]
        writer.finish(class_names, fps=fps or native, **attrs,
                      prepare_args=json.dumps(args, sort_keys=True),
                      failed=json.dumps([{"name": n, "reason": r} for n, r in report.failed]),
                      max_frames=max_frames or 0, preparation=args.get("preparation", "area"))
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(parts, ignore_errors=True)
    report.videos = len(good)
    report.frames = sum(results[e.name][1] for e in good)
    report.seconds = time.perf_counter() - start_time
    return report


def _run_jobs(jobs: list[tuple], workers: int):
    """Yield stage results as they finish; in-process for one worker, else a process pool."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _stage_job(job)
        return
    # fork starts workers at once, but is only safe while the parent has no other threads (a lock
    # held by one would stay locked in the child); otherwise spawn, which re-imports the main module.
    single_threaded = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if single_threaded else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                             initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_stage_job, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _is_up_to_date(out: Path, args: dict) -> bool:
    if not out.is_file():
        return False
    try:
        store = VideoStore(out)
    except HPDMError:
        return False
    try:
        return store.attrs.get("prepare_args") == json.dumps(args, sort_keys=True)
    finally:
        store.close()
