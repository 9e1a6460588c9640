"""Files every command writes: atomic replacement, the --overwrite rule, and the run-folder lock.

- `atomic_write`: write to a temporary name in the same folder, then rename. A reader (or a run
  killed mid-write) sees the old file or the new one, never half of one.
- `check_output`: an output path must be writable and, unless `overwrite`, must not exist yet;
  commands call it before any long work, so a bad --out fails in a second, not after sampling.
- `lock_run_dir`: a run folder is used by one process at a time (fcntl.flock on RUN/.lock). The OS
  drops the lock when the process ends in any way, SIGKILL included, so it is never stale.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Callable

from hpdm_core.errors import BadInputError

LOCK_NAME = ".lock"


class atomic_write:  # noqa: N801 -- used as a function: `with atomic_write(path) as tmp:`
    """A temporary path beside `path` that replaces it on success and is removed on failure.

    As a context manager it yields the temporary path and commits when the block ends without an
    error. A writer that lives longer than one block (VideoStoreWriter) calls commit() / discard().
    `tmp_name`: a fixed name, for a file that a later run must find (default: per process, so that
    concurrent writers do not collide).
    """

    def __init__(self, path: str | os.PathLike, tmp_name: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(tmp_name or f"{self.path.name}.{os.getpid()}.tmp")

    def commit(self) -> Path:
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_save(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) and rename tmp to path (for writers that take a path: torch.save, np.savez, ...)."""
    with atomic_write(path) as tmp:
        write(tmp)
    return Path(path)


def _writable_folder(folder: Path) -> Path:
    """The nearest existing folder at or above `folder`; BadInputError when it is not writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInputError(f"cannot create {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write to {existing}: permission denied (choose another output folder)")
    return existing


def check_output(path: str | os.PathLike, overwrite: bool = False, what: str = "--out") -> Path:
    """Refuse (BadInputError, exit 2) an output that is a folder, lies in an unwritable folder, or
    exists already without `overwrite`. Checked before the work, so nothing is lost by refusing."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{what} {path} is a folder; give a file name")
    _writable_folder(path.parent)
    if path.exists() and not overwrite:
        raise BadInputError(f"{what} {path} exists; pass --overwrite to replace it")
    return path


def check_folder(path: str | os.PathLike, what: str = "--run-dir") -> Path:
    """A folder that is (or can be made) writable; BadInputError for a file or an unwritable place."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{what} {path} is a file, not a folder")
    _writable_folder(path)
    return path


_HELD: dict[Path, int] = {}  # run folders locked by this process -> the lock file's descriptor


def lock_run_dir(run_dir: str | os.PathLike) -> Path:
    """Hold RUN/.lock for the rest of this process (or until `unlock_run_dir`); re-entrant.

    Raises BadInputError naming the holder's pid when another process holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return run_dir
    check_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise BadInputError(f"{run_dir} is in use by another hpdm process (pid {holder}); wait for it to "
                                "finish or stop it, or use another --run-dir") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[run_dir] = fd
    return run_dir


def unlock_run_dir(run_dir: str | os.PathLike) -> None:
    fd = _HELD.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock
