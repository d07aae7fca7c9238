"""The workspace's SQLite state, read and written in one place: rounds, batches, labels.

Every SQL statement of mmal lives in :mod:`mmal.workspace` (this module, the schema and
initial load in :mod:`mmal.workspace.workspace`). Other layers call these functions:

- **the one label writer** :func:`put_labels` (``mmal label``, the review page, Label Studio
  imports) and its inverses :func:`undo_label` and :func:`remove_labels`: one ``BEGIN IMMEDIATE`` transaction per call,
  all rows or none, ``(item id, round)`` upserts that leave an identical label untouched;
- **label history**: every change either of them makes (and every label of the items file at
  ``mmal init``) adds a ``label_history`` row in the same transaction: item, round, old
  value and its source, new value (NULL = removed by an undo), source, annotator, time;
  :func:`label_history` reads it (``mmal info WS --history ID``). A workspace made before
  the table existed gets it in the transaction of its first label write, filled with the
  labels it holds (their earlier values were not kept);
- **batches**: :func:`record_batch` (one transaction; a callback writes the exports before
  the commit, so a crash leaves either the batch with its files or neither),
  :func:`batch_items`, :func:`batches_of_round`, :func:`latest_batch`, :func:`batched_items`;
- **rounds**: :func:`current_round` (the highest round with labels or a batch), :func:`rounds`;
- **labels**: :func:`labels_in_round`, :func:`labels_as_of`, :func:`item_splits`.

Concurrency: writes in one process are serialised by a lock, every connection waits up to
``busy_timeout`` for other processes, and a write that still meets "database is locked" is
retried with backoff. Durability: WAL with ``synchronous=FULL``, so a label is on disk
when :func:`put_labels` returns; a ``kill -9`` afterwards cannot lose it, and one during the
call leaves the state as it was before.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass

from mmal.errors import WorkspaceError

_WRITE_LOCK = threading.Lock()

HISTORY_DDL = (
    "CREATE TABLE IF NOT EXISTS label_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, "
    "round INTEGER NOT NULL, old_label INTEGER, old_source TEXT, new_label INTEGER, source TEXT NOT NULL, "
    "annotator TEXT, changed_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS label_history_item ON label_history (item_id, seq)",
)
HISTORY_SCHEMA = ";\n".join(HISTORY_DDL) + ";\n"
HISTORY_INSERT = ("INSERT INTO label_history (item_id, round, old_label, old_source, new_label, source, annotator, "
                  "changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")

UPSERT = (
    "INSERT INTO labels (item_id, round, label, source, annotator, imported_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(item_id, round) DO UPDATE SET label = excluded.label, source = excluded.source, "
    "annotator = excluded.annotator, imported_at = excluded.imported_at"
)


def write(ws, fn, *, retries: int = 20, busy_timeout_s: float = 30.0):
    """Run ``fn(con)`` inside one ``BEGIN IMMEDIATE`` transaction (commit on success, rollback on
    any error); retry on a locked database."""
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
                    # SQLite may already have rolled back (a full disk at COMMIT): a failing ROLLBACK
                    # must not hide the error that caused it
                    with contextlib.suppress(sqlite3.Error):
                        if con.in_transaction:
                            con.execute("ROLLBACK")
                    raise
                return out
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                from mmal.workspace.workspace import db_error

                raise db_error(ws.dir / "state.sqlite", e, done="nothing was recorded") from None
            if attempt == retries:
                raise WorkspaceError(f"{ws.dir / 'state.sqlite'}: the workspace database stayed locked by another "
                                     "process; try again") from None
            time.sleep(delay)
            delay = min(1.0, delay * 2)
    raise AssertionError("unreachable")  # pragma: no cover


# ---- label history -----------------------------------------------------------------------------
def _has_history(con) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'label_history'").fetchone() is not None


def ensure_history(con) -> None:
    """Create ``label_history`` inside the caller's write transaction if this workspace predates it,
    with one row per label it already holds (old value unknown, so NULL): nothing is lost."""
    if _has_history(con):
        return
    for stmt in HISTORY_DDL:
        con.execute(stmt)
    con.execute("INSERT INTO label_history (item_id, round, old_label, old_source, new_label, source, annotator, changed_at) "
                "SELECT item_id, round, NULL, NULL, label, source, annotator, imported_at FROM labels "
                "ORDER BY imported_at, item_id, round")


def record_history(con, rows, *, source: str, at: float, annotator: str | None = None) -> None:
    """Add history rows on an open connection (inside the caller's transaction).

    ``rows`` = ``[(item id, round, old label, old source, new label)]`` or with a sixth
    element, the row's annotator (else ``annotator``)."""
    con.executemany(HISTORY_INSERT, [
        (str(r[0]), int(r[1]), None if r[2] is None else int(r[2]), r[3], None if r[4] is None else int(r[4]),
         str(source), r[5] if len(r) > 5 else annotator, float(at)) for r in rows])


def label_history(ws, item_id: str) -> list[dict]:
    """Every recorded change of ``item_id``'s labels, oldest first: ``{round, old, old_source,
    new, source, annotator, at}`` (``new`` None: removed by an undo). A workspace whose
    history table does not exist yet reports its stored labels as their first entries."""
    with ws.db() as con:
        if _has_history(con):
            rows = con.execute("SELECT round, old_label, old_source, new_label, source, annotator, changed_at "
                               "FROM label_history WHERE item_id = ? ORDER BY seq", (str(item_id),)).fetchall()
        else:
            rows = con.execute("SELECT round, NULL, NULL, label, source, annotator, imported_at FROM labels "
                               "WHERE item_id = ? ORDER BY imported_at, round", (str(item_id),)).fetchall()
    return [{"round": int(r[0]), "old": None if r[1] is None else int(r[1]), "old_source": r[2],
             "new": None if r[3] is None else int(r[3]), "source": r[4], "annotator": r[5], "at": float(r[6])}
            for r in rows]


# ---- labels ------------------------------------------------------------------------------------
def _effective(con, item_id):
    """The item's label that counts now (highest round): ``{round, label, source}`` or None."""
    r = con.execute("SELECT round, label, source FROM labels WHERE item_id = ? ORDER BY round DESC LIMIT 1",
                    (item_id,)).fetchone()
    return None if r is None else {"round": int(r[0]), "label": int(r[1]), "source": r[2]}


def _label_row(con, item_id, rnd):
    r = con.execute("SELECT label, source, annotator, imported_at FROM labels WHERE item_id = ? AND round = ?",
                    (item_id, rnd)).fetchone()
    return None if r is None else {"label": int(r[0]), "source": r[1], "annotator": r[2], "imported_at": float(r[3])}


def put_labels(ws, rows, *, source: str, annotator: str | None = None, retries: int = 20,
               busy_timeout_s: float = 30.0, on_row=None) -> dict:
    """Store labels in one transaction (all or nothing).

    ``rows`` = ``[(item id, round, label)]`` or ``[(item id, round, label, annotator)]`` (the
    row's annotator overrides ``annotator``). One row per ``(item id, round)``: an existing row
    with the same label is left unchanged, a different label replaces it (with the new
    ``source`` / ``annotator`` / time). Item ids must exist (foreign key). ``on_row(i)`` is
    called after each row is written, inside the transaction. Every written row adds a
    ``label_history`` row (old value, new value, source, annotator, time) in the same transaction.

    Returns ``{"inserted", "updated", "unchanged", "previous": [row dict or None per input row],
    "replaced": [...]}``; ``replaced`` lists the rows that changed the label an item had until
    now (its highest round's), ``{"id", "round", "old", "old_round", "old_source", "new"}``, so
    that a caller can warn when that was a gold (items-file) label.
    """
    norm = []
    for r in rows:
        item_id, rnd, label = str(r[0]), int(r[1]), int(r[2])
        who = r[3] if len(r) > 3 else annotator
        norm.append((item_id, rnd, label, None if who in (None, "") else str(who)))
    now = time.time()

    def txn(con):
        ensure_history(con)
        stats = {"inserted": 0, "updated": 0, "unchanged": 0, "previous": [], "replaced": []}
        history = []
        for i, (item_id, rnd, label, who) in enumerate(norm):
            old = _label_row(con, item_id, rnd)
            stats["previous"].append(old)
            if old is not None and old["label"] == label:
                stats["unchanged"] += 1
            else:
                now_counts = _effective(con, item_id)
                con.execute(UPSERT, (item_id, rnd, label, source, who, now))
                stats["updated" if old is not None else "inserted"] += 1
                history.append((item_id, rnd, None if old is None else old["label"], None if old is None else old["source"],
                                label, who))
                if now_counts is not None and now_counts["round"] <= rnd and now_counts["label"] != label:
                    stats["replaced"].append({"id": item_id, "round": rnd, "old": now_counts["label"],
                                              "old_round": now_counts["round"], "old_source": now_counts["source"],
                                              "new": label})
            if on_row is not None:
                on_row(i)
        record_history(con, history, source=source, at=now)
        return stats

    return write(ws, txn, retries=retries, busy_timeout_s=busy_timeout_s)


def undo_label(ws, item_id: str, rnd: int, *, label: int, source: str, previous: dict | None,
               retries: int = 20, busy_timeout_s: float = 30.0) -> bool:
    """Undo a label written by :func:`put_labels`: restore ``previous`` (or delete the row).

    Only when the stored row is still the one being undone (same ``label`` and ``source``);
    returns False (nothing changed) if someone else has changed it since.
    """
    def txn(con):
        cur = _label_row(con, item_id, rnd)
        if cur is None or cur["label"] != int(label) or cur["source"] != source:
            return False
        ensure_history(con)
        if previous is None:
            con.execute("DELETE FROM labels WHERE item_id = ? AND round = ?", (item_id, int(rnd)))
        else:
            con.execute(UPSERT, (item_id, int(rnd), int(previous["label"]), str(previous["source"]),
                                 previous.get("annotator"), float(previous["imported_at"])))
        record_history(con, [(item_id, int(rnd), cur["label"], cur["source"],
                              None if previous is None else int(previous["label"]))],
                       source=f"{source} (undo)", at=time.time())
        return True

    return write(ws, txn, retries=retries, busy_timeout_s=busy_timeout_s)


def remove_labels(ws, source: str, *, by: str, retries: int = 20, busy_timeout_s: float = 30.0) -> list[dict]:
    """Delete every label row whose ``source`` is ``source`` (the labels one writer stored, e.g.
    one Label Studio annotation), in one transaction; each deletion adds a ``label_history``
    row (new value NULL) with source ``by``. A row that another writer has changed since has
    another source and is kept. Returns the removed rows ``[{"id", "round", "label"}]``."""
    def txn(con):
        rows = con.execute("SELECT item_id, round, label, annotator FROM labels WHERE source = ? ORDER BY item_id, round",
                           (str(source),)).fetchall()
        if not rows:
            return []
        ensure_history(con)
        con.execute("DELETE FROM labels WHERE source = ?", (str(source),))
        record_history(con, [(r[0], int(r[1]), int(r[2]), str(source), None, r[3]) for r in rows], source=by, at=time.time())
        return [{"id": r[0], "round": int(r[1]), "label": int(r[2])} for r in rows]

    return write(ws, txn, retries=retries, busy_timeout_s=busy_timeout_s)


def current_labels(ws) -> dict[str, int]:
    """Latest label per item (highest round wins)."""
    return labels_as_of(ws, None)


def labels_as_of(ws, rnd: int | None) -> dict[str, int]:
    """Latest label per item among rounds ``<= rnd`` (all rounds when None): what round ``rnd``'s model could know."""
    cap = "" if rnd is None else " AND round <= ?"
    args = () if rnd is None else (int(rnd),)
    with ws.db() as con:
        rows = con.execute("SELECT item_id, label FROM labels l WHERE round = (SELECT MAX(round) FROM labels "
                           f"WHERE item_id = l.item_id{cap})", args).fetchall()
    return {i: int(lab) for i, lab in rows}


def labels_in_round(ws, ids, rnd: int) -> dict[str, dict]:
    """item id -> ``{label, source, annotator}`` stored under round ``rnd``."""
    ids = list(ids)
    if not ids:
        return {}
    with ws.db() as con:
        q = ",".join("?" * len(ids))
        rows = con.execute(f"SELECT item_id, label, source, annotator FROM labels WHERE round = ? AND item_id IN ({q})",
                           (int(rnd), *ids)).fetchall()
    return {r[0]: {"label": int(r[1]), "source": r[2], "annotator": r[3]} for r in rows}


def round_labels(ws, rnd: int) -> dict[str, int]:
    """item id -> label stored under round ``rnd``."""
    with ws.db() as con:
        return {k: int(v) for k, v in con.execute("SELECT item_id, label FROM labels WHERE round = ?", (int(rnd),))}


def item_splits(ws) -> dict[str, str]:
    with ws.db() as con:
        return dict(con.execute("SELECT id, split FROM items").fetchall())


# ---- rounds and batches ------------------------------------------------------------------------
def current_round(ws) -> int:
    """The highest round that has labels or a batch (0 for a fresh workspace)."""
    with ws.db() as con:
        a = con.execute("SELECT COALESCE(MAX(round), 0) FROM labels").fetchone()[0]
        b = con.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0]
    return int(max(a, b))


def max_round(ws) -> int:
    """The highest round of any batch or label (the rounds an import may name)."""
    return current_round(ws)


def rounds(ws) -> list[int]:
    """Every round that has a rounds row or a batch."""
    with ws.db() as con:
        rs = {int(r[0]) for r in con.execute("SELECT round FROM rounds")}
        rs |= {int(r[0]) for r in con.execute("SELECT DISTINCT round FROM batches")}
    return sorted(rs)


@dataclass
class Batch:
    batch_id: int
    round: int
    strategy: str
    budget: int
    info: dict


def _batch(row) -> Batch:
    try:
        info = json.loads(row[4] or "{}")
    except json.JSONDecodeError:
        info = {}
    return Batch(int(row[0]), int(row[1]), str(row[2]), int(row[3]), info)


def latest_batch(ws) -> Batch | None:
    """The batch with the highest id, or None."""
    with ws.db() as con:
        b = con.execute("SELECT batch_id, round, strategy, budget, info FROM batches ORDER BY batch_id DESC LIMIT 1").fetchone()
    return None if b is None else _batch(b)


def batches(ws, rnd: int | None = None) -> list[Batch]:
    """Every batch (of round ``rnd`` when given), in id order."""
    where, args = ("WHERE round = ?", (int(rnd),)) if rnd is not None else ("", ())
    with ws.db() as con:
        rows = con.execute(f"SELECT batch_id, round, strategy, budget, info FROM batches {where} ORDER BY batch_id", args).fetchall()
    return [_batch(r) for r in rows]


def get_batch(ws, batch_id: int, con=None) -> Batch:
    if con is None:
        with ws.db() as c:
            return get_batch(ws, batch_id, c)
    b = con.execute("SELECT batch_id, round, strategy, budget, info FROM batches WHERE batch_id = ?", (int(batch_id),)).fetchone()
    if b is None:
        raise WorkspaceError(f"no batch {batch_id} in {ws.dir}")
    return _batch(b)


def batch_items(ws, batch_id: int, con=None) -> list[tuple]:
    """``(item id, rank, strategy, score, reason)`` rows of a batch, in rank order."""
    if con is None:
        with ws.db() as c:
            return batch_items(ws, batch_id, c)
    return con.execute("SELECT item_id, rank, strategy, score, reason FROM batch_items WHERE batch_id = ? ORDER BY rank",
                       (int(batch_id),)).fetchall()


def round_batch_items(ws, rnd: int) -> list[tuple]:
    """``(item id, strategy, score, reason, batch id, rank)`` of every batch of round ``rnd``."""
    with ws.db() as con:
        return con.execute("SELECT bi.item_id, bi.strategy, bi.score, bi.reason, bi.batch_id, bi.rank FROM batch_items bi "
                           "JOIN batches b USING (batch_id) WHERE b.round = ? ORDER BY bi.batch_id, bi.rank",
                           (int(rnd),)).fetchall()


def batched_items(ws) -> dict[int, list[str]]:
    """round -> ids of the items in that round's batches."""
    with ws.db() as con:
        got = con.execute("SELECT b.round, i.item_id FROM batch_items i JOIN batches b ON b.batch_id = i.batch_id").fetchall()
    out: dict[int, list[str]] = {}
    for rnd, item in got:
        out.setdefault(int(rnd), []).append(item)
    return out


def batch_ids(ws) -> set[int]:
    with ws.db() as con:
        return {int(r[0]) for r in con.execute("SELECT batch_id FROM batches")}


def insert_batch(con, selection, *, budget: int, round_: int, info: dict | None = None) -> int:
    """Insert a batch (rounds row if new, batches row, batch_items rows) on an open connection,
    inside the caller's transaction; returns the batch id."""
    now = time.time()
    con.execute("INSERT OR IGNORE INTO rounds (round, created_at, status, info) VALUES (?, ?, 'selected', '{}')",
                (round_, now))
    strategy_spec = (info or {}).get("spec") or ",".join(dict.fromkeys(str(s) for s in selection.strategy))
    cur = con.execute(
        "INSERT INTO batches (round, strategy, budget, created_at, info) VALUES (?, ?, ?, ?, ?)",
        (round_, strategy_spec, int(budget), now, json.dumps(info or selection.info, default=float)),
    )
    batch_id = cur.lastrowid
    con.executemany(
        "INSERT INTO batch_items (batch_id, item_id, rank, strategy, score, reason) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (batch_id, i, r, str(s), None if sc != sc else float(sc), str(re))
            for r, (i, s, sc, re) in enumerate(zip(selection.ids.tolist(), selection.strategy, selection.score, selection.reason))
        ],
    )
    return int(batch_id)


def record_batch(ws, selection, *, budget: int, round_: int | None = None, info: dict | None = None,
                 before_commit=None) -> int:
    """Store a :class:`~mmal.pool.Selection` as a new batch in one transaction; returns its id.

    ``round_`` None = the next round. ``before_commit(con, batch_id)`` runs inside the
    transaction (the exports are written there); if it raises, nothing is recorded.
    """
    def txn(con):
        rnd = round_
        if rnd is None:
            rnd = con.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0] + 1
        bid = insert_batch(con, selection, budget=budget, round_=int(rnd), info=info)
        if before_commit is not None:
            before_commit(con, bid)
        return bid

    return write(ws, txn)


def batch_counts(ws) -> dict:
    """Counts for ``mmal info``: items, splits, labeled items, rounds, batches."""
    with ws.db() as con:
        n_items = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        by_split = dict(con.execute("SELECT split, COUNT(*) FROM items GROUP BY split").fetchall())
        n_labeled = con.execute("SELECT COUNT(DISTINCT item_id) FROM labels").fetchone()[0]
        n_rounds = con.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
        n_batches = con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    return {"items": n_items, "splits": by_split, "labeled": n_labeled, "rounds": n_rounds, "batches": n_batches}


__all__ = ["put_labels", "undo_label", "remove_labels", "label_history", "record_history", "ensure_history", "HISTORY_SCHEMA", "current_labels", "labels_as_of", "labels_in_round", "round_labels", "item_splits",
           "current_round", "rounds", "latest_batch", "batches", "get_batch", "batch_items", "round_batch_items",
           "batched_items", "batch_ids", "insert_batch", "record_batch", "batch_counts", "Batch", "write"]
