"""fit / predict_proba / score over cached features."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmal.errors import ConfigError
from mmal.features.types import SequenceFeatures
from mmal.models import ModelConfig, MultimodalClassifier
from mmal.train.config import TrainConfig
from mmal.train.data import check_features, collate
from mmal.train.engine import as_index, check_labels, class_weights, seeded, torch_threads, train_epochs
from mmal.pool import coalition_key, coalition_subsets
from mmal.utils import progress_bar

Features = Mapping[str, SequenceFeatures]


def _token_limits(cfg: ModelConfig) -> dict[str, int | None]:
    return {m: cfg.token_limit(m) for m in cfg.modalities}


def _check_model_features(cfg: ModelConfig, features: Features) -> None:
    for m, d in cfg.input_dims.items():
        if m in features and features[m].dim != d:
            raise ConfigError(f"features['{m}'] has dimension {features[m].dim} but the model expects {d} (ModelConfig.input_dims)")
    extra = set(features) - set(cfg.input_dims)
    if extra:
        raise ConfigError(f"features has modalities {sorted(extra)} the model was not built for; model has {cfg.modalities}")


def _loss(out: dict, y: torch.Tensor, tc: TrainConfig, weight: torch.Tensor | None) -> torch.Tensor:
    """Fused CE, plus the uni-modal heads' CE per METHODS E (see ``TrainConfig.unimodal_weight``)."""
    ce = F.cross_entropy(out["logits"], y, weight=weight)
    uni = out.get("unimodal_logits") or {}
    if not uni:
        return ce
    terms = []
    for m, logit in uni.items():
        has = out["present"][m]  # [B] bool
        if has.any():
            terms.append(F.cross_entropy(logit[has], y[has], weight=weight))
        else:
            terms.append(logit.sum() * 0.0)  # keeps the graph; contributes nothing
    if tc.unimodal_weight is None:
        return (ce + sum(terms)) / (1 + len(uni))
    return ce + tc.unimodal_weight * sum(terms)


def fit(
    features: Features,
    labels: Sequence[int] | np.ndarray,
    train_idx: Sequence[int] | np.ndarray,
    val_idx: Sequence[int] | np.ndarray | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = True,
    log=None,
):
    """Train a :class:`MultimodalClassifier` (the ``fusion`` learner) on cached features.

    Parameters
    ----------
    features : ``{modality: SequenceFeatures}``, aligned to the same N items.
    labels : int array [N] over all items (entries outside ``train_idx``/``val_idx`` are
        ignored, e.g. -1 for unlabeled).
    train_idx, val_idx : item indices. Without ``val_idx`` (None or empty) every epoch runs
        and the last state is kept.
    model_config : built from ``features`` and ``max(labels)+1`` classes when ``None``.
    train_config : defaults of :class:`TrainConfig` when ``None``.
    progress : show a progress bar; ``log`` : optional per-epoch line callback.

    Returns
    -------
    model : the trained classifier in eval mode, with the best state (by
        ``train_config.monitor``) restored.
    history : see :func:`mmal.train.engine.train_epochs`.

    Notes
    -----
    The epoch loop, optimiser, class weights and early stopping are the shared
    :func:`mmal.train.engine.train_epochs`; weight init and dropout use
    ``torch.manual_seed(seed)`` inside a forked RNG state, so the caller's global RNG is
    untouched and the same seed gives identical weights.
    """
    tc = train_config or TrainConfig()
    if tc.finetune_towers:
        raise ConfigError(
            "TrainConfig.finetune_towers=True: fit() trains the fusion model on cached tower outputs and cannot "
            "update the towers; use mmal.train.finetune.fit_end_to_end(inputs, labels, train_idx, val_idx, "
            "encoders=...) with the raw inputs (or `mmal train DIR --finetune-towers`); slow on CPU, meant for GPU"
        )
    n = check_features(features)
    train_idx = as_index(train_idx, n, "train_idx")
    val_idx = as_index(val_idx, n, "val_idx") if val_idx is not None else np.zeros(0, np.int64)
    labels, k = check_labels(labels, train_idx, val_idx, n, None if model_config is None else model_config.n_classes)
    if model_config is None:
        model_config = ModelConfig.from_features(features, n_classes=k)
    _check_model_features(model_config, features)
    device = torch.device(tc.device)
    limits = _token_limits(model_config)
    weight = class_weights(labels[train_idx], model_config.n_classes, tc.class_weight)
    if weight is not None:
        weight = weight.to(device)
    y_all = torch.as_tensor(labels)
    with torch_threads(tc.threads), seeded(tc.seed):
        model = MultimodalClassifier(model_config).to(device)

        def batch_loss(bi):
            out = model(collate(features, bi, max_tokens=limits, device=device))
            return _loss(out, y_all[bi].to(device), tc, weight)

        def predict(vi):
            return predict_proba(model, features, vi, batch_size=max(256, tc.batch_size), progress=False)

        history = train_epochs({"model": model}, [{"params": list(model.parameters())}], train_idx, batch_loss, tc,
                               val_idx=val_idx, val_labels=labels[val_idx], predict=predict, weight=weight,
                               progress=progress, desc="train fusion", log=log)
    model.eval()
    return model, history


@torch.no_grad()
def score(
    model: MultimodalClassifier,
    features: Features,
    idx: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
    coalitions: bool | Sequence[Sequence[str]] = False,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Run the model over items and collect everything selection strategies need.

    Parameters
    ----------
    model : a trained classifier (put in eval mode for the call, mode restored after).
    features : ``{modality: SequenceFeatures}``; modalities the model has but ``features``
        lacks are treated as absent.
    idx : item indices (default: all).
    batch_size : items per forward pass.
    coalitions : ``True`` (all 2^M subsets, M <= 4) or a list of modality subsets. For each
        subset S, ``coalition_probs[key(S)]`` holds the fused probabilities with every
        modality NOT in S masked out at the input, exactly as if the items lacked it. This
        is the value function V(S) of BMMAL's Shapley weights (METHODS E): "zeroing" a
        modality feature = removing it from the model input, which is how the model was
        trained to see missing modalities (no train/test mismatch of a literal zero vector
        in a normalised input). Keys are '+'-joined sorted names ("" = no modality).
    progress : rich progress bar.
    device : defaults to the model's device.

    Returns
    -------
    dict of numpy arrays: ``probs [N, C]``, ``embedding [N, d]`` (= H_cls), ``penultimate
    [N, h]``, ``modality {m: [N, d_m]}``, ``present {m: [N] bool}``, ``unimodal_probs
    {m: [N, C]}`` (empty without uni-modal heads), and ``coalition_probs {key: [N, C]}``
    when ``coalitions`` is set.
    """
    cfg = model.config
    n = check_features(features)
    _check_model_features(cfg, features)
    idx = as_index(idx, n, "idx")
    dev = torch.device(device) if device else next(model.parameters()).device
    limits = _token_limits(cfg)
    subsets = coalition_subsets(cfg.modalities, coalitions) if coalitions else []
    was_training = model.training
    model.eval()
    acc: dict = {"probs": [], "embedding": [], "penultimate": [], "modality": {}, "present": {}, "unimodal_probs": {}}
    coal = {coalition_key(s): [] for s in subsets}
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task("score", total=len(idx))
            for s in range(0, len(idx), batch_size):
                bi = idx[s : s + batch_size]
                batch = collate(features, bi, max_tokens=limits, device=dev)
                out = model(batch)
                acc["probs"].append(torch.softmax(out["logits"].float(), -1).cpu().numpy())
                acc["embedding"].append(out["cls"].cpu().numpy())
                acc["penultimate"].append(out["penultimate"].cpu().numpy())
                for m, z in out["modality"].items():
                    acc["modality"].setdefault(m, []).append(z.cpu().numpy())
                    acc["present"].setdefault(m, []).append(out["present"][m].cpu().numpy())
                for m, lg in (out.get("unimodal_logits") or {}).items():
                    acc["unimodal_probs"].setdefault(m, []).append(torch.softmax(lg.float(), -1).cpu().numpy())
                for sub in subsets:
                    masked = {m: (x, mask & (m in sub)) for m, (x, mask) in batch.items()}
                    lg = model(masked)["logits"]
                    coal[coalition_key(sub)].append(torch.softmax(lg.float(), -1).cpu().numpy())
                bar.advance(task, len(bi))
    finally:
        model.train(was_training)

    def cat(parts, width):
        return np.concatenate(parts, 0) if parts else np.zeros((0, width), np.float32)

    C = cfg.n_classes
    res = {
        "probs": cat(acc["probs"], C),
        "embedding": cat(acc["embedding"], cfg.d_model),
        "penultimate": cat(acc["penultimate"], model.head.d_penultimate),
        "modality": {m: np.concatenate(v, 0) for m, v in acc["modality"].items()},
        "present": {m: np.concatenate(v, 0) for m, v in acc["present"].items()},
        "unimodal_probs": {m: np.concatenate(v, 0) for m, v in acc["unimodal_probs"].items()},
    }
    if subsets:
        res["coalition_probs"] = {k: cat(v, C) for k, v in coal.items()}
    return res


def predict_proba(
    model: MultimodalClassifier,
    features: Features,
    idx: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Fused-head class probabilities ``[N, C]`` of items ``idx`` (default all), eval mode."""
    return score(model, features, idx, batch_size=batch_size, progress=progress)["probs"]


def mc_dropout_probs(model: MultimodalClassifier, features: Features, T: int, seed: int) -> np.ndarray:
    """``[T, N, C]`` fused probabilities of the ``fusion`` model with only its dropout active (BALD)."""
    from mmal.train import mc_dropout as mcd

    with mcd.mc_dropout(model):
        return mcd.mc_dropout_probs(lambda: torch.from_numpy(_predict_keep_mode(model, features)), T, seed)


def _predict_keep_mode(model: MultimodalClassifier, features: Features) -> np.ndarray:
    """Forward pass that does not reset the dropout modes set by ``mc_dropout``."""
    n = check_features(features)
    limits = _token_limits(model.config)
    parts = []
    with torch.no_grad():
        for s in range(0, n, 256):
            batch = collate(features, np.arange(s, min(n, s + 256)), max_tokens=limits)
            parts.append(torch.softmax(model(batch)["logits"].float(), -1).numpy())
    return np.concatenate(parts, 0)
