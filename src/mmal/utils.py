"""Small shared helpers: progress bars, atomic writes, seeding."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def progress_bar(enabled: bool = True, *, unit: str = "items", transient: bool = False):
    """A rich progress bar with items/s; a no-op object when disabled."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:.1f} {unit}/s")

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=transient,
        console=None if enabled else None,
    )
    with prog:
        yield prog


class ProgressTask:
    """One progress channel for library code (select/, index/): ``advance(n=1)``, ``close()``.

    ``progress`` is ``False``/``None`` (silent), ``True`` (a transient ``rich`` bar, via
    :func:`progress_bar`) or a callable ``progress(done, total, desc)`` called after every
    advance (tests, GUIs, loggers). Library modules use this (or :func:`progress_task`)
    instead of importing ``rich``.
    """

    def __init__(self, total: int, desc: str, progress=False):
        self.total, self.desc, self.done = int(total), desc, 0
        self._callback = progress if callable(progress) else None
        self._cm = self._bar = None
        if progress and self._callback is None:
            self._cm = progress_bar(True, transient=True)
            self._bar = self._cm.__enter__()
            self._task = self._bar.add_task(desc, total=self.total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._callback is not None:
            self._callback(self.done, self.total, self.desc)
        elif self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm, self._bar = self._cm, None, None
            cm.__exit__(None, None, None)


@contextlib.contextmanager
def progress_task(total: int, desc: str, progress=False):
    """Context manager around :class:`ProgressTask`; yields its ``advance(n=1)``."""
    task = ProgressTask(total, desc, progress)
    try:
        yield task.advance
    finally:
        task.close()


# ---- writes that the disk can refuse ---------------------------------------------------------
#: below this much free space a failed write is put down to a full disk (SQLite, NumPy and torch
#: do not always say ENOSPC: "disk I/O error", "N requested and M written", "unexpected pos")
LOW_SPACE = 1 << 20
_ERRNO_CAUSE = {errno.ENOSPC: "full", errno.EDQUOT: "quota", errno.EROFS: "read-only", errno.EACCES: "permission",
                errno.EPERM: "permission"}
_CAUSE_TEXT = {
    "full": ("the disk is full", "free some space there and run the command again"),
    "quota": ("the disk quota is exceeded", "free some space there and run the command again"),
    "read-only": ("the file system is read-only", "remount it read-write (or work on a copy on a writable disk), "
                                                  "then run the command again"),
    "permission": ("permission denied", "give this user write access (or work on a copy somewhere writable), "
                                        "then run the command again"),
    "readonly-db": ("the database file is read-only", "make it writable and run the command again"),
}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _existing(path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_space(path) -> str:
    """``"12.0 KiB free of 1.0 MiB on /mnt"``: the space left on the file system holding ``path``."""
    p = _existing(path)
    try:
        usage = shutil.disk_usage(p)
    except OSError:
        return "free space unknown"
    mount = p if p.is_dir() else p.parent
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"{human_bytes(usage.free)} free of {human_bytes(usage.total)} on {mount}"


def _environment_cause(path) -> str | None:
    """What about the file system at ``path`` stops a write, if anything: read-only, full, no permission."""
    p = _existing(path)
    d = p if p.is_dir() else p.parent
    try:
        st = os.statvfs(d)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < LOW_SPACE:
        return "full"
    if not os.access(d, os.W_OK) or (p.is_file() and not os.access(p, os.W_OK)):
        return "permission"
    return None


def write_cause(exc: BaseException, path) -> str | None:
    """Why a write at ``path`` failed because of the disk (``"full"``, ``"quota"``, ``"read-only"``,
    ``"permission"``, ``"readonly-db"``), or None when the disk is not to blame.

    Reads the error first (an errno; SQLite's "database or disk is full" and "attempt to write a
    readonly database"); where the error is vague ("disk I/O error", "unable to open database
    file", a short write without an errno) it asks the file system itself.
    """
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in _ERRNO_CAUSE:
        return _ERRNO_CAUSE[exc.errno]
    msg = str(exc).lower()
    if isinstance(exc, sqlite3.Error):
        if "database or disk is full" in msg:
            return "full"
        if "readonly database" in msg:
            return _environment_cause(path) or "readonly-db"
        if "disk i/o error" in msg or "unable to open database file" in msg:
            return _environment_cause(path)
        return None
    if "no space left on device" in msg:
        return "full"
    if "read-only file system" in msg:
        return "read-only"
    if isinstance(exc, (OSError, RuntimeError)):  # short writes of NumPy (no errno) and torch ("unexpected pos")
        return _environment_cause(path)
    return None


def storage_error(exc: BaseException, path, *, done: str = ""):
    """A one-line :class:`~mmal.errors.StorageError` naming ``path``, the cause and the free space when
    the disk explains ``exc`` (see :func:`write_cause`), else None. ``done`` says what happened
    to the command's work (e.g. ``"nothing was recorded"``)."""
    from mmal.errors import StorageError

    cause = write_cause(exc, path)
    if cause is None:
        return None
    why, fix = _CAUSE_TEXT[cause]
    return StorageError(f"{path}: cannot write: {why} ({free_space(path)}); {done + '; ' if done else ''}{fix}")


@contextlib.contextmanager
def guard_write(path, *, cleanup=(), done: str = ""):
    """Turn a failure of the writes inside the block into one :func:`storage_error` line naming
    ``path`` when the disk explains it. The disk is asked before ``cleanup`` (temporary files or
    folders, removed on any failure) frees what the failed write took."""
    from mmal.errors import MmalError

    try:
        yield
    except MmalError:  # already one line (an inner guard's, or the input's)
        _remove(cleanup)
        raise
    except Exception as e:
        err = storage_error(e, path, done=done)
        _remove(cleanup)
        if err is not None:
            raise err from None
        raise
    except BaseException:
        _remove(cleanup)
        raise


def _remove(paths) -> None:
    for p in paths:
        p = Path(p)
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename (never a half-written file).

    A full or read-only disk is one :class:`~mmal.errors.StorageError` naming ``path`` and the
    free space, and leaves no temp file behind."""
    path = Path(path)
    with guard_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with guard_write(path, cleanup=[tmp]):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(path, *, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path`` to write into; on success it is fsynced and renamed
    onto ``path`` (a reader sees the old file or the new one, never a partial one; a reader that
    has the old one memory-mapped keeps it), on failure deleted. Disk errors as in
    :func:`atomic_write_bytes`."""
    path = Path(path)
    with guard_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        with guard_write(path, cleanup=[tmp]):
            yield Path(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)


def eprint(*args) -> None:
    print(*args, file=sys.stderr)


def npy_problem(p) -> str | None:
    """Why ``p`` is not a complete ``.npy`` file (truncated, damaged, object array), or None."""
    import numpy as np

    p = Path(p)
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            header_end = f.tell()
    except (ValueError, OSError, EOFError) as e:
        return f"not a readable array file ({e})"
    if dtype.hasobject:
        return "array of Python objects (refused)"
    want = header_end + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = p.stat().st_size
    if size != want:
        return f"truncated or damaged array file ({size} bytes, header says {want})"
    return None


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (``None``: unchanged); restores the old count."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
