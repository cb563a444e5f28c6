"""Atomic writes: write to a temporary file beside the target, then rename; a full disk is named, not a traceback.

Temporary files and folders get the permissions the target has (or would get from the umask), so an atomic
rewrite never turns a 0644 file into 0600 or a 0755 folder into 0700. A `.NAME.*.tmp` left by a killed
writer is removed by `clean_leftovers` (call it only while no other writer can be at work).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core import StorageError

_FULL = (errno.ENOSPC, errno.EDQUOT)


def default_mode(directory: bool) -> int:
    """The permissions a new file (0o666) or folder (0o777) gets under the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def mode_for(target: Path, directory: bool) -> int:
    """The permissions `target` has, else those a new file or folder gets under the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return default_mode(directory)


def storage_error(exc: OSError, target: str | Path) -> StorageError | None:
    """A StorageError naming `target` for a full disk or a denied permission; None for other errors."""
    where = Path(target)
    if exc.errno in _FULL:
        try:
            free = shutil.disk_usage(where.parent if not where.exists() else where).free
            room = f" ({free / 2**20:.1f} MiB free)"
        except OSError:
            room = ""
        return StorageError(f"cannot write {where}: the disk is full{room}; free some space and run the command "
                            f"again ({where} was left as it was)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"cannot write {where}: {exc.strerror or 'permission denied'}; check the folder's "
                            f"permissions ({where} was left as it was)")
    return None


@dataclasses.dataclass
class WriteTarget:
    """What a block of writes is writing now: the path a StorageError names (the block may move it along)."""

    target: Path


@contextlib.contextmanager
def storage_errors(target: str | Path) -> Iterator[WriteTarget]:
    """Inside the block, a full disk or a denied permission becomes the one-line StorageError of `storage_error`
    naming the yielded `.target` (initially `target`); any other OSError passes through unchanged."""
    where = WriteTarget(Path(target))
    try:
        yield where
    except OSError as exc:
        err = storage_error(exc, where.target)
        if err is None:
            raise
        raise err from None


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `target` atomically."""
    target = Path(target)
    tmp_path: Path | None = None
    if target.is_dir():
        raise StorageError(f"cannot write {target}: it is a folder; give the path of a file to write")
    try:
        with storage_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
            os.close(fd)
            tmp_path = Path(tmp)
            yield tmp_path
            os.chmod(tmp_path, mode_for(target, directory=False))
            os.replace(tmp_path, target)
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_text(target: str | Path, text: str) -> None:
    """Atomically write text."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, obj: Any, indent: int = 2) -> None:
    """Atomically write JSON."""
    write_text(target, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def old_copy(target: str | Path) -> Path:
    """Where `atomic_dir` keeps the previous version of `target` while it swaps in the new one."""
    target = Path(target)
    return target.with_name(f".{target.name}.old")


def recover_dir(target: str | Path) -> bool:
    """Put back the previous version of `target` when a writer was killed between `atomic_dir`'s two renames
    (the target is missing, its `.old` copy intact); True when it did."""
    target, old = Path(target), old_copy(target)
    if not target.exists() and old.is_dir():
        os.replace(old, target)
        return True
    return False


def clean_leftovers(target: str | Path) -> list[Path]:
    """Remove the `.NAME.*.tmp` files and folders a killed writer of `target` left beside it; returns them."""
    target = Path(target)
    removed = []
    for p in target.parent.glob(f".{target.name}.*.tmp"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `target`.

    The old version is renamed to `.NAME.old` and removed only once the new one is in place, so a kill
    between the two renames leaves it intact (`recover_dir` puts it back)."""
    target = Path(target)
    tmp: Path | None = None
    try:
        with storage_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
            os.chmod(tmp, mode_for(target, directory=True))
            yield tmp
            if target.exists():
                old = old_copy(target)
                if old.exists():
                    shutil.rmtree(old)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old)
            else:
                os.replace(tmp, target)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def file_lock(path: str | Path, *, timeout: float | None = None, busy: Callable[[], Exception] | None = None,
              poll_s: float = 0.05) -> Iterator[Path]:
    """Hold an exclusive advisory lock on `path` (fcntl.flock: the kernel releases it when the holder dies, even by
    SIGKILL). timeout None: wait for it; otherwise raise busy() (default: a StorageError naming the file) once it
    has been held for `timeout` s (0: at once). The holder's pid is written into the file for a person looking; a
    no-op where fcntl is missing (Windows)."""
    path = Path(path).expanduser()
    if busy is None:
        busy = lambda: StorageError(f"{path} is held by another process (its pid is in the file); wait for it to "  # noqa: E731
                                    "finish")
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows: no advisory locks; one writer is the user's job
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise storage_error(exc, path) or StorageError(f"cannot create the lock file {path}: {exc}") from None
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise busy() from None
                time.sleep(poll_s)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield path
    finally:
        fh.close()  # releases the lock


def lock_holder(path: str | Path) -> int | None:
    """The pid a live holder of `file_lock(path)` wrote into it (0 when unreadable), or None when nobody holds it;
    looks without taking the lock from anyone (a shared, non-blocking probe released at once)."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows: file_lock is a no-op there
        return None
    try:
        fh = open(Path(path).expanduser())  # noqa: SIM115 - closed below
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None
