"""Pieces of one active-learning round shared by the workspace commands and ``simulate``.

train -> score -> (select happens in :mod:`mmal.select`) -> reveal/import labels.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool

MODEL_KEYS = ("fusion", "heads", "d_model", "n_layers", "n_heads", "dropout", "mlp_hidden", "mlp_layers", "d_attn")
TRAIN_KEYS = ("lr", "epochs", "batch_size", "weight_decay", "patience", "monitor", "class_weight", "grad_clip")


def split_train_val(labeled_idx: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int):
    """Deterministic stratified-ish split of the labeled items into train / validation.

    Each class keeps at least one training item; classes with >= 3 items give
    ``round(val_fraction * n_c)`` (at least 1) to validation. ``val_fraction = 0`` -> no
    validation (early stopping off).
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


def build_configs(features, n_classes: int, model_overrides: dict | None, train_overrides: dict | None, seed: int):
    from mmal.models import ModelConfig
    from mmal.train import TrainConfig

    mo = {k: v for k, v in (model_overrides or {}).items() if k in MODEL_KEYS and v is not None}
    to = {k: v for k, v in (train_overrides or {}).items() if k in TRAIN_KEYS and v is not None}
    if "audio" not in features and mo.get("fusion", "none") != "none":
        mo["fusion"] = "none"  # nothing to fuse: a text/image-only dataset
    mc = ModelConfig.from_features(features, n_classes=max(2, int(n_classes)), **mo)
    tc = TrainConfig(seed=int(seed), **to)
    return mc, tc


def train_model(features, labels, labeled_idx, n_classes, *, model_overrides=None, train_overrides=None,
                val_fraction: float = 0.2, seed: int = 0, progress: bool = False):
    """Fit a fresh model on the labeled items (a validation part held out for early stopping)."""
    from mmal.train import fit

    labeled_idx = np.asarray(labeled_idx, np.int64)
    if len(labeled_idx) == 0:
        raise ConfigError("no labeled items to train on: label some items first (mmal label)")
    tr, va = split_train_val(labeled_idx, labels, val_fraction, seed)
    mc, tc = build_configs(features, n_classes, model_overrides, train_overrides, seed)
    model, history = fit(features, labels, tr, va, mc, tc, progress=progress)
    return model, history, mc, tc


def score_pool(model, features, ids, *, labels=None, split=None, coalitions: bool = False,
               mc_samples: int = 0, seed: int = 0, progress: bool = False) -> ScoredPool:
    """Score every item and pack what strategies read into a :class:`ScoredPool`.

    ``extras`` holds ``penultimate`` (BADGE), ``probs:<m>`` (unimodal heads),
    ``coalition:<names>`` (BMMAL value function) and ``mc_probs`` [T, N, C] (BALD, when
    ``mc_samples > 0``).
    """
    from mmal.train import score

    res = score(model, features, coalitions=coalitions, progress=progress)
    extras = {"penultimate": res["penultimate"]}
    for m, p in res["unimodal_probs"].items():
        extras[f"probs:{m}"] = p
    for k, p in (res.get("coalition_probs") or {}).items():
        extras[f"coalition:{k}"] = p
    if mc_samples:
        extras["mc_probs"] = mc_dropout_probs(model, features, mc_samples, seed)
    return ScoredPool(
        ids=np.asarray(ids),
        probs=res["probs"],
        embedding=res["embedding"],
        modality=res["modality"],
        labels=None if labels is None else np.asarray(labels),
        split=split,
        extras=extras,
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
