"""A tiny text-only workspace with a scored pool written directly (no encoders, no training),
for the select / label / export tests of the annotation loop."""

import hashlib
import sqlite3
from pathlib import Path

import numpy as np

from conftest import write_items


def make_ws(tmp_path, n_pool=60, n_test=10, n_train=6, n_classes=3, label_names=None, seed=0, text=None):
    from mmal.workspace import Workspace, init_workspace

    rows = []
    for k in range(n_train):
        rows.append({"id": f"t{k}", "label": k % n_classes, "split": "train", "text": f"train {k}"})
    for k in range(n_pool):
        rows.append({"id": f"p{k}", "label": None, "split": "pool", "text": (text or {}).get(k, f"pool {k}")})
    for k in range(n_test):
        rows.append({"id": f"x{k}", "label": k % n_classes, "split": "test", "text": f"test {k}"})
    ws = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows))
    if label_names:
        ws.config["task"]["label_names"] = list(label_names)
        ws.save_config()
        ws = Workspace(ws.dir)
    save_pool(ws, 0, seed=seed, n_classes=n_classes)
    return ws


def save_pool(ws, round_, seed=0, n_classes=3, probs=None):
    """A scored pool for ``round_``: Dirichlet probabilities (or ``probs``), random embedding."""
    from mmal.pool import ScoredPool
    from mmal.workspace.pool_io import save_pool

    ids = np.asarray(ws.items.column("id").to_pylist())
    rng = np.random.default_rng(seed)
    if probs is None:
        probs = rng.dirichlet(np.ones(n_classes), size=len(ids)).astype(np.float32)
    emb = rng.normal(size=(len(ids), 8)).astype(np.float32)
    save_pool(ScoredPool(ids, probs, emb), ws.round_dir(round_) / "pool")
    return ids, probs


def db_rows(ws_dir):
    con = sqlite3.connect(Path(ws_dir) / "state.sqlite")
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("items", "rounds", "batches", "batch_items", "labels", "meta")}
    finally:
        con.close()


def digest(ws_dir) -> str:
    """Database rows + every file except the SQLite files and the lock file."""
    h = hashlib.sha256(repr(db_rows(ws_dir)).encode())
    for p in sorted(Path(ws_dir).rglob("*")):
        if p.is_file() and not p.name.startswith("state.sqlite") and p.name != ".lock":
            h.update(str(p.relative_to(ws_dir)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()
