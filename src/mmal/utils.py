"""Small shared helpers: progress bars, atomic writes, seeding."""

from __future__ import annotations

import contextlib
import os
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


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
