"""Label writes of the review page: the transaction of ``mmal label``, row by row.

:func:`import_label_rows` is the write half of
:func:`mmal.workspace.annotate.import_labels` (the same ``BEGIN IMMEDIATE`` transaction and
the same ``INSERT .. ON CONFLICT(item_id, round) DO UPDATE`` upsert on the ``labels``
table), taking already-parsed rows instead of a file. It lives here until the import path
exposes it; ``import_labels`` should then call it (one contract for "store labels").

Concurrency: many page clients post at once. Writes in this process are serialised by a
lock, every connection waits up to ``busy_timeout`` for other processes (e.g. a
concurrent ``mmal label``), and a write that still meets "database is locked" is retried
with backoff, so a post never fails for that reason. Durability: the workspace connection
runs WAL with ``synchronous=FULL``, so a label is on disk before its HTTP 200 is sent; a
``kill -9`` afterwards cannot lose it.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from mmal.errors import LabelImportError
from mmal.workspace.annotate import label_names
from mmal.workspace.workspace import Workspace

_WRITE_LOCK = threading.Lock()

UPSERT = (
    "INSERT INTO labels (item_id, round, label, source, annotator, imported_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(item_id, round) DO UPDATE SET label = excluded.label, source = excluded.source, "
    "annotator = excluded.annotator, imported_at = excluded.imported_at"
)


def class_names(ws: Workspace, n_classes: int | None = None) -> list[str]:
    """Names of the classes for display: ``label_names`` from mmal.toml, else ``"0".."C-1"``."""
    names = label_names(ws)
    n = max(int(n_classes or 0), ws.n_classes, len(names or []))
    names = list(names or [])
    return names + [str(i) for i in range(len(names), n)]


def parse_label(ws: Workspace, raw, *, n_classes: int | None = None) -> int:
    """A posted label (class index or class name) -> class index; LabelImportError if invalid."""
    names = label_names(ws) or []
    n = max(int(n_classes or 0), ws.n_classes, len(names))
    label = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        label = raw
    elif isinstance(raw, str):
        s = raw.strip()
        if s in names:
            label = names.index(s)
        elif s.lstrip("-").isdigit():
            label = int(s)
    if label is None:
        known = f" ({', '.join(names)})" if names else ""
        raise LabelImportError(f"label {raw!r} is not a class number or a known class name{known}")
    if label < 0 or (n and label >= n):
        raise LabelImportError(f"label {label} out of range 0..{n - 1}")
    return label


def _write(ws: Workspace, fn, *, retries: int, busy_timeout_s: float):
    """Run ``fn(con)`` inside one ``BEGIN IMMEDIATE`` transaction; retry on a locked database."""
    delay = 0.02
    for attempt in range(retries + 1):
        try:
            with _WRITE_LOCK, ws.db() as con:
                con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                con.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(con)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                return out
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if attempt == retries:
                raise
            time.sleep(delay)
            delay = min(1.0, delay * 2)
    raise AssertionError("unreachable")  # pragma: no cover


def _row(con, item_id, rnd):
    r = con.execute(
        "SELECT label, source, annotator, imported_at FROM labels WHERE item_id = ? AND round = ?", (item_id, rnd)
    ).fetchone()
    return None if r is None else {"label": int(r[0]), "source": r[1], "annotator": r[2], "imported_at": float(r[3])}


def import_label_rows(ws: Workspace, rows, *, source: str, annotator: str | None,
                      retries: int = 20, busy_timeout_s: float = 30.0) -> dict:
    """Store ``rows`` = [(item id, round, label int)] in one transaction (all or nothing).

    Same semantics as ``mmal label``: one row per (item id, round); an existing row with
    the same label is left unchanged, a different label replaces it (with the new
    ``source``/``annotator``). Item ids must exist (foreign key). Returns
    ``{"inserted", "updated", "unchanged", "previous": [row dict or None per input row]}``.
    """
    rows = [(str(i), int(r), int(lab)) for i, r, lab in rows]
    now = time.time()

    def txn(con):
        stats = {"inserted": 0, "updated": 0, "unchanged": 0, "previous": []}
        for item_id, rnd, label in rows:
            old = _row(con, item_id, rnd)
            stats["previous"].append(old)
            if old is not None and old["label"] == label:
                stats["unchanged"] += 1
                continue
            con.execute(UPSERT, (item_id, rnd, label, source, annotator, now))
            stats["updated" if old is not None else "inserted"] += 1
        return stats

    return _write(ws, txn, retries=retries, busy_timeout_s=busy_timeout_s)


def undo_label(ws: Workspace, item_id: str, rnd: int, *, label: int, source: str, previous: dict | None,
               retries: int = 20, busy_timeout_s: float = 30.0) -> bool:
    """Undo a label written by :func:`import_label_rows`: restore ``previous`` (or delete the row).

    Only when the stored row is still the one being undone (same ``label`` and ``source``);
    returns False (nothing changed) if someone else has changed it since.
    """
    def txn(con):
        cur = _row(con, item_id, rnd)
        if cur is None or cur["label"] != int(label) or cur["source"] != source:
            return False
        if previous is None:
            con.execute("DELETE FROM labels WHERE item_id = ? AND round = ?", (item_id, int(rnd)))
        else:
            con.execute(UPSERT, (item_id, int(rnd), int(previous["label"]), str(previous["source"]),
                                 previous.get("annotator"), float(previous["imported_at"])))
        return True

    return _write(ws, txn, retries=retries, busy_timeout_s=busy_timeout_s)
