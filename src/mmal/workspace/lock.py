"""The workspace writer lock: one writer (``select``, ``label``, ``export``) at a time.

``WS/.lock`` is locked with ``fcntl.flock(LOCK_EX)``; the kernel releases the lock when
the holder's process ends, also on ``kill -9``, so a crash never leaves a stale lock.
While it holds the lock a writer records itself in the file (pid, command, start time)
so that a waiting writer that times out can say who holds it, in one line.

The timeout is ``timeout`` seconds (default: env ``MMAL_LOCK_TIMEOUT``, else 120).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from mmal.errors import WorkspaceError

LOCK_FILE = ".lock"
DEFAULT_TIMEOUT_S = 120.0
POLL_S = 0.05


def _default_timeout() -> float:
    raw = os.environ.get("MMAL_LOCK_TIMEOUT", "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


def read_holder(ws_dir) -> dict | None:
    """The holder record written by the current (or last) lock holder, or None."""
    try:
        text = (Path(ws_dir) / LOCK_FILE).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        return None


def _describe(h: dict | None) -> str:
    if not h:
        return "another mmal process"
    started = time.strftime("%H:%M:%S", time.localtime(float(h.get("since", 0))))
    return f"pid {h.get('pid')} (`{h.get('command')}`, since {started})"


@contextmanager
def workspace_lock(ws_dir, command: str, *, timeout: float | None = None):
    """Hold the exclusive writer lock of the workspace at ``ws_dir`` for the ``with`` body.

    Waits up to ``timeout`` seconds; then raises :class:`WorkspaceError` naming the holder.
    Re-entrant within one process is *not* supported (use one ``with`` per command).
    """
    ws_dir = Path(ws_dir)
    timeout = _default_timeout() if timeout is None else float(timeout)
    path = ws_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise WorkspaceError(f"{path}: cannot open the workspace lock ({e.strerror})") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceError(
                        f"{ws_dir}: workspace is busy: locked by {_describe(read_holder(ws_dir))}; "
                        f"waited {timeout:g} s (retry when it ends, or raise MMAL_LOCK_TIMEOUT)"
                    ) from None
                time.sleep(POLL_S)
        rec = json.dumps({"pid": os.getpid(), "command": command, "since": time.time(), "argv": sys.argv[1:4]})
        os.ftruncate(fd, 0)
        os.pwrite(fd, rec.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
