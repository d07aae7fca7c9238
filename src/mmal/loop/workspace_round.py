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


TOWERS_FILE = "towers.pt"
TOWERS_FORMAT = "mmal-towers/1"


def _workspace_inputs(ws: Workspace, modalities) -> dict[str, list]:
    """Raw inputs per modality from items.parquet for end-to-end fine-tuning / re-encoding.

    Text: the string; image: the image path, else a video's ``[encode] n_frames`` frames
    (decoded lazily); audio: the audio path. ``None`` where the item lacks the modality.
    """
    from functools import partial

    from mmal.data import media

    t = ws.items
    names = t.column_names
    n = t.num_rows
    col = {c: (t.column(c).to_pylist() if c in names else [None] * n) for c in ("text", "image", "video", "audio")}
    n_frames = int(ws.config.get("encode", {}).get("n_frames", 3))
    out = {}
    for m in modalities:
        if m == "image":
            out[m] = [a if a else (partial(media.load_video_frames, v, n_frames) if v else None)
                      for a, v in zip(col["image"], col["video"])]
        else:
            out[m] = [v if v not in (None, "") else None for v in col[m]]
    return out


def _workspace_encoders(ws: Workspace) -> tuple[dict, dict]:
    from mmal import encoders
    from mmal.features.pipeline import encoder_params, workspace_encoders

    params = {m: encoder_params(ws, m) for m in workspace_encoders(ws)}
    return {m: encoders.load(spec, **params[m]) for m, spec in workspace_encoders(ws).items()}, params


def _train_end_to_end(ws: Workspace, labels, labeled, n_classes, model_cfg, tcfg, seed, progress):
    """``mmal train --finetune-towers``: fit the classifier and the towers from the raw items."""
    from dataclasses import replace
    from types import SimpleNamespace

    from mmal.errors import ConfigError
    from mmal.loop.core import build_configs, split_train_val
    from mmal.train.finetune import fit_end_to_end, towers_state

    if len(labeled) == 0:
        raise ConfigError("no labeled items to train on: label some items first (mmal label)")
    encs, params = _workspace_encoders(ws)
    inputs = _workspace_inputs(ws, list(encs))
    dims = {m: SimpleNamespace(dim=e.dim) for m, e in encs.items()}
    mc, tc = build_configs(dims, n_classes, model_cfg, tcfg, seed)
    tc = replace(tc, device=str(tcfg.get("device", tc.device)), finetune_towers=True)
    tr, va = split_train_val(labeled, labels, float(tcfg.get("val_fraction", 0.2)), seed)
    model, towers, history = fit_end_to_end(
        inputs, labels, tr, va, encoders=encs, model_config=mc, train_config=tc,
        tower_lr=float(tcfg.get("tower_lr", 1e-5)), tower_mode=str(tcfg.get("tower_mode", "eval")), progress=progress)
    return model, history, mc, tc, towers_state(towers, encs, params)


def train_workspace(directory, *, fusion=None, heads=None, seed=None, finetune_towers=None, progress=True) -> dict:
    """Train the round's model. ``finetune_towers`` (or ``[train] finetune_towers = true`` in
    mmal.toml) trains the encoder towers end to end from the raw items and saves their
    weights next to the checkpoint (``rounds/<n>/towers.pt``); slow on CPU."""
    import os

    import torch

    from mmal.features.pipeline import load_features
    from mmal.train import save_checkpoint

    ws = Workspace(directory)
    ids, split, labels = _arrays(ws)
    model_cfg = dict(ws.config.get("model", {}))
    if fusion:
        model_cfg["fusion"] = fusion
    if heads:
        model_cfg["heads"] = heads
    tcfg = dict(ws.config.get("train", {}))
    seed = int(tcfg.get("seed", 0) if seed is None else seed)
    finetune = bool(tcfg.get("finetune_towers", False) if finetune_towers is None else finetune_towers)
    labeled = np.flatnonzero((labels >= 0) & (split != "test"))
    n_classes = max(ws.n_classes, int(labels.max()) + 1 if labels.max() >= 0 else 0)
    rnd = current_round(ws)
    rdir = ws.round_dir(rnd)
    extra = {"round": rnd, "n_labeled": int(len(labeled))}
    if finetune:
        model, history, mc, tc, tstate = _train_end_to_end(ws, labels, labeled, n_classes, model_cfg, tcfg, seed, progress)
        rdir.mkdir(parents=True, exist_ok=True)
        tmp = rdir / (TOWERS_FILE + ".tmp")
        torch.save({"format": TOWERS_FORMAT, "towers": tstate}, tmp)
        os.replace(tmp, rdir / TOWERS_FILE)
        extra.update(finetune_towers=True, towers_file=TOWERS_FILE)
    else:
        features = load_features(ws)
        model, history, mc, tc = train_model(features, labels, labeled, n_classes, model_overrides=model_cfg,
                                             train_overrides=tcfg, val_fraction=float(tcfg.get("val_fraction", 0.2)),
                                             seed=seed, progress=progress)
        (rdir / TOWERS_FILE).unlink(missing_ok=True)  # a stale tuned tower must not be used by `score`
    path = rdir / "model.pt"
    save_checkpoint(path, model, mc, tc, extra=extra)
    (rdir / "history.json").write_text(json.dumps(history, indent=1, default=float))
    return {"round": rnd, "model": str(path), "n_labeled": int(len(labeled)), "best_epoch": history.get("best_epoch"),
            "fusion": mc.fusion, "heads": mc.heads, "finetune_towers": finetune}


def _load_round_model(ws: Workspace):
    from mmal.train import load_checkpoint

    rnd = current_round(ws)
    path = ws.round_dir(rnd) / "model.pt"
    if not path.exists():
        raise WorkspaceError(f"no model for round {rnd} ({path}); run `mmal train {ws.dir}` first")
    model, mc, tc, extra = load_checkpoint(path)
    return rnd, model, extra


def _tuned_features(ws: Workspace, rnd: int, extra: dict, ids, progress: bool) -> dict:
    """Features re-encoded with the round's fine-tuned towers (``towers.pt``)."""
    import torch

    from mmal.train.finetune import encode_with_towers, load_towers

    path = ws.round_dir(rnd) / extra["towers_file"]
    if not path.is_file():
        raise WorkspaceError(f"{path}: the round's checkpoint was trained with --finetune-towers but its towers file is missing; run `mmal train {ws.dir} --finetune-towers` again")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WorkspaceError(f"{path}: not a readable towers file ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != TOWERS_FORMAT:
        raise WorkspaceError(f"{path}: expected an mmal towers file (format '{TOWERS_FORMAT}')")
    encs, towers = load_towers(payload["towers"])
    inputs = _workspace_inputs(ws, list(encs))
    return encode_with_towers(inputs, encs, towers, ids=ids, progress=progress)


def score_workspace(directory, *, coalitions=False, mc_samples=0, progress=True) -> dict:
    """Score every item with the round's model (re-encoding with its tuned towers when it has them)."""
    from mmal.features.pipeline import load_features

    ws = Workspace(directory)
    rnd, model, extra = _load_round_model(ws)
    ids, split, labels = _arrays(ws)
    if extra.get("towers_file"):
        features = _tuned_features(ws, rnd, extra, ids, progress)
    else:
        features = load_features(ws)
    pool = score_pool(model, features, ids, labels=labels, split=split, coalitions=coalitions,
                      mc_samples=mc_samples, progress=progress)
    folder = pool.save(ws.round_dir(rnd) / "pool")
    return {"round": rnd, "pool": str(folder), "n": len(pool), "tuned_towers": bool(extra.get("towers_file"))}


def _round_pool(ws: Workspace, hint: str):
    """(round, pool folder, ScoredPool) of the current round; WorkspaceError with ``hint`` if not scored."""
    from mmal.select.types import ScoredPool

    rnd = current_round(ws)
    folder = ws.round_dir(rnd) / "pool"
    if not (folder / "ids.parquet").exists():
        raise WorkspaceError(f"no scored pool for round {rnd}; {hint}")
    return rnd, folder, ScoredPool.load(folder)


def evaluate_workspace(directory) -> dict:
    from mmal.metrics import compute

    ws = Workspace(directory)
    rnd, folder, pool = _round_pool(ws, f"run `mmal score {ws.dir}` first")
    ids, split, labels = _arrays(ws)
    test = np.flatnonzero((split == "test") & (labels >= 0))
    if len(test) == 0:
        raise WorkspaceError(f"{ws.dir}: no labeled test items (split == 'test') to evaluate on")
    met = compute(labels[test], np.asarray(pool.probs)[test])
    out = {"round": rnd, "n_test": int(len(test)), **met}
    (ws.round_dir(rnd) / "metrics.json").write_text(json.dumps(out, indent=1, default=float))
    return out


def select_workspace(directory, spec: str, budget: int, *, seed: int = 0, params: dict | None = None,
                     select_fn=None) -> dict:
    """Select the next batch; ``select_fn`` (default :func:`mmal.select.select`, same signature)
    lets the Ray engine run the pool-sized part distributed (:mod:`mmal.engine`)."""
    from mmal.select import select
    from mmal.workspace.annotate import export_batch, record_batch

    ws = Workspace(directory)
    rnd, folder, pool = _round_pool(ws, "run `mmal train` and `mmal score` first")
    ids, split, labels = _arrays(ws)
    if pool.ids.tolist() != ids.tolist():
        raise WorkspaceError(f"{folder} was scored for a different item set; run `mmal score` again")
    pool.labels = labels
    sel = (select_fn or select)(spec, pool, int(budget), labeled_mask=labels >= 0, seed=seed, **(params or {}))
    sel.round = rnd + 1
    batch_id = record_batch(ws, sel, budget=int(budget), round_=rnd + 1, info={"spec": spec, **(sel.info or {})})
    sel_dir = ws.round_dir(rnd + 1)
    sel_dir.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(sel.to_table(), sel_dir / "selection.parquet")
    paths = export_batch(ws, batch_id)
    return {"round": rnd + 1, "batch": batch_id, "n_selected": len(sel), "exports": {k: str(v) for k, v in paths.items()},
            "info": sel.info}
