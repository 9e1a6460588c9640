"""The dataset file: every video of a set in one HDF5 file.

Layout (format 1):
    frames   uint8 [total_frames, H, W, 3]   all videos concatenated along time, chunked
    offsets  int64 [N + 1]                   video i is frames[offsets[i]:offsets[i + 1]]
    labels   int64 [N]                       class index, or -1 when unlabelled
    names    str   [N]                       e.g. "v_ApplyEyeMakeup_g08_c01" or "sample_000017"
    groups   int64 [N]                       UCF-101 group (gXX), -1 when not applicable
    captions str   [N]  (optional)           UTF-8 caption per video, "" when it has none; written
                                             only when some video has one
    attrs    format_version, class_names (JSON list), fps, resolution ([H, W]), split, fold,
             source, hpdm_version, completed (True only once the file is whole),
             kind ("videos", or "images": every entry is one still frame; absent = videos)

Writers write to a temporary name and rename when complete, so a file under the final name
always has completed=True. Readers open lazily, so a VideoStore can be pickled into
DataLoader workers (fork and spawn) and each worker gets its own handle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpdm_core.version import __version__
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.files import atomic_write

FORMAT_VERSION = 1
REQUIRED_DATASETS = ("frames", "offsets", "labels", "names", "groups")
COMPRESSIONS = ("none", "lzf", "gzip")
KINDS = ("videos", "images")


def frame_chunks(height: int, width: int, frames_per_chunk: int = 8) -> tuple[int, int, int, int]:
    """Chunks of a few whole frames: a clip read touches few chunks, and each compresses alone."""
    return (frames_per_chunk, height, width, 3)


def compression_args(compression: str) -> dict[str, Any]:
    if compression not in COMPRESSIONS:
        raise BadInputError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    return {"compression": "lzf"}


class LazyH5File:
    """A read-only HDF5 file opened on first use in each process. Pickling carries only the path, so
    every DataLoader worker (fork or spawn) opens its own handle."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None


class VideoStore(LazyH5File):
    """Read-only view of a dataset file; opens the HDF5 handle on first use in each process."""

    def __init__(self, path: str | os.PathLike, check: bool = True):
        super().__init__(path)
        if check:
            self.validate()

    def validate(self) -> None:
        """Raise a clear error unless the path is a complete dataset file."""
        if not self.path.exists():
            raise MissingResourceError(f"dataset file {self.path} does not exist (make one with `hpdm prepare`)")
        if self.path.is_dir():
            raise BadInputError(f"{self.path} is a folder; give a dataset file (.h5) made by `hpdm prepare`")
        try:
            f = self.file
        except OSError as err:
            raise BadInputError(f"{self.path} is not a readable HDF5 file: {err}") from None
        missing = [name for name in REQUIRED_DATASETS if name not in f]
        if missing:
            raise BadInputError(
                f"{self.path} is not an hpdm dataset file: missing {', '.join(missing)} "
                "(make one with `hpdm prepare ucf101|synthetic`)"
            )
        if not bool(f.attrs.get("completed", False)):
            raise BadInputError(f"{self.path} is incomplete (its writer did not finish); prepare it again")
        frames = f["frames"]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise BadInputError(f"{self.path}: frames must be uint8 [frames, H, W, 3] (RGB), got {frames.dtype} "
                                f"{list(frames.shape)}; make the file with `hpdm prepare`")
        offsets = f["offsets"]
        if offsets.shape[0] != f["labels"].shape[0] + 1 or int(offsets[-1]) != f["frames"].shape[0]:
            raise BadInputError(f"{self.path}: offsets do not match frames/labels; the file is damaged")
        if "captions" in f and f["captions"].shape[0] != f["labels"].shape[0]:
            raise BadInputError(f"{self.path}: captions do not have one entry per video; the file is damaged")
        if self.kind not in KINDS:
            raise BadInputError(f"{self.path}: unknown kind {self.kind!r} (expected one of {', '.join(KINDS)})")

    def verify(self) -> None:
        """Deeper than validate(): per-video arrays agree, labels name a class, every frame is readable."""
        self.validate()
        f, n = self.file, len(self)
        if f["names"].shape[0] != n or f["groups"].shape[0] != n:
            raise BadInputError(f"{self.path}: names/groups do not have one entry per video; the file is damaged")
        if n and np.any(np.diff(self.offsets) < 1):
            raise BadInputError(f"{self.path}: a video has no frames (offsets not increasing); the file is damaged")
        if self.kind == "images" and n and np.any(np.diff(self.offsets) != 1):
            raise BadInputError(f"{self.path}: an images file has an entry of more than one frame; the file is damaged")
        labels, classes = self.labels, len(self.class_names)
        if n and (labels.min() < -1 or labels.max() >= classes):
            raise BadInputError(f"{self.path}: labels outside 0..{classes - 1} (or -1); the file is damaged")
        frames = f["frames"]
        chunk = frames.chunks[0] if frames.chunks else 64
        try:  # reading every chunk once makes a truncated or corrupted file show up here
            for start in range(0, frames.shape[0], chunk * 8):
                frames[start:start + chunk * 8]
        except OSError as err:
            raise BadInputError(f"{self.path}: frames are unreadable ({err}); the file is damaged") from None

    def __len__(self) -> int:
        return int(self.file["labels"].shape[0])

    @property
    def offsets(self) -> np.ndarray:
        return self.file["offsets"][...]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def labels(self) -> np.ndarray:
        return self.file["labels"][...]

    @property
    def names(self) -> list[str]:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in self.file["names"][...]]

    @property
    def groups(self) -> np.ndarray:
        return self.file["groups"][...]

    @property
    def captions(self) -> list[str]:
        """One caption per video ("" = none); all "" for a file written without captions."""
        if "captions" not in self.file:
            return [""] * len(self)
        return [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in self.file["captions"][...]]

    @property
    def kind(self) -> str:
        """"videos", or "images" when every entry is one still frame (training repeats it along time)."""
        kind = self.file.attrs.get("kind", "videos")
        return kind.decode() if isinstance(kind, bytes) else str(kind)

    @property
    def class_names(self) -> list[str]:
        return json.loads(self.file.attrs.get("class_names", "[]"))

    @property
    def resolution(self) -> tuple[int, int]:
        h, w = self.file["frames"].shape[1:3]
        return int(h), int(w)

    @property
    def attrs(self) -> dict[str, Any]:
        out = {}
        for key, value in self.file.attrs.items():
            out[key] = value.item() if isinstance(value, np.generic) else (
                value.tolist() if isinstance(value, np.ndarray) else value)
        return out

    def video(self, index: int, start: int = 0, length: int | None = None, stride: int = 1) -> np.ndarray:
        """uint8 [F, H, W, 3] frames start, start+stride, ... of video `index`."""
        begin, end = (int(v) for v in self.file["offsets"][index:index + 2])
        first = begin + start
        stop = end if length is None else min(end, first + (length - 1) * stride + 1)
        return self.file["frames"][first:stop:stride]

    def summary(self) -> dict[str, Any]:
        attrs = self.attrs
        lengths = self.lengths
        return {
            "path": str(self.path),
            "videos": len(self),
            "frames": int(lengths.sum()),
            "min_frames": int(lengths.min()) if len(lengths) else 0,
            "max_frames": int(lengths.max()) if len(lengths) else 0,
            "classes": len(self.class_names),
            "kind": self.kind,
            "captioned": sum(1 for c in self.captions if c),
            "resolution": list(self.resolution),
            "fps": float(attrs.get("fps", 0.0)),
            "split": attrs.get("split", ""),
            "fold": int(attrs.get("fold", 0)),
            "source": attrs.get("source", ""),
            "unreadable_skipped": len(json.loads(attrs.get("failed", "[]"))),
            "hpdm_version": attrs.get("hpdm_version", ""),
            **({"holdout_pairs": json.loads(attrs["holdout_pairs"])} if "holdout_pairs" in attrs else {}),
        }


FINGERPRINT_VERSION = "v2"


def fingerprinted_frames(offsets: np.ndarray) -> list[int]:
    """Which frames the fingerprint hashes: the first, middle and last frame of every video (file indices)."""
    picked: list[int] = []
    for begin, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        picked.extend(sorted({begin, (begin + end - 1) // 2, end - 1}))
    return picked


def structural_fingerprint(store: VideoStore) -> str:
    """Version 1 of the fingerprint (no prefix): video lengths, labels, groups, names, classes, frame shape.

    It reads no pixel, so two files of the same layout but other frames share it; kept only so that run
    folders and classifiers made before version 2 still recognise their file (`fingerprint_matches`)."""
    digest = hashlib.sha256()
    for array in (store.offsets, store.labels, store.groups):
        digest.update(np.ascontiguousarray(array, np.int64).tobytes())
    digest.update(json.dumps([store.names, store.class_names, list(store.file["frames"].shape[1:])]).encode())
    return digest.hexdigest()[:32]


def dataset_fingerprint(store: VideoStore) -> str:
    """A hash of the file's content, "v2:" + 32 hex digits: its structure (as version 1) and the pixels of
    the first, middle and last frame of every video.

    Reading three frames per video keeps it fast for UCF-101 (13,320 videos: 40k of its ~2.5M frames) while
    any other preparation, seed or source changes the hash. It tells whether a moved or renamed file holds the
    same data (a resumed run, a classifier's held-out indices)."""
    digest = hashlib.sha256(structural_fingerprint(store).encode())
    frames = store.file["frames"]
    for index in fingerprinted_frames(store.offsets):
        digest.update(np.ascontiguousarray(frames[index]).data)
    return f"{FINGERPRINT_VERSION}:{digest.hexdigest()[:32]}"


def fingerprint_matches(recorded: str, store: VideoStore, current: str | None = None) -> bool:
    """Whether `store` is the data a run or classifier recorded as `recorded`.

    A version 2 fingerprint is compared with the content hash (`current`, when the caller has it already);
    an older one (no "v2:" prefix) with the structural hash, the most it ever promised."""
    if recorded.startswith(f"{FINGERPRINT_VERSION}:"):
        return recorded == (current if current is not None else dataset_fingerprint(store))
    return recorded == structural_fingerprint(store)


class VideoStoreWriter:
    """Append videos to `path` + ".tmp"; `finish()` marks the file complete and renames it.

    Used for whole-in-one-go writes (synthetic sets, generated samples). `hpdm prepare ucf101`
    resumes across crashes and so stages decoded videos before it packs them with this writer.
    """

    def __init__(self, path: str | os.PathLike, height: int, width: int, compression: str = "none",
                 frames_per_chunk: int = 8):
        self.path = Path(path)
        # A fixed temporary name: `hpdm prepare ucf101` finds an interrupted OUT.tmp by it.
        self._file_out = atomic_write(self.path, tmp_name=self.path.name + ".tmp")
        self.tmp_path = self._file_out.tmp
        # A new inode rather than truncating: a killed run's process may still hold HDF5's lock on the old
        # one (a lock is per file, so it does not follow the name), and everything in it is rewritten anyway.
        self.tmp_path.unlink(missing_ok=True)
        self._file = h5py.File(self.tmp_path, "w")
        self._frames = self._file.create_dataset(
            "frames", shape=(0, height, width, 3), maxshape=(None, height, width, 3), dtype=np.uint8,
            chunks=frame_chunks(height, width, frames_per_chunk), **compression_args(compression))
        self._offsets = [0]
        self._labels: list[int] = []
        self._names: list[str] = []
        self._groups: list[int] = []
        self._captions: list[str] = []

    def append(self, video: np.ndarray, label: int = -1, name: str = "", group: int = -1,
               caption: str = "") -> None:
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[1:] != self._frames.shape[1:]:
            raise BadInputError(f"expected uint8 video [F, {self._frames.shape[1]}, {self._frames.shape[2]}, 3], "
                                f"got {video.dtype} {list(video.shape)}")
        start = self._frames.shape[0]
        self._frames.resize(start + video.shape[0], axis=0)
        self._frames[start:] = video
        self._offsets.append(start + video.shape[0])
        self._labels.append(int(label))
        self._names.append(name or f"video_{len(self._names):06d}")
        self._groups.append(int(group))
        self._captions.append(str(caption))

    def __len__(self) -> int:
        return len(self._labels)

    def finish(self, class_names: list[str], fps: float, split: str = "", fold: int = 0,
               source: str = "", **extra_attrs: Any) -> Path:
        f = self._file
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64))
        f.create_dataset("labels", data=np.asarray(self._labels, dtype=np.int64))
        f.create_dataset("names", data=np.asarray(self._names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("groups", data=np.asarray(self._groups, dtype=np.int64))
        if any(self._captions):  # a file without captions keeps the old layout exactly
            f.create_dataset("captions", data=np.asarray(self._captions, dtype=object),
                             dtype=h5py.string_dtype("utf-8"))
        attrs = {
            "format_version": FORMAT_VERSION, "class_names": json.dumps(list(class_names)), "fps": float(fps),
            "resolution": list(self._frames.shape[1:3]), "split": split, "fold": int(fold), "source": source,
            "hpdm_version": __version__, **extra_attrs,
        }
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["completed"] = True
        f.close()
        return self._file_out.commit()

    def abort(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self._file_out.discard()

    def __enter__(self) -> "VideoStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
