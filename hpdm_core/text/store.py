"""Text embeddings in the dataset file: computed once from its captions, read by training.

Group `text` of the dataset file (notes/INTERFACES.md):
    text/embeddings  float16 [N, T, D]  the encoder's last hidden states, zeros after the last token
    text/mask        bool    [N, T]     True on real tokens; all False for a video without caption
    attrs            fingerprint, encoder, dim, max_tokens, random_weights, completed, captioned, truncated

The dataset file is never written in place: an HDF5 file killed mid-write can be left unreadable,
frames and all. `encode_file` writes a copy (F.h5.text.tmp beside it), adds the group to the copy and
renames it over the original. The cost is one copy of the file: its size again in free disk space while
it runs, and the time to copy it (a plain byte copy; when old embeddings are replaced, the other
datasets are copied through HDF5 instead so that the old group's space is not kept). An interrupted
run leaves the original untouched and is simply run again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from hpdm_core.data.h5store import LazyH5File, VideoStore
from hpdm_core.errors import BadInputError, MissingResourceError
from hpdm_core.files import check_output
from hpdm_core.text.encoder import TextEncoder

GROUP = "text"
CHUNK_BYTES = 1 << 20  # embeddings chunked by whole rows, about this many bytes a chunk
ENCODE_HINT = "run `hpdm encode-text --data {path} --text-encoder PATH`"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_captions(path: str | os.PathLike) -> list[str]:
    """The captions of a complete dataset file; BadInputError (exit 2) when it has none."""
    store = VideoStore(path)
    try:
        f = store.file
        if "captions" not in f:
            raise BadInputError(f"{path} has no captions to encode; write a dataset file with captions "
                                "(`hpdm prepare synthetic --captions`, `hpdm prepare folder` with a captions file)")
        captions = [str(c) for c in f["captions"].asstr()[...]]
        if len(captions) != len(store):
            raise BadInputError(f"{path}: {len(captions)} captions for {len(store)} videos; the file is damaged")
        return captions
    finally:
        store.close()


def has_embeddings(path: str | os.PathLike) -> dict[str, Any] | None:
    """The attrs of the file's complete text group, or None when it has none."""
    with h5py.File(path, "r") as f:
        group = f.get(GROUP)
        if not isinstance(group, h5py.Group) or not bool(group.attrs.get("completed", False)):
            return None
        return {key: _plain(value) for key, value in group.attrs.items()}


def check_encodable(path: str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Before loading an encoder (minutes for T5-11B): the file's captions, or the error that stops the run."""
    captions = read_captions(path)
    check_output(path, overwrite=True, what="--data")  # its folder must take the copy that replaces it
    old = has_embeddings(path)
    if old is not None and not overwrite:
        raise BadInputError(f"{path} already has text embeddings (encoder {old.get('encoder')}, fingerprint "
                            f"{old.get('fingerprint')}); pass --overwrite to replace them")
    return captions


def _copy_without_text(src: Path, dst: Path) -> None:
    """dst = src without a `text` group: a byte copy when there is none, else object by object."""
    with h5py.File(src, "r") as f:
        has_text = GROUP in f
    if not has_text:
        shutil.copyfile(src, dst)
    else:
        with h5py.File(src, "r") as f, h5py.File(dst, "w") as out:
            for name in f:
                if name != GROUP:
                    f.copy(f[name], out, name=name)
            for key, value in f.attrs.items():
                out.attrs[key] = value
    shutil.copymode(src, dst)


def token_counts(encoder: TextEncoder, texts: Sequence[str]) -> list[int]:
    """Tokens of each text before truncation, </s> included; 0 for no caption."""
    return [len(encoder.tokenizer(text)["input_ids"]) if text.strip() else 0 for text in texts]


def encode_file(path: str | os.PathLike, encoder: TextEncoder, batch_size: int = 32, overwrite: bool = False,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Encode the captions of dataset file `path` into its `text` group (module docstring); a summary."""
    path = Path(path)
    captions = check_encodable(path, overwrite)
    if batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1, got {batch_size}")
    n, tokens, dim = len(captions), encoder.max_tokens, encoder.dim
    counts = token_counts(encoder, captions)
    tmp = path.with_name(path.name + ".text.tmp")
    tmp.unlink(missing_ok=True)  # a killed run's copy: start again from the original
    need = path.stat().st_size + n * tokens * (dim * 2 + 1)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise BadInputError(f"encoding the captions of {path} needs {need / 2**30:.2f} GiB free beside it (a copy of "
                            f"the file plus the embeddings), only {free / 2**30:.2f} GiB are; free some space")
    try:
        _copy_without_text(path, tmp)
        with h5py.File(tmp, "r+") as f:
            group = f.create_group(GROUP)
            group.attrs["completed"] = False
            rows = max(1, min(n, CHUNK_BYTES // (tokens * dim * 2)))
            embeddings = group.create_dataset("embeddings", shape=(n, tokens, dim), dtype=np.float16,
                                              chunks=(rows, tokens, dim) if n else None)
            mask = group.create_dataset("mask", shape=(n, tokens), dtype=bool)
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                hidden, real = encoder.encode(captions[start:stop], batch_size=batch_size)
                half = hidden.numpy().astype(np.float16)
                if not np.isfinite(half).all():
                    raise BadInputError(f"the text encoder's outputs overflow float16 (|x| > 65504) for videos "
                                        f"{start}..{stop - 1}; this encoder cannot be stored in half precision")
                embeddings[start:stop] = half
                mask[start:stop] = real.numpy()
                if progress is not None:
                    progress(stop, n)
            attrs = {"fingerprint": encoder.fingerprint, "encoder": encoder.name,
                     "encoder_path": str(Path(encoder.path).resolve()), "dim": dim, "max_tokens": tokens,
                     "random_weights": bool(encoder.random_weights), "captioned": sum(c > 0 for c in counts),
                     "truncated": sum(c > tokens for c in counts)}
            for key, value in attrs.items():
                group.attrs[key] = value
            group.attrs["completed"] = True
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "videos": n, **attrs}


def encode_prompts(encoder: TextEncoder, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as the training data holds captions: float16 [k, T, D] and bool [k, T] numpy arrays
    (rounded through float16 as the stored embeddings are, so sampling sees what training saw)."""
    hidden, mask = encoder.encode(list(prompts))
    return hidden.numpy().astype(np.float16), mask.numpy()


class TextEmbeddings(LazyH5File):
    """Read-only view of a dataset file's text group; opens the HDF5 handle on first use in each process
    (picklable into DataLoader workers, like VideoStore)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._validate()

    def _validate(self) -> None:
        if not self.path.exists():
            raise MissingResourceError(f"dataset file {self.path} does not exist")
        try:
            f = self.file
        except OSError as err:
            raise BadInputError(f"{self.path} is not a readable HDF5 file: {err}") from None
        group = f.get(GROUP)
        if not isinstance(group, h5py.Group) or not bool(group.attrs.get("completed", False)):
            raise BadInputError(f"{self.path} has no text embeddings; {ENCODE_HINT.format(path=self.path)}")
        shape, videos = group["embeddings"].shape, f["labels"].shape[0] if "labels" in f else None
        if (group["mask"].shape != shape[:2] or shape[1:] != (self.info["max_tokens"], self.info["dim"])
                or (videos is not None and shape[0] != videos)):
            raise BadInputError(f"{self.path}: text embeddings {list(shape)} do not match the file "
                                f"({videos} videos); {ENCODE_HINT.format(path=self.path)} --overwrite")

    @property
    def info(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in self.file[GROUP].attrs.items()}

    def __len__(self) -> int:
        return int(self.file[GROUP]["mask"].shape[0])

    def rows(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens float16 [k, T, D] and mask bool [k, T] of videos `indices` (any order, repeats allowed)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        info = self.info
        if not indices.size:
            return (np.zeros((0, info["max_tokens"], info["dim"]), np.float16),
                    np.zeros((0, info["max_tokens"]), bool))
        if (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"video index out of range 0..{len(self) - 1}")
        unique, inverse = np.unique(indices, return_inverse=True)  # h5py reads increasing indices
        group = self.file[GROUP]
        tokens, mask = group["embeddings"][unique], group["mask"][unique]
        return tokens[inverse], mask[inverse]
