"""Helpers of the review-page tests: a small workspace with a batch, and a server process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

NAMES = ["cat", "dog", "car"]


def build_workspace(root: Path, *, n_pool: int, n_batch: int, media_dir: Path | None = None, n_train: int = 9,
                    n_test: int = 6, with_pool: bool = True, names=NAMES, seed: int = 0, info=None) -> Path:
    """init a workspace (in-process), name its classes, save a synthetic scored pool for
    round 0 and record a round-1 batch of ``n_batch`` pool items (entropy + lsb-knn rows)."""
    import tomli_w

    from mmal.pool import ScoredPool, Selection
    from mmal.workspace.pool_io import save_pool
    from mmal.workspace import Workspace, init_workspace
    from mmal.workspace.annotate import record_batch

    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_train + n_test + n_pool):
        c = k % 3
        split = "train" if k < n_train else ("test" if k < n_train + n_test else "pool")
        r = {"id": f"it{k:04d}", "label": c if split != "pool" else None, "split": split, "text": f"a {names[c]} number {k}"}
        if media_dir is not None:
            if k % 3 != 2:
                r["image"] = str(media_dir / ("a.png" if c == 0 else "b.png"))
            if k % 2 == 0:
                r["audio"] = str(media_dir / ("a.wav" if c == 0 else "b.wav"))
            if k % 7 == 3:
                r["video"] = str(media_dir / "v.mp4")
        rows.append(r)
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    import json

    items = src / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ws_dir = root / "ws"
    ws = init_workspace(ws_dir, items)
    ws.config["task"]["label_names"] = list(names)
    (ws_dir / "mmal.toml").write_text(tomli_w.dumps(ws.config))
    ws = Workspace(ws_dir)
    ids = np.array([r["id"] for r in rows])
    if with_pool:
        probs = rng.dirichlet(np.ones(3), size=len(rows)).astype(np.float32)
        save_pool(ScoredPool(ids, probs, split=np.array([r["split"] for r in rows])), ws.round_dir(0) / "pool")
    pool_ids = [r["id"] for r in rows if r["split"] == "pool"][:n_batch]
    strategy = ["lsb-knn" if i % 2 else "entropy" for i in range(len(pool_ids))]
    reason = [rows[i % n_train]["id"] if s == "lsb-knn" else "" for i, s in enumerate(strategy)]
    sel = Selection(ids=np.array(pool_ids), strategy=np.array(strategy, dtype=object),
                    score=np.linspace(1, 0, len(pool_ids)), reason=np.array(reason, dtype=object))
    record_batch(ws, sel, budget=n_batch, round_=1, info=info or {"spec": "entropy:0.5,lsb-knn:0.5"})
    return ws_dir


def scored_pool(ws_dir, rnd, *, seed, labeled_at_scoring, with_at_selection=True):
    """Save a round-``rnd`` scored pool with an embedding, the labels it was scored with and
    at-selection probabilities for the round-1 batch items."""
    import pyarrow.parquet as pq

    from mmal.pool import ScoredPool
    from mmal.workspace.pool_io import replace_pool

    t = pq.read_table(ws_dir / "items.parquet").to_pylist()
    ids = np.array([r["id"] for r in t])
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3) * 0.6, size=len(ids)).astype(np.float32)
    emb = (rng.normal(size=(len(ids), 8)) @ rng.normal(size=(8, 8))).astype(np.float32)
    labels = np.array([labeled_at_scoring.get(i, -1) for i in ids], np.int64)
    extras = {}
    if with_at_selection:
        at = np.full((len(ids), 3), np.nan, np.float32)
        con = sqlite3.connect(ws_dir / "state.sqlite")
        batched = [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1")]
        con.close()
        pos = {k: i for i, k in enumerate(ids.tolist())}
        for k in batched[:4]:
            at[pos[k]] = rng.dirichlet(np.ones(3) * 0.6)
        extras["at_selection_probs"] = at
    pool = ScoredPool(ids, probs, embedding=emb, labels=labels, split=np.array([r["split"] for r in t]), extras=extras)
    replace_pool(pool, ws_dir / "rounds" / str(rnd) / "pool")


def _env():
    src = str(Path(__file__).resolve().parents[1] / "src")
    return dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")


@contextmanager
def server(ws_dir, *args, timeout: float = 60.0):
    """Run ``python -m mmal.serve ws_dir --port 0 *args``; yields (process, base URL, token or None)."""
    proc = subprocess.Popen([sys.executable, "-m", "mmal.serve", str(ws_dir), "--port", "0", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        base, token = start_info(proc, timeout)
        yield proc, base, token
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_info(proc, timeout: float = 60.0):
    """Read the server's start line: (base URL on 127.0.0.1, token or None); waits until it answers."""
    import httpx

    line = proc.stdout.readline()
    m = re.search(r"http://([^/]+)/(\?token=(\S+))?", line or "")
    if not m:
        raise AssertionError(f"no start line from the server: {line!r}; stderr: {proc.stderr.read()}")
    port = m.group(1).rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}"
    token = m.group(3)
    t0 = time.time()
    while True:
        try:
            httpx.get(base + "/static/review.css", timeout=2, params={"token": token} if token else None)
            return base, token
        except httpx.TransportError:
            if time.time() - t0 > timeout or proc.poll() is not None:
                raise
            time.sleep(0.1)
