"""The relevance task on a workspace: ``mmal pretrain / train / score / evaluate`` when ``[task] type = "relevance"``.

Same workspace contracts as classification (:mod:`mmal.loop.workspace_round`): labels are
the workspace's current labels (round 0 from the items file, later rounds from
``mmal label``); the round's model is ``rounds/<n>/model.pt``; ``mmal score`` writes the
round's :class:`~mmal.select.ScoredPool` to ``rounds/<n>/pool`` (so ``mmal select``,
``mmal label`` and the exports run unchanged); a new model removes the round's stale pool.
What differs:

- the inputs: :func:`~mmal.relevance.features.prepare_relevance` over the workspace's
  ``items.parquet`` (keywords, frozen MiniLM states, frozen EfficientNet tokens cached under
  ``features/relevance``), not the classification feature cache;
- the model: a relevance learner (:mod:`mmal.relevance.learner`), saved with
  :func:`mmal.train.checkpoint.write_payload` as format ``mmal-relevance/1``;
- the pool: ``probs`` is the four-level distribution ``[N, 4]``, ``embedding`` the learner's
  embedding, ``extras["relevance_score"]`` the score ``r`` (eq. 9 for distribution heads) and,
  as for classification, ``extras["at_selection_probs"]`` (each batched pair's distribution
  when it was selected; LSB's out-of-sample seeds);
- ``evaluate``: AUC ({0,1} vs {2,3}), Spearman, Pearson, NDCG@10 per query and level accuracy;
- ``pretrain``: ITC / ITM / MLM / PQVM (:func:`~mmal.relevance.pretrain.pretrain_relevance`)
  on the workspace's videos, stored in ``pretrain/<name>/`` (``config.json``, ``model.pt``,
  ``meta.json``); ``train`` starts from it (``--pretrain NAME``; ``default`` when present).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError, WorkspaceError

RELEVANCE_FORMAT = "mmal-relevance/1"
PRETRAIN_FORMAT = "mmal-relevance-pretrain/1"
#: CPU-sized model of the workspace commands (the setup of docs/results/hcmrm.md)
WORKSPACE_MODEL = dict(dim=64, n_heads=4, n_text_layers=1, n_image_layers=1, n_fusion_layers=1, embed_dim=32)


def is_relevance(directory) -> bool:
    """True when ``directory/mmal.toml`` says ``[task] type = "relevance"``; False on any problem
    (the command's own workspace checks then report it)."""
    import tomllib

    try:
        cfg = tomllib.loads((Path(directory) / "mmal.toml").read_text())
        return cfg.get("task", {}).get("type") == "relevance"
    except (OSError, ValueError):
        return False


def relevance_data(ws, labels=None):
    """:class:`RelevanceData` of the workspace items, with the workspace's current labels and splits."""
    from mmal.loop.workspace_round import _arrays
    from mmal.relevance.features import prepare_relevance

    ids, split, cur = _arrays(ws)
    names = ws.items.column_names
    n_frames = 1 if "video" not in names else int(ws.config.get("encode", {}).get("n_frames", 3))
    data = prepare_relevance(ws.dir / "items.parquet", cache_dir=ws.dir / "features" / "relevance", n_frames=n_frames)
    data.labels = np.asarray(cur if labels is None else labels, np.int64)
    data.splits = np.asarray(split, dtype=object)
    return ids, split, data


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise ConfigError(f"pretrain name must match [A-Za-z0-9_-]+, got {name!r}")
    return name


def pretrain_relevance_workspace(directory, *, name: str = "default", objectives: str = "itc,itm,mlm,pqvm",
                                 arch: str = "dual", epochs: int = 3, seed: int = 0, force: bool = False,
                                 log=None, **config) -> dict:
    """``mmal pretrain DIR --objectives ...`` on a relevance workspace (module docstring).

    Runs on every video of the workspace (no labels and no real queries are read). Writes
    ``pretrain/<name>`` under a temporary name, renamed when complete.
    """
    from mmal.relevance.io import save_model
    from mmal.relevance.model import RelevanceConfig
    from mmal.relevance.pretrain import parse_objectives, pretrain_relevance
    from mmal.workspace import Workspace

    _check_name(name)
    objs = parse_objectives(objectives)
    ws = Workspace(directory)
    out = ws.dir / "pretrain" / name
    if out.exists() and not force:
        raise WorkspaceError(f"{out} exists; pass --force to replace it")
    cfg = RelevanceConfig(arch=arch, **{**WORKSPACE_MODEL, **{k: v for k, v in config.items() if v is not None}}).check()
    t0 = time.perf_counter()
    _, _, data = relevance_data(ws)
    res = pretrain_relevance(data, cfg, objectives=objs, epochs=epochs, seed=seed)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    meta = {"format": PRETRAIN_FORMAT, "name": name, "task": "relevance", "objectives": list(res.objectives),
            "arch": arch, "epochs": int(epochs), "seed": int(seed), "n_videos": len(data.video_ids),
            "history": res.history, "samples_per_s": res.samples_per_s, "seconds": time.perf_counter() - t0}
    save_model(tmp, res.model, meta=meta)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=float))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return meta


def load_relevance_pretrain(ws, name: str | None):
    """``(config dict, state_dict, name)`` of ``pretrain/<name>``, or None when ``name`` is None.

    ``name="default"`` that does not exist gives None (train from scratch); any other missing
    name, or a store that is not a relevance pre-training, raises :class:`WorkspaceError`.
    """
    import torch

    if name is None:
        return None
    folder = ws.dir / "pretrain" / _check_name(name)
    meta_p = folder / "meta.json"
    if not meta_p.exists():
        if name == "default":
            return None
        raise WorkspaceError(f"{folder}: no relevance pre-training; run `mmal pretrain {ws.dir} --name {name}` first")
    try:
        meta = json.loads(meta_p.read_text())
        info = json.loads((folder / "config.json").read_text())
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable store is one line
        raise WorkspaceError(f"{folder}: unreadable relevance pre-training ({type(e).__name__}: {e}); "
                             f"run `mmal pretrain {ws.dir} --name {name} --force`") from None
    if meta.get("format") != PRETRAIN_FORMAT:
        raise WorkspaceError(f"{folder}: not a relevance pre-training (format {meta.get('format')!r}); "
                             f"run `mmal pretrain {ws.dir} --name {name} --force`")
    return info["config"], state["model"], name


def train_relevance_workspace(directory, *, learner: str | None = None, head: str = "hsoftmax", epochs: int | None = None,
                              seed: int | None = None, pretrain: str | None = "default", log=None) -> dict:
    """``mmal train DIR`` on a relevance workspace: fit a relevance learner on the labeled non-test pairs."""
    from mmal.loop.workspace_round import _invalidate_derived, current_round
    from mmal.relevance.learner import DEFAULT_RELEVANCE_LEARNER, check_head, make_relevance_learner
    from mmal.train.checkpoint import write_payload
    from mmal.workspace import Workspace

    ws = Workspace(directory)
    name = learner or DEFAULT_RELEVANCE_LEARNER["train"]
    check_head(head)
    seed = int(ws.config.get("train", {}).get("seed", 0) if seed is None else seed)
    params = {"head": head}
    if name == "hcmrm":
        params["config"] = dict(WORKSPACE_MODEL)
        if epochs is not None:
            params["epochs"] = int(epochs)
    elif epochs is not None:
        raise ConfigError("--epochs applies to the hcmrm learner; the probe trains for a fixed number of steps")
    model = make_relevance_learner(name, seed=seed, **params)
    pre = load_relevance_pretrain(ws, pretrain) if name == "hcmrm" else None
    if pretrain not in (None, "default") and name != "hcmrm":
        raise ConfigError(f"--pretrain applies to the hcmrm learner, not {name!r}")
    if pre is not None:
        model.pretrained = pre[:2]
    ids, split, data = relevance_data(ws)
    labeled = np.flatnonzero((data.labels >= 0) & (split != "test"))
    if len(labeled) == 0:
        raise ConfigError(f"{ws.dir}: no labeled non-test pairs to train on; import labels with `mmal label {ws.dir} FILE` first")
    history = model.fit(data, data.labels, labeled, log=log)
    rnd = current_round(ws)
    rdir = ws.round_dir(rnd)
    extra = {"round": rnd, "n_labeled": int(len(labeled)), "learner": name, "pretrain": pre[2] if pre else None}
    path = write_payload(rdir / "model.pt", {"format": RELEVANCE_FORMAT, "learner": name, "config": model.config(),
                                             "state": model.state(), "extra": extra})
    (rdir / "history.json").write_text(json.dumps(history, indent=1, default=float))
    invalidated = _invalidate_derived(rdir)
    return {"round": rnd, "model": str(path), "task": "relevance", "learner": name, "head": head,
            "pretrain": extra["pretrain"], "n_labeled": int(len(labeled)),
            "seconds": round(float(history.get("seconds", float("nan"))), 2),
            "invalidated": invalidated}


def load_relevance_model(ws):
    """(round, fitted relevance learner, extra) of the current round; WorkspaceError when absent or foreign."""
    from mmal.loop.workspace_round import current_round
    from mmal.relevance.learner import make_relevance_learner
    from mmal.train.checkpoint import read_payload

    rnd = current_round(ws)
    path = ws.round_dir(rnd) / "model.pt"
    if not path.exists():
        raise WorkspaceError(f"no model for round {rnd} ({path}); run `mmal train {ws.dir}` first")
    payload = read_payload(path, RELEVANCE_FORMAT, "relevance model", f"run `mmal train {ws.dir}` again")
    try:
        cfg = dict(payload["config"])
        cfg.pop("n_classes", None)
        learner = make_relevance_learner(payload["learner"], **cfg)
        learner.load_state(payload["state"])
    except (ConfigError, RuntimeError, KeyError, TypeError) as e:
        raise WorkspaceError(f"{path}: relevance model does not match the code ({e}); run `mmal train {ws.dir}` again") from None
    return rnd, learner, payload.get("extra", {})


def score_relevance_workspace(directory, *, progress: bool = False) -> dict:
    """``mmal score DIR`` on a relevance workspace: the round's pool with the four-level ``probs``."""
    from mmal.pool import ScoredPool
    from mmal.relevance.learner import level_probs_or_error
    from mmal.workspace import Workspace
    from mmal.workspace.pool_io import replace_pool

    ws = Workspace(directory)
    rnd, model, extra = load_relevance_model(ws)
    level_probs_or_error(model.params["head"], "a scored pool for selection")
    ids, split, data = relevance_data(ws)
    res = model.score(data)
    pool = ScoredPool(ids=ids, probs=res["probs"], embedding=res["embedding"], labels=data.labels, split=split,
                      extras={"relevance_score": np.asarray(res["scores"], np.float64)})
    from mmal.loop.workspace_round import at_selection_probs

    at_sel = at_selection_probs(ws, ids, data.labels, 4)  # LSB judges labeled pairs out of sample (mmal.select.lsb)
    if at_sel is not None:
        from mmal.select.lsb import AT_SELECTION

        pool.extras[AT_SELECTION] = at_sel
    folder = replace_pool(pool, ws.round_dir(rnd) / "pool")
    return {"round": rnd, "pool": str(folder), "n": len(pool), "task": "relevance", "learner": model.name,
            "head": model.params["head"]}


def relevance_test_metrics(levels, probs, query_ids, scores=None) -> dict:
    """Test metrics of a relevance model: AUC ({0,1} vs {2,3}), Spearman, Pearson, NDCG@10 per
    query (of ``scores``, default ``E[y]`` of ``probs``), level accuracy (argmax) and the mean
    ``|E[y] - y|`` (000 eq. 11 on levels)."""
    from mmal.relevance.al import expected_level
    from mmal.relevance.metrics import relevance_metrics

    y = np.asarray(levels, np.int64)
    p = np.asarray(probs, np.float64)
    s = expected_level(p) if scores is None else np.asarray(scores, np.float64)
    out = relevance_metrics(y, s, query_ids)
    out["accuracy"] = float((p.argmax(1) == y).mean()) if len(y) else float("nan")
    out["multiclass_loss"] = float(np.abs(expected_level(p) - y).mean()) if len(y) else float("nan")
    return out


def relevance_workspace_metrics(ws, labels: np.ndarray, probs: np.ndarray, test: np.ndarray) -> dict:
    """``mmal evaluate`` metrics of a relevance workspace's test rows (:func:`relevance_test_metrics`,
    queries grouped by ``query_id``, else by the query text)."""
    cols = ws.items.column_names
    qcol = ws.items.column("query_id" if "query_id" in cols else "query").to_pylist()
    return {"task": "relevance",
            **relevance_test_metrics(labels[test], np.asarray(probs)[test], np.asarray(qcol, dtype=object)[test])}
