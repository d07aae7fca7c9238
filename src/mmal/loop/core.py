"""Pieces of one active-learning round shared by the workspace commands and ``simulate``.

train -> score -> (select happens in :mod:`mmal.select`) -> reveal/import labels.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool

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
DEFAULT_VAL_FRACTION = {"late-fusion": 0.0, "linear": 0.0, "fusion": 0.2}


def build_learner(name: str | None, n_classes: int, *, model: dict | None = None, train: dict | None = None,
                  seed: int = 0):
    """A learner from the ``[model]`` / ``[train]`` settings (``None`` values are dropped).

    ``model`` holds the learner's own keys (``linear``: C, class_weight, center, heads;
    ``late-fusion``: :class:`~mmal.models.late_fusion.LateFusionConfig` fields and
    ``label_smoothing``; ``fusion``: :class:`~mmal.models.ModelConfig` fields); ``train``
    holds :class:`~mmal.train.TrainConfig` fields (torch learners). Unknown keys raise
    :class:`ConfigError` naming the learner and the allowed keys.
    """
    from mmal.learners import DEFAULT_LEARNER, make_learner

    name = name or DEFAULT_LEARNER
    model = {k: v for k, v in (model or {}).items() if v is not None and k != "learner"}
    train = {k: v for k, v in (train or {}).items() if v is not None and k not in ("seed", "val_fraction")}
    if name == "linear":
        if train:
            raise ConfigError(f"learner 'linear' is fitted by scikit-learn and takes no [train] settings; got {sorted(train)}")
        return make_learner(name, n_classes=n_classes, seed=seed, **model)
    params = {"model": model, "train": train}
    if name == "late-fusion":  # learner-level settings that live in [model] too
        for k in ("label_smoothing", "init", "probe_C", "head_scale_grid", "cv_folds", "init_encoders", "freeze_encoders"):
            if k in model:
                params[k] = model.pop(k)
    return make_learner(name, n_classes=n_classes, seed=seed, **params)


def train_model(features, labels, labeled_idx, n_classes, *, learner: str | None = None, model_overrides=None,
                train_overrides=None, val_fraction: float | None = None, seed: int = 0, progress: bool = False,
                log=None):
    """Fit a fresh learner on the labeled items; returns ``(learner, history)``.

    ``val_fraction`` (default per learner, :data:`DEFAULT_VAL_FRACTION`) of the labels is
    held out for early stopping; 0 trains on every label.
    """
    from mmal.learners import DEFAULT_LEARNER

    labeled_idx = np.asarray(labeled_idx, np.int64)
    if len(labeled_idx) == 0:
        raise ConfigError("no labeled items to train on: label some items first (mmal label)")
    name = learner or DEFAULT_LEARNER
    vf = DEFAULT_VAL_FRACTION.get(name, 0.0) if val_fraction is None else float(val_fraction)
    if not 0.0 <= vf < 1.0:
        raise ConfigError(f"val_fraction = {vf}: expected 0 <= val_fraction < 1")
    tr, va = split_train_val(labeled_idx, labels, vf, seed)
    model = build_learner(name, max(2, int(n_classes)), model=model_overrides, train=train_overrides, seed=seed)
    history = model.fit(features, labels, tr, va, progress=progress, log=log)
    return model, history


def score_pool(learner, features, ids, *, labels=None, split=None, coalitions: bool = False,
               mc_samples: int = 0, seed: int = 0, progress: bool = False) -> ScoredPool:
    """Score every item with a fitted learner and pack what strategies read into a :class:`ScoredPool`.

    ``extras`` holds ``penultimate`` (BADGE), ``probs:<m>`` (unimodal heads),
    ``coalition:<names>`` (BMMAL value function) and ``mc_probs`` [T, N, C] (BALD, when
    ``mc_samples > 0``); ``fused_blocks`` comes from the learner.
    """
    res = learner.score(features, coalitions=coalitions, progress=progress)
    extras = {"penultimate": res["penultimate"]}
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
    )


def mc_dropout_probs(model, features, T: int, seed: int) -> np.ndarray:
    """[T, N, C] fused probabilities with only the Dropout modules active (BALD)."""
    import torch

    from mmal.train import mc_dropout as mcd

    with mcd.mc_dropout(model):
        return mcd.mc_dropout_probs(lambda: torch.from_numpy(_predict_keep_mode(model, features)), T, seed)


def _predict_keep_mode(model, features):
    """Forward pass that does not reset the dropout modes set by ``mc_dropout``."""
    import torch

    from mmal.train.data import check_features, collate
    from mmal.train.loop import _token_limits

    n = check_features(features)
    limits = _token_limits(model.config)
    parts = []
    with torch.no_grad():
        for s in range(0, n, 256):
            batch = collate(features, np.arange(s, min(n, s + 256)), max_tokens=limits)
            parts.append(torch.softmax(model(batch)["logits"].float(), -1).numpy())
    return np.concatenate(parts, 0)


def aubc(n_labeled, accuracy) -> float:
    """Area under the accuracy-vs-labels curve, normalised by the label range -> [0, 1]."""
    x = np.asarray(n_labeled, float)
    y = np.asarray(accuracy, float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y[-1]) if len(y) else float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))
