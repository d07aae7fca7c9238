"""One active-learning round on a workspace, stage by stage (each a CLI command), for every task.

Round numbering: round 0 holds the labels of the items file; ``mmal select`` opens round
n+1 and its batch's labels are imported under round n+1; ``train``/``score``/``evaluate``
work on the current round = the highest round that has labels or a batch.

Every stage asks the workspace's task (:mod:`mmal.tasks`) what differs between tasks: the
inputs a learner fits on (:meth:`~mmal.tasks.Task.load_features`), which learners exist, the
metrics of ``evaluate`` and whether labels are ordered (LSB's bad cases). Nothing here
tests which task it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError, MmalError, StorageError, WorkspaceError
from mmal.loop.core import DEFAULT_VAL_FRACTION, build_learner, load_learner, score_pool, train_model
from mmal.workspace import Workspace
from mmal.workspace import state
from mmal.workspace.pool_io import load_pool


def current_round(ws: Workspace) -> int:
    """The highest round with labels or a batch (:func:`mmal.workspace.state.current_round`)."""
    return state.current_round(ws)


def workspace_arrays(ws: Workspace):
    """``(ids [N], split [N], current labels [N] with -1 = unlabeled)`` in items order."""
    t = ws.items
    ids = np.asarray(t.column("id").to_pylist())
    split = np.asarray(t.column("split").to_pylist())
    cur = ws.current_labels()
    labels = np.array([cur.get(i, -1) for i in ids.tolist()], np.int64)
    return ids, split, labels


_arrays = workspace_arrays


def workspace_info(directory) -> dict:
    """``mmal info``: counts, class names, modalities and the feature cache's status."""
    ws = Workspace(directory)
    t = ws.items
    labels = ws.current_labels()
    names_ = ws.class_names()
    names = t.column_names
    mod_counts = {}
    for m in ws.modalities:
        cols = ["image", "video"] if m == "image" else [m]
        have = None
        for c in cols:
            if c in names:
                col = [v not in (None, "") for v in t.column(c).to_pylist()]
                have = col if have is None else [a or b for a, b in zip(have, col)]
        mod_counts[m] = int(sum(have or []))
    from mmal.features.cache import FeatureCache, features_status
    from mmal.features.pipeline import encoder_params, workspace_encoders

    cache = FeatureCache(ws.features_dir)
    specs = workspace_encoders(ws)
    return {
        "dir": str(ws.dir),
        "task": ws.task.name,
        "n_classes": ws.n_classes,
        "counts": ws.counts(),
        "labels_per_class": {names_[k] if k < len(names_) else str(k): v
                             for k, v in sorted(Counter(labels.values()).items())},
        "modality_counts": mod_counts,
        "features": features_status(cache, t, specs, {m: encoder_params(ws, m) for m in specs}),
    }


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
    n_frames = int(ws.setting("encode", "n_frames"))
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
    """``mmal train --finetune-towers``: fit the ``fusion`` classifier and the towers from the raw items."""
    from dataclasses import replace

    from mmal.errors import ConfigError
    from mmal.learners import FusionLearner
    from mmal.models import ModelConfig
    from mmal.train import TrainConfig
    from mmal.loop.core import split_train_val
    from mmal.train.finetune import fit_end_to_end, towers_state

    if len(labeled) == 0:
        raise ConfigError("no labeled items to train on: label some items first (mmal label)")
    encs, params = _workspace_encoders(ws)
    inputs = _workspace_inputs(ws, list(encs))
    from mmal.models.config import ModelConfig as _MC

    mo = {k: v for k, v in model_cfg.items() if k in _MC.__dataclass_fields__ and v is not None}
    if "audio" not in encs:
        mo["fusion"] = "none"
    mc = ModelConfig(input_dims={m: e.dim for m, e in encs.items()}, n_classes=max(2, n_classes), **mo)
    to = {k: v for k, v in tcfg.items() if k in TrainConfig.__dataclass_fields__}
    tc = replace(TrainConfig.from_dict({**to, "seed": seed}), finetune_towers=True)
    vf = tcfg.get("val_fraction")
    tr, va = split_train_val(labeled, labels, DEFAULT_VAL_FRACTION["fusion"] if vf is None else float(vf), seed)
    model, towers, history = fit_end_to_end(
        inputs, labels, tr, va, encoders=encs, model_config=mc, train_config=tc,
        tower_lr=float(ws.setting("train", "tower_lr")), tower_mode=str(ws.setting("train", "tower_mode")), progress=progress)
    learner = FusionLearner(n_classes=mc.n_classes, seed=seed, model=mo, train=to)
    learner.net = model
    return learner, history, towers_state(towers, encs, params)


#: [train] keys that are not TrainConfig fields (read by the workspace round itself)
ROUND_TRAIN_KEYS = ("val_fraction", "seed", "tower_lr", "tower_mode", "finetune_towers")


def train_workspace(directory, *, learner: str | None = None, model: dict | None = None, train: dict | None = None,
                    seed: int | None = None, finetune_towers: bool | None = None, pretrain: str | None = "default",
                    progress: bool = True, log=None) -> dict:
    """Train the round's learner on the labeled non-test items; checkpoint in ``rounds/<n>/model.pt``.

    ``learner``: a learner of the task (default ``[model] learner``, else the task's default);
    ``model`` / ``train``: ``[model]`` / ``[train]`` settings that override ``mmal.toml`` for this
    run (``None`` values are dropped); ``seed``: default
    ``[train] seed``. ``pretrain``: the stored pre-training ``DIR/pretrain/<name>`` a learner
    that can start from one (``hcmrm``) begins from (``"default"``: when it exists; ``None``:
    never). ``finetune_towers`` (or ``[train] finetune_towers = true``) trains the ``fusion``
    learner and the encoder towers end to end from the raw items and saves the towers next to
    the checkpoint (``rounds/<n>/towers.pt``); slow on CPU.
    """
    from mmal.learners import LEARNERS
    from mmal.loop.pretrain import pretraining_for
    from mmal.train.checkpoint import save_learner, write_payload
    from mmal.train.config import check_device

    ws = Workspace(directory)
    task = ws.task
    ids, split, labels = workspace_arrays(ws)
    model_cfg = {**dict(ws.config.get("model", {})), **{k: v for k, v in (model or {}).items() if v is not None}}
    name = task.check_learner(learner or model_cfg.get("learner"))
    file_train = dict(ws.config.get("train", {}))
    if LEARNERS[name].train_defaults is None:  # not trained by the torch loop: mmal.toml's [train] is not for it
        ignored = sorted(k for k in file_train if k not in ROUND_TRAIN_KEYS)
        if ignored and log is not None:
            log(f"learner '{name}' is not trained by the torch loop; mmal.toml [train] {', '.join(ignored)} ignored")
        file_train = {k: v for k, v in file_train.items() if k in ROUND_TRAIN_KEYS}
    tcfg = {**file_train, **{k: v for k, v in (train or {}).items() if v is not None}}
    if LEARNERS[name].train_defaults is not None and "device" in file_train:
        check_device(file_train["device"], where=f"{ws.dir / 'mmal.toml'}: [train] device = {file_train['device']!r}")
    seed = int(ws.setting("train", "seed") if seed is None else seed)
    finetune = bool(ws.setting("train", "finetune_towers") if finetune_towers is None else finetune_towers)
    labeled = np.flatnonzero((labels >= 0) & (split != "test"))
    if len(labeled) == 0:
        raise ConfigError(f"{ws.dir}: no labeled non-test items to train on; import labels with "
                          f"`mmal label {ws.dir} FILE` first")
    n_classes = max(ws.n_classes, int(labels.max()) + 1 if labels.max() >= 0 else 0)
    rnd = current_round(ws)
    rdir = ws.round_dir(rnd)
    extra = {"round": rnd, "n_labeled": int(len(labeled)), "learner": name, "task": task.name}
    if finetune:
        if name != "fusion":
            raise ConfigError(f"--finetune-towers trains the towers with the 'fusion' learner; got learner '{name}' "
                              "(use `mmal train DIR --learner fusion --finetune-towers`)")
        fitted, history, tstate = _train_end_to_end(ws, labels, labeled, n_classes, model_cfg, tcfg, seed, progress)
        write_payload(rdir / TOWERS_FILE, {"format": TOWERS_FORMAT, "towers": tstate})
        extra.update(finetune_towers=True, towers_file=TOWERS_FILE)
    else:
        train = {k: v for k, v in tcfg.items() if k not in ROUND_TRAIN_KEYS}
        build_learner(name, max(2, n_classes), model=model_cfg, train=train, seed=seed)  # bad settings fail before any I/O
        features = task.load_features(ws, progress=progress)
        vf = tcfg.get("val_fraction")
        pre, pre_name = pretraining_for(ws, name, model_cfg, pretrain)
        fitted, history = train_model(features, labels, labeled, n_classes, learner=name, model_overrides=model_cfg,
                                      train_overrides=train, val_fraction=None if vf is None else float(vf),
                                      seed=seed, pretrained=pre, progress=progress, log=log)
        extra["pretrain"] = pre_name
        (rdir / TOWERS_FILE).unlink(missing_ok=True)  # a stale tuned tower must not be used by `score`
    path = rdir / "model.pt"
    save_learner(path, fitted, extra=extra)
    from mmal.utils import atomic_write_bytes

    atomic_write_bytes(rdir / "history.json", json.dumps(history, indent=1, default=float).encode())
    invalidated = _invalidate_derived(rdir)
    warn = unlabeled_batch_warning(ws)
    return {"round": rnd, "model": str(path), "task": task.name, "learner": name, "n_labeled": int(len(labeled)),
            "best_epoch": history.get("best_epoch"), "seconds": round(float(history.get("seconds", float("nan"))), 2),
            "pretrain": extra.get("pretrain"), "finetune_towers": finetune, "invalidated": invalidated,
            "warnings": [warn] if warn else []}


def unlabeled_batch_warning(ws: Workspace) -> str | None:
    """A warning line when more than half of the latest batch is still unlabeled (the model
    then learns from far fewer labels than were selected), else None."""
    b = state.latest_batch(ws)
    if b is None:
        return None
    items = [r[0] for r in state.batch_items(ws, b.batch_id)]
    have = ws.current_labels()
    missing = [k for k in items if k not in have]
    if not items or 2 * len(missing) <= len(items):
        return None
    return (f"{len(missing)} of the {len(items)} items of the last batch (batch {b.batch_id}, round {b.round}) are "
            f"still unlabeled; this model learned without them. Import their labels (`mmal label {ws.dir} FILE`) "
            f"and train again")


def _invalidate_derived(rdir) -> list[str]:
    """A new model makes the round's scored pool and metrics stale: remove them (and a
    STALE.json left by new classes), so `select`/`evaluate` ask for `mmal score` instead of
    silently reading the old model's outputs. Returns what was removed."""
    import shutil

    gone = []
    for name in ("pool", "metrics.json", "STALE.json"):
        p = rdir / name
        if p.is_dir():
            tmp = p.with_name(f".{name}.stale")
            shutil.rmtree(tmp, ignore_errors=True)
            os.replace(p, tmp)  # atomic: the pool disappears whole, then is deleted
            shutil.rmtree(tmp, ignore_errors=True)
            gone.append(name)
        elif p.exists():
            p.unlink()
            gone.append(name)
    return gone


def load_round_model(ws: Workspace):
    """``(round, fitted learner, checkpoint extra)`` of the current round; WorkspaceError when absent."""
    rnd = current_round(ws)
    path = ws.round_dir(rnd) / "model.pt"
    if not path.exists():
        raise WorkspaceError(f"no model for round {rnd} ({path}); run `mmal train {ws.dir}` first")
    model, extra = load_learner(path, f"run `mmal train {ws.dir}` again")
    return rnd, model, extra


_load_round_model = load_round_model


def _tuned_features(ws: Workspace, rnd: int, extra: dict, ids, progress: bool) -> dict:
    """Features re-encoded with the round's fine-tuned towers (``towers.pt``)."""
    from mmal.train.checkpoint import read_payload
    from mmal.train.finetune import encode_with_towers, load_towers

    path = ws.round_dir(rnd) / extra["towers_file"]
    payload = read_payload(path, TOWERS_FORMAT, "towers file", f"run `mmal train {ws.dir} --learner fusion --finetune-towers` again")
    encs, towers = load_towers(payload["towers"])
    inputs = _workspace_inputs(ws, list(encs))
    return encode_with_towers(inputs, encs, towers, ids=ids, progress=progress)


def score_workspace(directory, *, coalitions=False, mc_samples=0, progress=True) -> dict:
    """Score every item with the round's model (re-encoding with its tuned towers when it has them)."""
    ws = Workspace(directory)
    rnd, model, extra = load_round_model(ws)
    ids, split, labels = workspace_arrays(ws)
    if extra.get("towers_file"):
        features = _tuned_features(ws, rnd, extra, ids, progress)
    else:
        features = ws.task.load_features(ws, progress=progress)
    pool = score_pool(model, features, ids, labels=labels, split=split, coalitions=coalitions,
                      mc_samples=mc_samples, progress=progress, ordered=ws.task.ordered)
    if not np.isfinite(np.asarray(pool.probs)).all():
        raise ConfigError(f"the round's '{model.name}' model gives a score but no class distribution (its head: "
                          f"{model.params.get('head')!r}), so it cannot make a pool for selection; train with a head "
                          "that gives one (hsoftmax or ordinal)")
    at_sel = at_selection_probs(ws, ids, labels, pool.n_classes)
    if at_sel is not None:
        from mmal.select.lsb import AT_SELECTION

        pool.extras[AT_SELECTION] = at_sel
    from mmal.workspace.pool_io import replace_pool

    folder = replace_pool(pool, ws.round_dir(rnd) / "pool")
    return {"round": rnd, "pool": str(folder), "n": len(pool), "task": ws.task.name, "learner": model.name,
            "tuned_towers": bool(extra.get("towers_file"))}


def at_selection_probs(ws: Workspace, ids: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray | None:
    """Each labeled item's probabilities when it was selected: ``[N, C]``, NaN where unknown.

    An item batched in round ``k`` was picked from round ``k - 1``'s scored pool; its row
    there is what the model predicted before anyone labeled it, the out-of-sample view LSB's
    seed bad cases need (:mod:`mmal.select.lsb`, ``seeds_from``). Items never batched (an
    imported labeled set) and rounds whose pool is gone stay NaN. ``None`` when no labeled
    item has such a row.
    """
    by_round = state.batched_items(ws)
    pos = {k: i for i, k in enumerate(ids.tolist())}
    out = None
    for rnd in sorted(by_round):
        folder = ws.round_dir(rnd - 1) / "pool"
        if rnd < 1 or not (folder / "ids.parquet").exists():
            continue
        try:
            old = load_pool(folder)
        except MmalError:  # an unreadable old pool only loses this optional view
            continue
        if old.probs.shape[1] != n_classes:  # classes were added since: those predictions do not compare
            continue
        where = {k: i for i, k in enumerate(old.ids.tolist())}
        items = [k for k in by_round[rnd] if k in where and k in pos and labels[pos[k]] >= 0]
        if not items:
            continue
        if out is None:
            out = np.full((len(ids), n_classes), np.nan, np.float32)
        out[[pos[k] for k in items]] = np.asarray(old.probs)[[where[k] for k in items]]
    return out


def _round_pool(ws: Workspace, hint: str):
    """(round, pool folder, ScoredPool) of the current round; WorkspaceError with ``hint`` if not scored."""
    rnd = current_round(ws)
    folder = ws.round_dir(rnd) / "pool"
    if not (folder / "ids.parquet").exists():
        raise WorkspaceError(f"no scored pool for round {rnd}; {hint}")
    return rnd, folder, load_pool(folder)


def test_metrics(ws: Workspace, pool, labels: np.ndarray, test: np.ndarray) -> dict:
    """The task's metrics (:meth:`mmal.tasks.Task.metrics`) of a scored pool's ``test`` rows."""
    from mmal.loop.core import SCORE_EXTRA

    task = ws.task
    groups = task.groups(ws.items)
    score = pool.extras.get(SCORE_EXTRA)
    return task.metrics(labels[test], np.asarray(pool.probs)[test],
                        scores=None if score is None else np.asarray(score)[test],
                        groups=None if groups is None else groups[test], names=ws.class_names(pool.n_classes))


def evaluate_workspace(directory) -> dict:
    """``mmal evaluate``: the task's test metrics of the round's scored pool -> ``rounds/<n>/metrics.json``."""
    ws = Workspace(directory)
    rnd, folder, pool = _round_pool(ws, f"run `mmal score {ws.dir}` first")
    ids, split, labels = workspace_arrays(ws)
    test = np.flatnonzero((split == "test") & (labels >= 0))
    if len(test) == 0:
        raise WorkspaceError(f"{ws.dir}: no labeled test items (split == 'test') to evaluate on")
    met = test_metrics(ws, pool, labels, test)
    out = {"round": rnd, "task": ws.task.name, "headline": ws.task.headline, "n_test": int(len(test)), **met}
    from mmal.utils import atomic_write_bytes

    atomic_write_bytes(ws.round_dir(rnd) / "metrics.json", json.dumps(out, indent=1, default=_json_num).encode())
    return out


def _json_num(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def _select_base(ws: Workspace, append: bool, pool=None):
    """(pool round, target round, pool folder, ScoredPool) for ``select``.

    The target round is the pool's round + 1. A scored pool of the current round opens the
    next round. When the current round is already open (it has a batch, selected from
    the previous round's pool) and has no pool of its own, a further select goes into the
    same round only with ``append`` (several batches per round); otherwise it is refused,
    so that two selects started together never give two batches for one round.
    """
    from mmal.workspace.pool_io import load_pool

    rnd = current_round(ws)
    if pool is not None:  # a cold-start pool built from the features (no model yet)
        return rnd, rnd + 1, ws.dir / "features", pool
    folder = ws.round_dir(rnd) / "pool"
    if (folder / "ids.parquet").exists():
        base = rnd
    else:
        open_batches = len(state.batches(ws, rnd))
        prev = ws.round_dir(rnd - 1) / "pool"
        if not (open_batches and rnd >= 1 and (prev / "ids.parquet").exists()):
            raise WorkspaceError(f"no scored pool for round {rnd}; run `mmal train {ws.dir}` and `mmal score {ws.dir}` first")
        base, folder = rnd - 1, prev
    return base, base + 1, folder, load_pool(folder)


def select_workspace(directory, spec: str, budget: int, *, seed: int = 0, params: dict | None = None,
                     dry_run: bool = False, append: bool = False, lock_timeout: float | None = None,
                     pool=None, select_fn=None) -> dict:
    """Select the next batch and record it with its exports, as one unit.

    ``select_fn`` (default :func:`mmal.select.select`, same signature) lets the Ray engine
    run the pool-sized part distributed (:mod:`mmal.engine`).

    ``pool`` replaces the round's scored pool (cold start: :func:`mmal.loop.pretrain.cold_select_workspace`).

    Under the workspace lock (:mod:`mmal.workspace.lock`): the batch rows are inserted in a
    SQLite transaction, the exports are written (each file via temp + rename), and only
    then the transaction commits. A failure or ``kill -9`` before the commit leaves no
    batch (at most export files of a batch id that does not exist; the next select
    reuses that id and overwrites them). ``rounds/<n>/selection.parquet`` is written
    after the commit (derived; ``export_round`` rewrites it).

    Excluded from selection: labeled items, test-split items, and items already in any
    batch (sent to annotators: labeled, or awaiting their label), so that no item is sent
    twice and each label belongs to exactly one batch. A round that already has a batch takes another one only with
    ``append=True``. ``dry_run=True`` returns the selection and records and writes
    nothing. A budget above the selectable count selects them all and says so
    (``shortfall``, ``warnings``).
    """
    from mmal.workspace.annotate import export_batch, remove_orphan_exports
    from mmal.workspace.lock import workspace_lock

    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or int(budget) < 1:
        raise ConfigError(f"--budget must be a positive integer, got {budget!r}")
    budget = int(budget)
    ws = Workspace(directory)
    if dry_run:
        return _select_compute(ws, spec, budget, seed, params, append=True, dry_run=True, pool=pool, select_fn=select_fn)[0]
    with workspace_lock(ws.dir, f"select --strategy {spec} --budget {budget}", timeout=lock_timeout):
        remove_orphan_exports(ws)
        out, sel, target = _select_compute(ws, spec, budget, seed, params, append=append, dry_run=False, pool=pool,
                                                   select_fn=select_fn)
        paths, pending = {}, []

        def write_exports(con, batch_id):  # inside the batch's transaction: no batch without its files
            pending.append(batch_id)
            paths.update(export_batch(ws, batch_id, con=con))

        try:
            batch_id = state.record_batch(ws, sel, budget=budget, round_=target, info={"spec": spec, **(sel.info or {})},
                                          before_commit=write_exports)
        except BaseException:
            # not committed (a full disk at COMMIT, an interrupt): no export files of a batch that does not
            # exist (where the database cannot tell, the next select removes them: remove_orphan_exports)
            with contextlib.suppress(Exception):
                if pending and pending[0] not in state.batch_ids(ws):
                    for p in paths.values():
                        Path(p).unlink(missing_ok=True)
            raise
        try:
            _write_round_selection(ws, target)
        except StorageError as e:  # derived data after the commit: the batch and its exports stand
            (ws.round_dir(target) / "selection.parquet").unlink(missing_ok=True)  # never a stale copy
            out["warnings"].append(f"batch {batch_id} is recorded with its exports, but {e} (rounds/{target}/"
                                   "selection.parquet is derived from the database and is written again by the "
                                   "next select)")
    from mmal.workspace.annotate import predictions_info

    out.update(batch=batch_id, exports={k: str(v) for k, v in paths.items()}, **predictions_info(ws))
    return out


def _write_round_selection(ws: Workspace, round_: int) -> None:
    """``rounds/<n>/selection.parquet``: every batch item of the round (derived from the DB)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = state.round_batch_items(ws, round_)
    t = pa.table({"id": [r[0] for r in rows], "strategy": [r[1] for r in rows],
                  "score": pa.array([r[2] for r in rows], pa.float64()), "reason": [r[3] for r in rows],
                  "batch": [r[4] for r in rows], "round": [round_] * len(rows)})
    from mmal.utils import atomic_output

    with atomic_output(ws.round_dir(round_) / "selection.parquet") as tmp:
        pq.write_table(t, tmp)


def _select_compute(ws: Workspace, spec, budget, seed, params, *, append: bool, dry_run: bool, pool=None,
                    select_fn=None):
    from mmal.select import select

    base, target, folder, pool = _select_base(ws, append, pool)
    ids, split, labels = workspace_arrays(ws)
    if pool.ids.tolist() != ids.tolist():
        raise WorkspaceError(f"{folder} was scored for a different item set; run `mmal score {ws.dir}` again")
    in_batches = {k for items in state.batched_items(ws).values() for k in items}
    n_batches = len(state.batches(ws, target))
    if n_batches and not append:
        raise WorkspaceError(f"round {target} already has {n_batches} batch(es); label them, then `mmal train` and "
                             f"`mmal score` for the next round, or pass `--append` to add another batch to round {target}")
    pool.labels = labels
    pool.split = split  # the workspace's split, also for a pool saved without one: test labels never seed LSB
    excluded = (labels >= 0) | (split == "test") | np.isin(ids, list(in_batches))
    n_selectable = int((~excluded).sum())
    if n_selectable == 0:
        raise WorkspaceError(f"{ws.dir}: nothing left to select for round {target} (every non-test item is labeled or "
                             f"already in a batch)")
    take = min(budget, n_selectable)
    sel = (select_fn or select)(spec, pool, take, labeled_mask=excluded, seed=seed, **(params or {}))
    sel.round = target
    warnings = []
    if take < budget:
        warnings.append(f"budget {budget} is larger than the {n_selectable} selectable items; selected {len(sel)}")
    warnings += [w for w in (sel.info or {}).get("warnings") or [] if w not in warnings]  # short, refilled, reduced
    out = {"round": target, "scored_round": base, "n_selected": len(sel), "budget": budget, "n_selectable": n_selectable,
           "shortfall": budget - len(sel), "warnings": warnings, "dry_run": dry_run, "info": sel.info}
    if dry_run:
        out["ids"] = sel.ids.tolist()
        out["strategy"] = [str(s) for s in sel.strategy]
        out["score"] = [None if s != s else float(s) for s in sel.score]
    return out, sel, target
