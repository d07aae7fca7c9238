"""Small shared helpers: progress bars, atomic writes, seeding."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def progress_bar(enabled: bool = True, *, unit: str = "items"):
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
        transient=False,
        console=None if enabled else None,
    )
    with prog:
        yield prog


@contextlib.contextmanager
def progress_task(total: int, desc: str, progress=False):
    """One progress channel for library code (select/, index/): yields ``advance(n=1)``.

    ``progress`` is ``False``/``None`` (silent), ``True`` (a bar from :func:`progress_bar`)
    or a callable ``progress(done, total, desc)`` called after every advance (tests, GUIs,
    loggers). Library modules call this instead of importing ``rich``.
    """
    if callable(progress):
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            progress(done, total, desc)

        yield advance
    elif progress:
        with progress_bar(True) as prog:
            task = prog.add_task(desc, total=total)
            yield lambda n=1: prog.advance(task, n)
    else:
        yield lambda n=1: None


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
