"""Cold start at the workspace edge: MMSSL pre-training stored in the workspace, the cold
pool for ``mmal select`` on a workspace with no labels, and :func:`cold_start_initial` for
``mmal simulate --init-strategy``.

Layout: ``DIR/pretrain/<name>/embedding.<modality>.npy`` (float32 ``[N_items, dim]``,
row-aligned with ``items.parquet``), ``heads.pt`` (projection-head state dicts) and
``meta.json`` (config, per-epoch history, Table 4.1 metrics, item count, seconds).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import fields

import numpy as np

from mmal.errors import ConfigError, WorkspaceError
from mmal.models.mmssl import MMSSLConfig, embed, train_mmssl
from mmal.select.coldstart import COLD_START_STRATEGIES, cold_pool

PRETRAIN_FORMAT = "mmal-mmssl/1"
#: Cold-start strategies that compare modalities with each other (need MMSSL embeddings).
NEEDS_SHARED_SPACE = ("mm-activeft", "mmcsal")


def _ids_digest(ids) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def mmssl_config(**overrides) -> MMSSLConfig:
    """:class:`MMSSLConfig` from keyword overrides; unknown names raise :class:`ConfigError`."""
    known = {f.name for f in fields(MMSSLConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"unknown MMSSL parameter(s): {', '.join(bad)}; known: {', '.join(sorted(known))}")
    return MMSSLConfig(**{k: v for k, v in overrides.items() if v is not None})


def pretrain_features(features: dict, rows=None, config: MMSSLConfig | None = None, log=None) -> dict:
    """Train MMSSL on ``features[m][rows]`` and embed all rows: the ``pretrain`` dict.

    Returns ``{"embeddings": {m: [N, dim]}, "metrics": ..., "history": ..., "config": ...,
    "heads": {m: state_dict}, "seconds": float}``.
    """
    feats = {m: np.asarray(x, np.float32) for m, x in features.items()}
    train_rows = np.arange(len(next(iter(feats.values())))) if rows is None else np.asarray(rows)
    res = train_mmssl({m: x[train_rows] for m, x in feats.items()}, config, log=log)
    emb = embed(res.heads, feats)
    return {"embeddings": emb, "metrics": res.metrics, "history": res.history, "config": res.config,
            "heads": {m: h.state_dict() for m, h in res.heads.items()}, "seconds": res.seconds}


def pretrain_workspace(directory, *, name: str = "default", include_test: bool = False, force: bool = False,
                       log=None, **params) -> dict:
    """``mmal pretrain DIR``: train MMSSL on the workspace's unlabeled pool and store it.

    Parameters
    ----------
    directory : workspace folder (encoded: ``mmal encode DIR`` first).
    name : sub-folder of ``DIR/pretrain`` (``[a-zA-Z0-9_-]+``).
    include_test : train on the test split too (default False: test items are embedded
        but never trained on). Labels are never read.
    force : replace an existing ``DIR/pretrain/<name>``.
    **params : :class:`MMSSLConfig` fields (``epochs``, ``dim``, ``prototypes``, ...).

    Returns the stored ``meta`` dict. Nothing is written unless training succeeded (the
    folder is written under a temporary name and renamed).
    """
    import torch

    from mmal.features.pipeline import load_features
    from mmal.workspace import Workspace

    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise ConfigError(f"pretrain name must match [A-Za-z0-9_-]+, got {name!r}")
    cfg = mmssl_config(**params)
    ws = Workspace(directory)
    out = ws.dir / "pretrain" / name
    if out.exists() and not force:
        raise WorkspaceError(f"{out} exists; pass --force to replace it")
    ids = ws.items.column("id").to_pylist()
    split = np.asarray(ws.items.column("split").to_pylist()) if "split" in ws.items.column_names else None
    feats = {m: sf.pooled for m, sf in load_features(ws, ids).items()}
    if len(feats) < 2:
        raise ConfigError(f"{ws.dir}: MMSSL needs at least two encoded modalities, got {sorted(feats)}")
    rows = np.arange(len(ids)) if include_test or split is None else np.flatnonzero(split != "test")
    pre = pretrain_features(feats, rows, cfg, log=log)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for m, e in pre["embeddings"].items():
        np.save(tmp / f"embedding.{m}.npy", e.astype(np.float32))
    torch.save(pre["heads"], tmp / "heads.pt")
    meta = {"format": PRETRAIN_FORMAT, "name": name, "n_items": len(ids), "ids_digest": _ids_digest(ids),
            "n_train": int(len(rows)), "include_test": bool(include_test), "modalities": sorted(feats),
            "input_dims": {m: int(x.shape[1]) for m, x in feats.items()}, "encoders": ws.config.get("encoders", {}),
            "config": pre["config"], "metrics": pre["metrics"], "history": pre["history"], "seconds": pre["seconds"]}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=float))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return meta


def load_pretrain(directory, name: str = "default", *, required: bool = False) -> dict | None:
    """The stored pre-training of a workspace: ``{"embeddings": {m: [N, dim]}, "meta": {...}}``.

    ``None`` when absent (or :class:`WorkspaceError` when ``required``); a store that does
    not match the workspace's items raises :class:`WorkspaceError`.
    """
    from mmal.workspace import Workspace

    ws = Workspace(directory)
    folder = ws.dir / "pretrain" / name
    if not (folder / "meta.json").exists():
        if required:
            raise WorkspaceError(f"{folder}: no MMSSL pre-training; run `mmal pretrain {ws.dir}` first")
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as e:
        raise WorkspaceError(f"{folder / 'meta.json'}: invalid JSON ({e})") from None
    ids = ws.items.column("id").to_pylist()
    if meta.get("ids_digest") != _ids_digest(ids):
        raise WorkspaceError(f"{folder}: pre-training was made for other items; rerun `mmal pretrain {ws.dir} --force`")
    emb = {m: np.load(folder / f"embedding.{m}.npy", mmap_mode="r") for m in meta["modalities"]}
    return {"embeddings": emb, "meta": meta}


def check_cold_strategy(spec: str) -> None:
    """Raise a :class:`ConfigError` naming the cold-start strategies when ``spec`` has another.

    For ``mmal select`` on a workspace with no labels (warm-start strategies need a model).
    """
    from mmal.select.mix import parse_mix

    names = [n for n, _ in parse_mix(spec)] if ":" in spec else [spec.strip()]
    bad = [n for n in names if n not in COLD_START_STRATEGIES]
    if bad:
        raise ConfigError(f"the workspace has no labels, so strategy {', '.join(repr(b) for b in bad)} (warm start, "
                          f"needs a trained model) cannot run; use a cold-start strategy: {', '.join(COLD_START_STRATEGIES)}")


def cold_workspace_pool(directory, *, pretrain: str | None = "default"):
    """The cold :class:`~mmal.select.types.ScoredPool` of a workspace (no model needed).

    Raw pooled tower features in ``modality``, the stored MMSSL embeddings (``pretrain``
    name; ``None`` = do not use them) in ``extras["mmssl:<m>"]``; uniform probs.
    """
    from mmal.features.pipeline import load_features
    from mmal.loop.workspace_round import _arrays
    from mmal.workspace import Workspace

    ws = Workspace(directory)
    ids, split, labels = _arrays(ws)
    raw = {m: sf.pooled for m, sf in load_features(ws, ids.tolist()).items()}
    pre = load_pretrain(ws.dir, pretrain) if pretrain else None
    return cold_pool(ids, raw, None if pre is None else pre["embeddings"], n_classes=ws.n_classes, split=split,
                     labels=labels)


def cold_start_initial(features: dict, candidates: np.ndarray, budget: int, strategy: str, seed: int,
                       pretrain: dict | None, *, n_classes: int | None = None) -> np.ndarray:
    """Initial labeled rows chosen by a cold-start strategy (for ``simulate --init-strategy``).

    Parameters
    ----------
    features : dict modality -> pooled features ``[N, D_m]`` (all rows of the run).
    candidates : int array of rows that may be picked.
    budget : number of rows wanted.
    strategy : a name in :data:`~mmal.select.coldstart.COLD_START_STRATEGIES`.
    seed : seeds the strategy's ``rng``.
    pretrain : ``None`` (raw features; ``mm-activeft`` / ``mmcsal`` then raise) or a dict
        with ``"embeddings": {m: [N, dim]}`` row-aligned with ``features`` (e.g. from
        :func:`pretrain_features` or :func:`load_pretrain`); used as the default features.
    n_classes : number of classes (``probcover``'s pseudo-label count); ``None`` = 2.

    Returns
    -------
    int64 array of ``min(budget, len(candidates))`` unique rows (pick order).
    """
    from mmal.select import select

    if strategy not in COLD_START_STRATEGIES:
        raise ConfigError(f"--init-strategy {strategy!r} is not a cold-start strategy; use one of: "
                          f"{', '.join(COLD_START_STRATEGIES)}")
    if pretrain is None and strategy in NEEDS_SHARED_SPACE:
        raise ConfigError(f"--init-strategy {strategy} compares modalities and needs MMSSL embeddings "
                          "(run `mmal pretrain DIR` first)")
    n = len(next(iter(features.values())))
    candidates = np.asarray(candidates, np.int64)
    keep = np.zeros(n, bool)
    keep[candidates] = True
    split = np.where(keep, "pool", "test")  # non-candidates are never selectable
    ids = np.arange(n).astype(str)
    pool = cold_pool(ids, features, None if pretrain is None else pretrain["embeddings"], split=split,
                     n_classes=int(n_classes or 2))
    sel = select(strategy, pool, int(budget), seed=int(seed))
    return sel.ids.astype(np.int64)


def workspace_has_labels(directory) -> bool:
    """True when any non-test item of the workspace has a label (warm start possible)."""
    from mmal.loop.workspace_round import _arrays
    from mmal.workspace import Workspace

    _, split, labels = _arrays(Workspace(directory))
    return bool(np.any((labels >= 0) & (split != "test")))


def cold_select_workspace(directory, spec: str, budget: int, *, seed: int = 0, params: dict | None = None,
                          pretrain: str | None = "default", dry_run: bool = False, append: bool = False) -> dict:
    """``mmal select`` on a workspace with no labels: a cold-start strategy, no model needed.

    The batch is recorded exactly as :func:`mmal.loop.workspace_round.select_workspace` does
    (one unit under the workspace lock, exports, ``selection.parquet``), on a pool built from
    the features instead of a scored one. A warm-start strategy raises a
    :class:`ConfigError` naming the cold-start strategies, before anything is written.
    ``pretrain`` names the stored MMSSL embeddings to use by default (absent = raw features).
    """
    from mmal.loop.workspace_round import select_workspace

    check_cold_strategy(spec)
    pool = cold_workspace_pool(directory, pretrain=pretrain)
    out = select_workspace(directory, spec, budget, seed=seed, params=params, dry_run=dry_run, append=append, pool=pool)
    out["cold_start"] = True
    return out
