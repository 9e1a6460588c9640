"""Files every command writes: atomic replacement, the --overwrite rule, and the run-folder lock.

- `atomic_write`: write to a temporary name in the same folder, then rename. A reader (or a run
  killed mid-write) sees the old file or the new one, never half of one.
- `check_output`: an output path must be writable and, unless `overwrite`, must not exist yet;
  commands call it before any long work, so a bad --out fails in a second, not after sampling.
- `lock_run_dir`: a run folder is used by one process at a time (fcntl.flock on RUN/.lock). The OS
  drops the lock when the process ends in any way, SIGKILL included, so it is never stale.
- a full disk: `atomic_write` (and `reporting_full_disk` around other writers) turns ENOSPC, however the
  writer reports it (OSError, h5py, torch.save's RuntimeError), into a DiskFullError (exit 1) that names
  the folder, the space left and the space the file needs; the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from hpdm_core.errors import BadInputError, DiskFullError

LOCK_NAME = ".lock"


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# How writers say "no space left": OSError errno 28 (or a quota), h5py's message, and torch.save's
# "[enforce fail at inline_container.cc] ... unexpected pos" (its stream writer failed to write).
_DISK_FULL_TEXT = ("No space left on device", "errno = 28", "Disk quota exceeded", "unexpected pos")


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, (OSError, RuntimeError)) and any(text in str(err) for text in _DISK_FULL_TEXT)


def disk_full_error(path: str | os.PathLike, needed: int | None = None, what: str = "") -> DiskFullError:
    """The message for a write of `path` that ran out of space: where, how much is free, how much it needs."""
    path = Path(path)
    folder = path.parent if not path.is_dir() else path
    try:
        free = human_bytes(shutil.disk_usage(_writable_folder(folder) if not folder.exists() else folder).free)
    except (OSError, BadInputError):
        free = "unknown"
    need = f"; {what or path.name} needs about {human_bytes(needed)}" if needed else ""
    return DiskFullError(f"the disk is full: writing {path} failed (the disk holding {folder} has {free} free"
                         f"{need}). Free some space there or write elsewhere; earlier files are intact")


@contextlib.contextmanager
def reporting_full_disk(path: str | os.PathLike, needed: int | None = None, what: str = "") -> Iterator[None]:
    """Around a writer that does not go through `atomic_write` (h5py, an appended log): ENOSPC -> DiskFullError."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as err:
        if is_disk_full(err):
            raise disk_full_error(path, needed, what) from None
        raise


class atomic_write:  # noqa: N801 -- used as a function: `with atomic_write(path) as tmp:`
    """A temporary path beside `path` that replaces it on success and is removed on failure.

    As a context manager it yields the temporary path and commits when the block ends without an
    error. A writer that lives longer than one block (VideoStoreWriter) calls commit() / discard().
    `tmp_name`: a fixed name, for a file that a later run must find (default: per process, so that
    concurrent writers do not collide). `needed`: the file's expected size, for the full-disk message.
    """

    def __init__(self, path: str | os.PathLike, tmp_name: str | None = None, needed: int | None = None,
                 what: str = ""):
        self.path, self.needed, self.what = Path(path), needed, what
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
        if exc is not None and not isinstance(exc, DiskFullError) and is_disk_full(exc):
            raise disk_full_error(self.path, self.needed, self.what) from None  # after the partial file is gone


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, needed=len(text.encode())) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_save(path: str | os.PathLike, write: Callable[[Path], None], needed: int | None = None,
                what: str = "") -> Path:
    """Call write(tmp) and rename tmp to path (for writers that take a path: torch.save, np.savez, ...)."""
    with atomic_write(path, needed=needed, what=what) as tmp:
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


def check_folder(path: str | os.PathLike, what: str = "`run_dir`") -> Path:
    """A folder that is (or can be made) writable; BadInputError for a file or an unwritable place."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{what} {path} is a file, not a folder")
    _writable_folder(path)
    return path


def check_free_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse (BadInputError, exit 2) before the work when the disk cannot hold `needed` more bytes."""
    folder = _writable_folder(Path(path).parent)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise BadInputError(f"{what} needs {human_bytes(needed)}, but the disk holding {folder} has "
                            f"{human_bytes(free)} free; make it smaller or write elsewhere")


_HELD: dict[Path, int] = {}  # run folders locked by this process -> the lock file's descriptor


def lock_run_dir(run_dir: str | os.PathLike) -> Path:
    """Hold RUN/.lock for the rest of this process (or until `unlock_run_dir`); re-entrant.

    Raises BadInputError naming the holder's pid when another process holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return run_dir
    check_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _HELD[run_dir] = _flock(run_dir / LOCK_NAME, lambda holder: (
        f"{run_dir} is in use by another hpdm process (pid {holder}); wait for it to finish or stop it, "
        "or use another `run_dir`"))
    return run_dir


def _flock(path: Path, busy: Callable[[str], str], lock: Callable[[int, int], None] = fcntl.flock) -> int:
    """An exclusive lock on `path` (created), holding this pid; BadInputError(busy(holder pid)) when taken.

    `lock`: fcntl.flock (shared with forked children, which then keep it while they live) or fcntl.lockf
    (a POSIX record lock: this process's alone, so forked workers that outlive it do not hold it).

    The file may be unlinked by a holder that is done (`lock_output`): a lock won on an unlinked inode
    would guard nothing, so the path must still name the locked file afterwards."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BadInputError(busy(holder)) from None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # unlinked by its last holder between our open and flock: take the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def lock_output(path: str | os.PathLike) -> Iterator[Path]:
    """One writer at a time for an output file: an flock on OUT.lock beside it for the block.

    A second writer exits 2 at once naming the first's pid, before it creates anything (OUT.tmp,
    OUT.parts/). The lock file is removed when the block ends; the OS drops the lock of a killed
    process, so a leftover OUT.lock never blocks a rerun. A POSIX lock is per process: a second
    `lock_output` of the same path in the same process is not refused."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    _writable_folder(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    # lockf: decoding workers forked while it is held must not keep it (they may outlive a killed parent).
    fd = _flock(lock, lambda holder: f"{path} is being written by another hpdm process (pid {holder}); wait for "
                                     "it to finish or stop it, or choose another --out", fcntl.lockf)
    try:
        yield path
    finally:
        lock.unlink(missing_ok=True)  # while still held: a waiter then sees the path gone and retries
        os.close(fd)


def unlock_run_dir(run_dir: str | os.PathLike) -> None:
    fd = _HELD.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock
