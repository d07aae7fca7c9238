"""Pre-training at the workspace edge, and cold start.

``mmal pretrain DIR`` runs the task's pre-training (:attr:`mmal.tasks.Task.pretraining`,
a key of :data:`PRETRAINERS`):

- ``mmssl`` (classification, 002 ch. 4): ``DIR/pretrain/<name>/embedding.<modality>.npy``
  (float32 ``[N_items, dim]``, row-aligned with ``items.parquet``), ``heads.pt``
  (projection-head state dicts) and ``meta.json`` (config, per-epoch history, Table 4.1
  metrics, item count, seconds). Cold-start selection reads the embeddings; the
  ``late-fusion`` learner's ``init_encoders`` the heads (:func:`load_mmssl_heads`);
- ``hcmrm`` (relevance, 003 §3.2): ITC / ITM / MLM / PQVM on the workspace's videos,
  ``DIR/pretrain/<name>/`` with ``config.json``, ``model.pt`` and ``meta.json``; the
  ``hcmrm`` learner starts from it (:func:`pretraining_for`).

Also here: the cold pool for ``mmal select`` on a workspace with no labels, and
:func:`cold_start_initial` for ``mmal simulate --init-strategy``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError, WorkspaceError
from mmal.models.mmssl import MMSSLConfig, embed
from mmal.train.mmssl import train_mmssl
from mmal.select.coldstart import cold_pool
from mmal.select.registry import cold_start_strategies, get_strategy

PRETRAIN_FORMAT = "mmal-mmssl/1"
HCMRM_PRETRAIN_FORMAT = "mmal-relevance-pretrain/1"


def needs_shared_space(strategy: str) -> bool:
    """True when a cold-start strategy compares modalities with each other (MMSSL embeddings; registry need ``shared_space``)."""
    return "shared_space" in get_strategy(strategy).needs


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
        raise ConfigError(f"pretrain name must match [A-Za-z0-9_-]+, got {name!r}")
    return name


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


def pretrain_mmssl_workspace(directory, *, name: str = "default", include_test: bool = False, force: bool = False,
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

    from mmal.workspace import Workspace

    check_name(name)
    cfg = mmssl_config(**params)
    ws = Workspace(directory)
    out = ws.dir / "pretrain" / name
    if out.exists() and not force:
        raise WorkspaceError(f"{out} exists; pass --force to replace it")
    ids = ws.items.column("id").to_pylist()
    split = np.asarray(ws.items.column("split").to_pylist()) if "split" in ws.items.column_names else None
    feats = {m: sf.pooled for m, sf in ws.task.load_features(ws, ids).items()}
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
    cold = cold_start_strategies()
    bad = [n for n in names if n not in cold]
    if bad:
        raise ConfigError(f"the workspace has no labels, so strategy {', '.join(repr(b) for b in bad)} (warm start, "
                          f"needs a trained model) cannot run; use a cold-start strategy: {', '.join(cold)}")


def cold_workspace_pool(directory, *, pretrain: str | None = "default"):
    """The cold :class:`~mmal.pool.ScoredPool` of a workspace (no model needed).

    Raw pooled tower features in ``modality``, the stored MMSSL embeddings (``pretrain``
    name; ``None`` = do not use them) in ``extras["mmssl:<m>"]``; uniform probs.
    """
    from mmal.loop.workspace_round import workspace_arrays
    from mmal.workspace import Workspace

    ws = Workspace(directory)
    ids, split, labels = workspace_arrays(ws)
    raw = {m: sf.pooled for m, sf in ws.task.load_features(ws, ids.tolist()).items()}
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
    strategy : a cold-start strategy (:func:`mmal.select.registry.cold_start_strategies`).
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

    if strategy not in cold_start_strategies():
        raise ConfigError(f"--init-strategy {strategy!r} is not a cold-start strategy; use one of: "
                          f"{', '.join(cold_start_strategies())}")
    if pretrain is None and needs_shared_space(strategy):
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
    from mmal.loop.workspace_round import workspace_arrays
    from mmal.workspace import Workspace

    _, split, labels = workspace_arrays(Workspace(directory))
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


# ---- HCMRM pre-training (the relevance task) ------------------------------------------------------
def pretrain_hcmrm_workspace(directory, *, name: str = "default", objectives: str = "itc,itm,mlm,pqvm",
                             arch: str = "dual", epochs: int | None = None, seed: int = 0, force: bool = False,
                             log=None, **config) -> dict:
    """``mmal pretrain DIR`` on a relevance workspace: ITC / ITM / MLM / PQVM on every video (003 §3.2).

    No labels and no real queries are read. ``config``: :class:`~mmal.models.hcmrm.RelevanceConfig`
    fields over the CPU-sized :data:`~mmal.learners.relevance.WORKSPACE_MODEL` (``None`` values
    dropped). Writes ``pretrain/<name>`` under a temporary name, renamed when complete.
    """
    import time

    from mmal.learners.relevance import WORKSPACE_MODEL
    from mmal.models.hcmrm import RelevanceConfig
    from mmal.models.hcmrm_pretrain import parse_objectives
    from mmal.train.hcmrm import pretrain_hcmrm
    from mmal.workspace import Workspace

    check_name(name)
    objs = parse_objectives(objectives)
    ws = Workspace(directory)
    out = ws.dir / "pretrain" / name
    if out.exists() and not force:
        raise WorkspaceError(f"{out} exists; pass --force to replace it")
    cfg = RelevanceConfig(arch=arch, **{**WORKSPACE_MODEL, **{k: v for k, v in config.items() if v is not None}}).check()
    t0 = time.perf_counter()
    data = ws.task.load_features(ws)
    res = pretrain_hcmrm(data, cfg, objectives=objs, train=None if epochs is None else {"epochs": int(epochs)}, seed=seed)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"format": HCMRM_PRETRAIN_FORMAT, "name": name, "task": ws.task.name, "objectives": list(res.objectives),
            "arch": arch, "seed": int(seed), "n_videos": len(data.video_ids), "config": res.model.cfg.to_dict(),
            "history": res.history, "samples_per_s": res.samples_per_s, "seconds": time.perf_counter() - t0}
    import torch

    torch.save({"model": res.model.state_dict()}, tmp / "model.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=float))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return meta


def load_hcmrm_pretrain(ws, name: str | None):
    """``((config dict, state_dict), name)`` of ``pretrain/<name>``, or ``(None, None)``.

    ``name="default"`` that does not exist gives ``(None, None)`` (train from scratch); any
    other missing name, or a store that is not an HCMRM pre-training, raises
    :class:`WorkspaceError` naming the folder.
    """
    import torch

    if name is None:
        return None, None
    folder = ws.dir / "pretrain" / check_name(name)
    meta_p = folder / "meta.json"
    if not meta_p.exists():
        if name == "default":
            return None, None
        raise WorkspaceError(f"{folder}: no pre-training; run `mmal pretrain {ws.dir} --name {name}` first")
    try:
        meta = json.loads(meta_p.read_text())
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable store is one line
        raise WorkspaceError(f"{folder}: unreadable pre-training ({type(e).__name__}: {e}); "
                             f"run `mmal pretrain {ws.dir} --name {name} --force`") from None
    if meta.get("format") != HCMRM_PRETRAIN_FORMAT:
        raise WorkspaceError(f"{folder}: not an HCMRM pre-training (format {meta.get('format')!r}); "
                             f"run `mmal pretrain {ws.dir} --name {name} --force`")
    return (meta["config"], state["model"]), name


#: ``mmal pretrain`` per :attr:`mmal.tasks.Task.pretraining`
PRETRAINERS = {"mmssl": pretrain_mmssl_workspace, "hcmrm": pretrain_hcmrm_workspace}


def pretrain_options(kind: str) -> set[str]:
    """Keyword options a pre-training of ``kind`` takes: its function's own and its config's fields."""
    import inspect

    from mmal.models.hcmrm import RelevanceConfig

    fn = PRETRAINERS[kind]
    config = {"mmssl": MMSSLConfig, "hcmrm": RelevanceConfig}[kind]
    own = {n for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.VAR_KEYWORD}
    return own | set(config.__dataclass_fields__)


def pretrain_workspace(directory, **kw) -> dict:
    """``mmal pretrain DIR``: the workspace task's pre-training (:data:`PRETRAINERS`)."""
    from mmal.workspace import Workspace

    return PRETRAINERS[Workspace(directory).task.pretraining](directory, **kw)


def pretraining_for(ws, learner: str, model: dict, pretrain: str | None):
    """``(loaded pre-training or None, its name or None)`` for a learner about to be trained.

    A learner that starts from a stored pre-training declares which kind
    (:attr:`mmal.learners.base.Learner.pretraining`): ``mmssl`` heads come from the folder its
    ``init_encoders`` setting names (:func:`load_mmssl_heads`); an ``hcmrm`` model from
    ``DIR/pretrain/<pretrain>`` (``"default"`` when it exists). ``pretrain`` for a learner that
    has no pre-training is refused unless it is the implicit ``"default"``.
    """
    from mmal.learners import LEARNERS

    kind = LEARNERS[learner].pretraining
    if kind == "mmssl" and model.get("init_encoders"):
        return load_mmssl_heads(model["init_encoders"]), str(model["init_encoders"])
    if kind == "hcmrm":
        return load_hcmrm_pretrain(ws, pretrain)
    if pretrain not in (None, "default"):
        raise ConfigError(f"--pretrain applies to learners that start from a pre-training (hcmrm), not {learner!r}")
    return None, None


def load_mmssl_heads(folder) -> dict:
    """The projection heads of a stored MMSSL pre-training.

    Returns ``{"heads": {m: {"0.weight", "0.bias", "2.weight", "2.bias"}}, "hidden": int,
    "dim": int, "input_dims": {m: int}, "folder": str}``; the state-dict keys are those of
    ``ProjectionHead.net`` (the ``net.`` prefix removed). A missing or damaged store raises
    :class:`ConfigError` naming the file.
    """
    import torch

    folder = Path(folder)
    meta_path, heads_path = folder / "meta.json", folder / "heads.pt"
    for p in (meta_path, heads_path):
        if not p.is_file():
            raise ConfigError(f"init_encoders: {p} not found; run `mmal pretrain DIR` and pass DIR/pretrain/<name>")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"init_encoders: {meta_path}: invalid JSON ({e})") from None
    if meta.get("format") != PRETRAIN_FORMAT:
        raise ConfigError(f"init_encoders: {meta_path}: format {meta.get('format')!r}, expected {PRETRAIN_FORMAT!r}")
    try:
        raw = torch.load(heads_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"init_encoders: {heads_path}: cannot be read ({type(e).__name__})") from None
    heads, shapes = {}, set()
    for m, sd in dict(raw).items():
        sd = {k[len("net."):] if k.startswith("net.") else k: v for k, v in dict(sd).items()}
        need = {"0.weight", "0.bias", "2.weight", "2.bias"}
        if set(sd) != need:
            raise ConfigError(f"init_encoders: {heads_path}: head '{m}' has keys {sorted(sd)}, expected {sorted(need)}")
        heads[m] = sd
        shapes.add((int(sd["0.weight"].shape[0]), int(sd["2.weight"].shape[0])))
    if len(shapes) != 1:
        raise ConfigError(f"init_encoders: {heads_path}: heads of different widths {sorted(shapes)}")
    hidden, dim = shapes.pop()
    return {"heads": heads, "hidden": hidden, "dim": dim,
            "input_dims": {m: int(sd["0.weight"].shape[1]) for m, sd in heads.items()}, "folder": str(folder)}
