"""Pieces of one active-learning round shared by the workspace commands and ``simulate``.

train -> score -> (select happens in :mod:`mmal.select`) -> reveal/import labels.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool

#: ``ScoredPool.extras`` key of a learner's own per-item score (relevance: r, 003 eq. 9)
SCORE_EXTRA = "score"

def split_train_val(labeled_idx: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int):
    """Deterministic stratified-ish split of the labeled items into train / validation.

    Each class keeps at least one training item; classes with >= 3 items give
    ``round(val_fraction * n_c)`` (at least 1) to validation. ``val_fraction = 0`` -> no
    validation (every label trains; no early stopping).
    """
    labeled_idx = np.asarray(labeled_idx, np.int64)
    if val_fraction <= 0 or len(labeled_idx) < 4:
        return labeled_idx, np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels[labeled_idx]):
        rows = labeled_idx[labels[labeled_idx] == c]
        rows = rows[rng.permutation(len(rows))]
        k = int(round(val_fraction * len(rows))) if len(rows) >= 3 else 0
        k = max(1, k) if len(rows) >= 3 else 0
        val.extend(rows[:k].tolist())
        train.extend(rows[k:].tolist())
    return np.sort(np.array(train, np.int64)), np.sort(np.array(val, np.int64))


#: labeled share held out for early stopping, per learner (only ``fusion`` early-stops by default)
DEFAULT_VAL_FRACTION = {"fusion": 0.2}


def build_learner(name: str, n_classes: int, *, model: dict | None = None, train: dict | None = None,
                  seed: int = 0, log=None):
    """A learner from the ``[model]`` / ``[train]`` settings (``None`` values are dropped).

    ``model`` holds flat ``[model]`` keys, ``train`` :class:`~mmal.train.TrainConfig` fields;
    each learner takes what it reads (:meth:`mmal.learners.base.Learner.from_settings`).
    ``[model]`` keys that only other learners read are reported through ``log`` and left out;
    a key no learner reads was refused when ``mmal.toml`` was opened.
    """
    from mmal.learners import LEARNERS
    from mmal.errors import ConfigError

    if name not in LEARNERS:
        raise ConfigError(f"unknown learner '{name}'; choose one of {', '.join(LEARNERS)}")
    model = {k: v for k, v in (model or {}).items() if v is not None and k != "learner"}
    train = {k: v for k, v in (train or {}).items() if v is not None and k not in ("seed", "val_fraction")}
    learner, ignored = LEARNERS[name].from_settings(n_classes=n_classes, seed=seed, model=model, train=train)
    if ignored and log is not None:
        log(f"learner '{name}' does not read [model] {', '.join(ignored)} (settings of other learners); ignored")
    return learner


def train_model(features, labels, labeled_idx, n_classes, *, learner: str, model_overrides=None,
                train_overrides=None, val_fraction: float | None = None, seed: int = 0, pretrained=None,
                progress: bool = False, log=None):
    """Fit a fresh learner on the labeled items; returns ``(learner, history)``.

    ``val_fraction`` (default per learner, :data:`DEFAULT_VAL_FRACTION`) of the labels is
    held out for early stopping; 0 trains on every label. ``pretrained`` (a loaded
    pre-training, :mod:`mmal.loop.pretrain`) is handed to a learner that can start from one.
    """
    labeled_idx = np.asarray(labeled_idx, np.int64)
    if len(labeled_idx) == 0:
        raise ConfigError("no labeled items to train on: label some items first (mmal label)")
    vf = DEFAULT_VAL_FRACTION.get(learner, 0.0) if val_fraction is None else float(val_fraction)
    if not 0.0 <= vf < 1.0:
        raise ConfigError(f"val_fraction = {vf}: expected 0 <= val_fraction < 1")
    tr, va = split_train_val(labeled_idx, labels, vf, seed)
    model = build_learner(learner, max(2, int(n_classes)), model=model_overrides, train=train_overrides, seed=seed, log=log)
    if pretrained is not None:
        model.init_from_pretraining(pretrained)
    history = model.fit(features, labels, tr, va, progress=progress, log=log)
    return model, history


def load_learner(path, fix: str = "run `mmal train` again"):
    """Read a learner checkpoint (:func:`mmal.train.checkpoint.save_learner`); returns ``(learner, extra)``.

    Raises :class:`~mmal.errors.WorkspaceError` naming the file when it is missing, unreadable,
    not a learner checkpoint or does not match the code.
    """
    from mmal.errors import WorkspaceError
    from mmal.learners import make_learner
    from mmal.train.checkpoint import read_learner

    payload = read_learner(path, fix)
    try:
        learner = make_learner(payload["learner"], **dict(payload["config"]))
        learner.load_state(payload["state"])
    except (ConfigError, RuntimeError, KeyError, TypeError) as e:
        raise WorkspaceError(f"{path}: checkpoint does not match the model code ({e}); {fix}") from None
    return learner, payload.get("extra", {})


def score_pool(learner, features, ids, *, labels=None, split=None, coalitions: bool = False,
               mc_samples: int = 0, seed: int = 0, ordered: bool = False, progress: bool = False) -> ScoredPool:
    """Score every item with a fitted learner and pack what strategies read into a :class:`ScoredPool`.

    ``extras`` holds ``penultimate`` (BADGE), ``probs:<m>`` (unimodal heads),
    ``coalition:<names>`` (BMMAL value function), ``mc_probs`` [T, N, C] (BALD, when
    ``mc_samples > 0``) and ``score`` [N] (a learner's own score, e.g. the relevance score
    r, 003 eq. 9); ``fused_blocks`` comes from the learner, ``ordered`` from the task.
    """
    res = learner.score(features, coalitions=coalitions, progress=progress)
    extras = {"penultimate": res["penultimate"]}
    if res.get("scores") is not None:
        extras[SCORE_EXTRA] = np.asarray(res["scores"], np.float64)
    for m, p in res["unimodal_probs"].items():
        extras[f"probs:{m}"] = p
    for k, p in (res.get("coalition_probs") or {}).items():
        extras[f"coalition:{k}"] = p
    if mc_samples:
        extras["mc_probs"] = learner.mc_probs(features, mc_samples, seed)
    return ScoredPool(
        ids=np.asarray(ids),
        probs=res["probs"],
        embedding=res["embedding"],
        modality=res["modality"],
        labels=None if labels is None else np.asarray(labels),
        split=split,
        extras=extras,
        fused_blocks=learner.fused_blocks,
        ordered=ordered,
    )


def aubc(n_labeled, values) -> float:
    """Area under a metric-vs-labels curve (trapezoids), normalised by the label range.

    The metric is the task's (:meth:`mmal.tasks.Task.curve_value`); a NaN point makes the
    area NaN.
    """
    x = np.asarray(n_labeled, float)
    y = np.asarray(values, float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y[-1]) if len(y) else float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))
