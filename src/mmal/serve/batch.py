"""What the review page shows: the current batch, its items, the model's view of them.

Pure reads of the workspace (``state.sqlite``, ``items.parquet``, ``rounds/<n>/pool``);
no HTTP here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmal.errors import WorkspaceError
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
