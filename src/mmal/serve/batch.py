"""What the review page shows: the current batch, its items, the model's view of them.

Pure reads of the workspace (``state.sqlite``, ``items.parquet``, ``rounds/<n>/pool``);
no HTTP here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmal.errors import MmalError, WorkspaceError
from mmal.select.registry import reason_is_seed
from mmal.workspace import state
from mmal.workspace.workspace import Workspace

MEDIA = ("image", "video", "audio")


@dataclass
class BatchInfo:
    batch_id: int
    round: int
    strategy: str
    budget: int
    info: dict
    item_ids: list[str]


def latest_batch(ws: Workspace) -> BatchInfo:
    """The current batch: the highest ``batch_id`` in ``state.sqlite``."""
    b = state.latest_batch(ws)
    if b is None:
        raise WorkspaceError(f"{ws.dir}: no batch to review; run `mmal select {ws.dir} --strategy ... --budget N` first")
    ids = [r[0] for r in state.batch_items(ws, b.batch_id)]
    return BatchInfo(b.batch_id, b.round, b.strategy, b.budget, b.info, ids)


def round_pool(ws: Workspace, rnd: int):
    """The scored pool a batch of round ``rnd`` was selected from (``rounds/<rnd-1>/pool``), else None."""
    from mmal.workspace.pool_io import load_pool

    for r in (rnd - 1, rnd):
        folder = ws.round_dir(r) / "pool"
        if r >= 0 and (folder / "ids.parquet").exists():
            return load_pool(folder)
    return None


@dataclass
class ItemView:
    """One item as the page shows it."""

    id: str
    text: str | None
    media: dict = field(default_factory=dict)  # modality -> True when the item has it
    pred: int | None = None
    confidence: float | None = None
    top: list = field(default_factory=list)  # [(class, prob)] best first
    label: int | None = None  # the item's known label (any round), for seeds


class ItemCatalog:
    """Item id -> media paths / text, read once from ``items.parquet`` (the items table)."""

    def __init__(self, ws: Workspace):
        t = ws.items
        self.ids = t.column("id").to_pylist()
        self.pos = {k: i for i, k in enumerate(self.ids)}
        cols = t.column_names
        self.text = t.column("text").to_pylist() if "text" in cols else [None] * len(self.ids)
        self.paths = {m: t.column(m).to_pylist() for m in MEDIA if m in cols}
        src = ws.config.get("task", {}).get("items_source")
        self.base = Path(src).parent if src else ws.dir  # relative paths are relative to the items file

    def __contains__(self, item_id) -> bool:
        return item_id in self.pos

    def media_path(self, item_id: str, modality: str) -> str | None:
        """The file of ``modality`` for a known item, else None (never derived from the request)."""
        i = self.pos.get(item_id)
        if i is None or modality not in self.paths:
            return None
        p = self.paths[modality][i]
        if not p:
            return None
        return str(p if Path(p).is_absolute() else self.base / p)

    def view(self, item_id: str, pool=None, pool_pos=None, names=None, label=None) -> ItemView:
        i = self.pos[item_id]
        v = ItemView(id=item_id, text=self.text[i], label=label)
        v.media = {m: bool(self.paths[m][i]) for m in self.paths if self.paths[m][i]}
        if pool is not None and pool_pos is not None and item_id in pool_pos:
            p = np.asarray(pool.probs[pool_pos[item_id]], dtype=np.float64)  # [C]
            order = np.argsort(-p, kind="stable")[:3]
            v.pred, v.confidence = int(order[0]), float(p[order[0]])
            v.top = [((names[c] if names and c < len(names) else str(c)), float(p[c])) for c in order]
        return v


labels_in_round = state.labels_in_round


def batch_cards(ws: Workspace, batch: BatchInfo, catalog: ItemCatalog, names: list[str]) -> list[dict]:
    """One dict per batch item: its view, why it was picked, its LSB seed (if any), its label."""
    pool = round_pool(ws, batch.round)
    pool_pos = None if pool is None else {k: i for i, k in enumerate(pool.ids.tolist())}
    known = ws.current_labels()
    rows = state.batch_items(ws, batch.batch_id)
    labels = labels_in_round(ws, [r[0] for r in rows], batch.round)
    cards = []
    for item_id, rank, strategy, score, reason in rows:
        seed = None
        if reason and reason in catalog and reason_is_seed(strategy):
            seed = catalog.view(reason, pool, pool_pos, names, label=known.get(reason))
        cards.append({
            "item": catalog.view(item_id, pool, pool_pos, names),
            "rank": int(rank), "strategy": strategy, "score": score, "reason": reason or "",
            "seed": seed, "label": labels.get(item_id),
        })
    return cards


# ---- the whole data set (data-set view, suspect labels, embedding map) ----------------------------
def batch_info(ws: Workspace, batch_id: int) -> BatchInfo:
    """Any batch by id (``WorkspaceError`` naming the batches there are when it does not exist)."""
    ids = state.batch_ids(ws)
    if int(batch_id) not in ids:
        have = ", ".join(str(b) for b in sorted(ids)) or "none"
        raise WorkspaceError(f"no batch {batch_id} in {ws.dir} (batches: {have})")
    b = state.get_batch(ws, int(batch_id))
    return BatchInfo(b.batch_id, b.round, b.strategy, b.budget, b.info, [r[0] for r in state.batch_items(ws, b.batch_id)])


#: files of a pool folder whose change makes a new pool version (replace_pool swaps them all at once)
POOL_FILES = ("ids.parquet", "probs.npy", "embedding.npy", "labels.npy", "extra.at_selection_probs.npy")


def pool_version(folder: Path) -> tuple:
    """What identifies one written scored pool: (file, inode, mtime, size) of its files.

    :func:`mmal.workspace.pool_io.replace_pool` writes new files and swaps the folder in, so a
    re-score changes every inode even within one clock tick."""
    out = []
    for name in POOL_FILES:
        try:
            st = (folder / name).stat()
        except FileNotFoundError:
            continue
        out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


@dataclass
class PoolView:
    """The latest scored pool aligned with the items table (row = items-table position)."""

    round: int
    version: str
    pool: object  # ScoredPool (memory-mapped arrays)
    prow: np.ndarray  # [N] pool row of each item, -1 when the pool lacks it
    pred: np.ndarray  # [N] predicted class, -1 without a pool row
    conf: np.ndarray  # [N] its probability, NaN without a pool row

    @property
    def n_classes(self) -> int:
        return int(self.pool.n_classes)


class DatasetIndex:
    """The data set as arrays in items-table order, for the data-set views.

    The latest scored pool (highest ``rounds/<n>/pool``) is re-read only when its files change
    (:func:`pool_version`); results computed from it (the embedding map) are cached per
    version in :attr:`cache`. Labels and batches are read from ``state.sqlite`` per request
    (batches cached by the set of batch ids: a recorded batch never changes).
    """

    def __init__(self, ws: Workspace, catalog: ItemCatalog):
        import threading

        self.ws, self.catalog = ws, catalog
        self.ids = np.asarray(catalog.ids, dtype=str)
        self.split = np.asarray(ws.items.column("split").to_pylist(), dtype=str)
        self._lock = threading.Lock()
        self._pool_key = None
        self._pool: PoolView | None = None
        self._batch_key = None
        self._batches: dict = {}
        self._member: dict = {}
        self.cache: dict = {}

    def __len__(self) -> int:
        return len(self.ids)

    def pool(self) -> PoolView | None:
        """The latest scored pool's view (None when nothing is scored yet)."""
        from mmal.workspace.annotate import latest_scored_round
        from mmal.workspace.pool_io import load_pool

        rnd = latest_scored_round(self.ws)
        if rnd is None:
            return None
        folder = self.ws.round_dir(rnd) / "pool"
        key = (rnd, pool_version(folder))
        with self._lock:
            if key != self._pool_key:
                try:
                    pool = load_pool(folder)
                    pool.probs.shape  # noqa: B018 - touch the arrays: a torn file fails here, not mid-request
                except MmalError:
                    raise
                except (OSError, ValueError, EOFError) as e:  # pyarrow's errors are ValueError / OSError subclasses
                    raise WorkspaceError(f"{folder}: unreadable scored pool ({type(e).__name__}: {e}); run "
                                         f"`mmal score {self.ws.dir}` again") from None
                where = {k: i for i, k in enumerate(pool.ids.tolist())}
                prow = np.array([where.get(k, -1) for k in self.catalog.ids], np.int64)
                have = prow >= 0
                probs = np.asarray(pool.probs, np.float64)  # [P, C]
                pred = np.full(len(prow), -1, np.int64)
                conf = np.full(len(prow), np.nan)
                if probs.shape[1]:
                    pred[have] = probs[prow[have]].argmax(axis=1)
                    conf[have] = probs[prow[have], pred[have]]
                import hashlib

                version = f"{rnd}-" + hashlib.sha1(repr(key).encode()).hexdigest()[:10]
                self._pool = PoolView(rnd, version, pool, prow, pred, conf)
                self._pool_key = key
                self.cache = {}
            return self._pool

    def labels(self) -> np.ndarray:
        """[N] each item's current label (highest round wins), -1 when unlabeled."""
        cur = self.ws.current_labels()
        return np.array([cur.get(k, -1) for k in self.catalog.ids], np.int64)

    def batches(self) -> dict[int, BatchInfo]:
        """batch id -> :class:`BatchInfo` of every batch, in id order."""
        ids = frozenset(state.batch_ids(self.ws))
        with self._lock:
            if ids != self._batch_key:
                self._batches = {b.batch_id: BatchInfo(b.batch_id, b.round, b.strategy, b.budget, b.info,
                                                       [r[0] for r in state.batch_items(self.ws, b.batch_id)])
                                 for b in state.batches(self.ws)}
                member: dict = {}
                for b in self._batches.values():
                    for k in b.item_ids:
                        member.setdefault(k, []).append(b.batch_id)
                self._member = member
                self._batch_key = ids
            return dict(self._batches)

    def batches_of(self, item_id: str) -> list[int]:
        """Ids of the batches that hold ``item_id`` (call :meth:`batches` first in a request)."""
        return list(self._member.get(item_id, ()))

    def in_batches(self, batches) -> np.ndarray:
        """[N] bool: the item is in one of ``batches`` (BatchInfo)."""
        mask = np.zeros(len(self.ids), bool)
        pos = self.catalog.pos
        mask[[pos[k] for b in batches for k in b.item_ids if k in pos]] = True
        return mask
