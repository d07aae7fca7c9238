"""One active-learning round on a workspace, stage by stage (each a CLI command).

Round numbering: round 0 holds the labels of the items file; ``mmal select`` opens round
n+1 and its batch's labels are imported under round n+1; ``train``/``score``/``evaluate``
work on the current round = the highest round that has labels or a batch.
"""

from __future__ import annotations

import json

import numpy as np

from mmal.errors import WorkspaceError
from mmal.loop.core import score_pool, train_model
from mmal.workspace import Workspace


def current_round(ws: Workspace) -> int:
    with ws.db() as con:
        a = con.execute("SELECT COALESCE(MAX(round), 0) FROM labels").fetchone()[0]
        b = con.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0]
    return int(max(a, b))


def _arrays(ws: Workspace):
    t = ws.items
    ids = np.asarray(t.column("id").to_pylist())
    split = np.asarray(t.column("split").to_pylist())
    cur = ws.current_labels()
    labels = np.array([cur.get(i, -1) for i in ids.tolist()], np.int64)
    return ids, split, labels


def train_workspace(directory, *, fusion=None, heads=None, seed=None, progress=True) -> dict:
    from mmal.features.pipeline import load_features
    from mmal.train import save_checkpoint

    ws = Workspace(directory)
    ids, split, labels = _arrays(ws)
    features = load_features(ws)
    model_cfg = dict(ws.config.get("model", {}))
    if fusion:
        model_cfg["fusion"] = fusion
    if heads:
        model_cfg["heads"] = heads
    tcfg = dict(ws.config.get("train", {}))
    seed = int(tcfg.get("seed", 0) if seed is None else seed)
    labeled = np.flatnonzero((labels >= 0) & (split != "test"))
    n_classes = max(ws.n_classes, int(labels.max()) + 1 if labels.max() >= 0 else 0)
    model, history, mc, tc = train_model(features, labels, labeled, n_classes, model_overrides=model_cfg,
                                         train_overrides=tcfg, val_fraction=float(tcfg.get("val_fraction", 0.2)),
                                         seed=seed, progress=progress)
    rnd = current_round(ws)
    path = ws.round_dir(rnd) / "model.pt"
    save_checkpoint(path, model, mc, tc, extra={"round": rnd, "n_labeled": int(len(labeled))})
    (ws.round_dir(rnd) / "history.json").write_text(json.dumps(history, indent=1, default=float))
    return {"round": rnd, "model": str(path), "n_labeled": int(len(labeled)), "best_epoch": history.get("best_epoch"),
            "fusion": mc.fusion, "heads": mc.heads}


def _load_round_model(ws: Workspace):
    from mmal.train import load_checkpoint

    rnd = current_round(ws)
    path = ws.round_dir(rnd) / "model.pt"
    if not path.exists():
        raise WorkspaceError(f"no model for round {rnd} ({path}); run `mmal train {ws.dir}` first")
    model, mc, tc, extra = load_checkpoint(path)
    return rnd, model


def score_workspace(directory, *, coalitions=False, mc_samples=0, progress=True) -> dict:
    from mmal.features.pipeline import load_features

    ws = Workspace(directory)
    rnd, model = _load_round_model(ws)
    ids, split, labels = _arrays(ws)
    features = load_features(ws)
    pool = score_pool(model, features, ids, labels=labels, split=split, coalitions=coalitions,
                      mc_samples=mc_samples, progress=progress)
    folder = pool.save(ws.round_dir(rnd) / "pool")
    return {"round": rnd, "pool": str(folder), "n": len(pool)}


def evaluate_workspace(directory) -> dict:
    from mmal.metrics import compute
    from mmal.select.types import ScoredPool

    ws = Workspace(directory)
    rnd = current_round(ws)
    folder = ws.round_dir(rnd) / "pool"
    if not (folder / "ids.parquet").exists():
        raise WorkspaceError(f"no scored pool for round {rnd}; run `mmal score {ws.dir}` first")
    pool = ScoredPool.load(folder)
    ids, split, labels = _arrays(ws)
    test = np.flatnonzero((split == "test") & (labels >= 0))
    if len(test) == 0:
        raise WorkspaceError(f"{ws.dir}: no labeled test items (split == 'test') to evaluate on")
    met = compute(labels[test], np.asarray(pool.probs)[test])
    out = {"round": rnd, "n_test": int(len(test)), **met}
    (ws.round_dir(rnd) / "metrics.json").write_text(json.dumps(out, indent=1, default=float))
    return out


def select_workspace(directory, spec: str, budget: int, *, seed: int = 0, params: dict | None = None) -> dict:
    from mmal.select import select
    from mmal.select.types import ScoredPool
    from mmal.workspace.annotate import export_batch, record_batch

    ws = Workspace(directory)
    rnd = current_round(ws)
    folder = ws.round_dir(rnd) / "pool"
    if not (folder / "ids.parquet").exists():
        raise WorkspaceError(f"no scored pool for round {rnd}; run `mmal train` and `mmal score` first")
    pool = ScoredPool.load(folder)
    ids, split, labels = _arrays(ws)
    if pool.ids.tolist() != ids.tolist():
        raise WorkspaceError(f"{folder} was scored for a different item set; run `mmal score` again")
    pool.labels = labels
    sel = select(spec, pool, int(budget), labeled_mask=labels >= 0, seed=seed, **(params or {}))
    sel.round = rnd + 1
    batch_id = record_batch(ws, sel, budget=int(budget), round_=rnd + 1, info={"spec": spec, **(sel.info or {})})
    sel_dir = ws.round_dir(rnd + 1)
    sel_dir.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(sel.to_table(), sel_dir / "selection.parquet")
    paths = export_batch(ws, batch_id)
    return {"round": rnd + 1, "batch": batch_id, "n_selected": len(sel), "exports": {k: str(v) for k, v in paths.items()},
            "info": sel.info}
