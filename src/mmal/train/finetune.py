"""End-to-end fine-tuning: the fusion classifier AND the encoder towers, from raw inputs.

:func:`mmal.train.fit` trains on cached tower outputs (frozen towers). Here every
training batch runs the towers (deep copies of the encoders' PyTorch modules) with
autograd, so their weights are updated together with the classifier. This is slow on CPU (see docs/models.md, "Fine-tuning
the towers") and meant for GPU machines (``TrainConfig.device = "cuda"``).

Inputs are raw, per modality and item: ``inputs = {modality: [x_0, ..., x_{N-1}]}`` where
``x_i`` is what the encoder eats (text ``str``; image path or ``PIL.Image``; audio path or
16 kHz waveform), ``None`` / ``""`` when the item lacks the modality, a list/tuple of
such inputs whose token sequences are concatenated (a video's frames, as the feature
cache does), or a zero-argument callable returning one of these (decoded lazily).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
import torch

from mmal.errors import ConfigError
from mmal.features.types import SequenceFeatures
from mmal.models import ModelConfig, MultimodalClassifier
from mmal.models.layers import reduce_tokens
from mmal.train.config import TrainConfig
from mmal.train.engine import as_index, check_labels, class_weights, seeded, torch_threads, train_epochs
from mmal.train.loop import _loss
from mmal.utils import progress_bar

TOWER_MODES = ("eval", "train")


# ---- inputs ---------------------------------------------------------------------------
def _parts(x) -> list | None:
    """Raw input of one item -> list of encoder inputs (None = absent)."""
    if callable(x) and not isinstance(x, (str, np.ndarray)) and not hasattr(x, "getpixel"):
        x = x()
    if x is None or (isinstance(x, str) and x == ""):
        return None
    if isinstance(x, (list, tuple)):
        return list(x) or None
    return [x]


def _prepare_all(inputs: Mapping[str, Sequence], encoders: Mapping, idx: np.ndarray) -> dict[str, list]:
    """``{m: [prepared parts or None]}`` for items ``idx`` (each medium decoded once)."""
    out = {}
    for m, xs in inputs.items():
        enc = encoders[m]
        rows = []
        for i in idx:
            parts = _parts(xs[int(i)])
            rows.append(None if parts is None else [enc._prepare(p, int(i)) for p in parts])
        out[m] = rows
    return out


def _check(inputs, encoders, n: int | None = None) -> int:
    if not inputs:
        raise ConfigError("inputs is empty: expected {modality: [raw input per item]} with at least one modality")
    missing = set(inputs) - set(encoders)
    if missing:
        raise ConfigError(f"inputs has modalities {sorted(missing)} without an encoder; encoders has {sorted(encoders)}")
    lens = {m: len(v) for m, v in inputs.items()}
    if len(set(lens.values())) != 1:
        raise ConfigError(f"inputs modalities have different item counts {lens}; expected aligned items")
    N = next(iter(lens.values()))
    if n is not None and N != n:
        raise ConfigError(f"labels has {n} entries but inputs have {N} items; expected one label per item")
    for m in inputs:
        if encoders[m].module is None:
            raise ConfigError(
                f"encoder '{encoders[m].name}' ({m}) has no PyTorch module and cannot be fine-tuned end to end; "
                "use text:minilm, image:efficientnet-lite0 or audio:whisper-*, or train on cached features (fit)"
            )
    return N


# ---- tower forward ----------------------------------------------------------------------
def _tower_sequences(enc, module, rows: list) -> list:
    """One tower pass over a batch: ``rows`` of prepared parts -> ``[T_i, d]`` tensors (None = absent)."""
    flat = [p for r in rows if r is not None for p in r]
    if not flat:
        return [None] * len(rows)
    _, seqs = enc._forward_torch(flat, module=module)  # list of [T_j, d]
    out, k = [], 0
    for r in rows:
        if r is None:
            out.append(None)
            continue
        out.append(seqs[k] if len(r) == 1 else torch.cat(seqs[k : k + len(r)], 0))  # video: frames' tokens in a row
        k += len(r)
    return out


def _pad(seqs: list, dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[T_i, d]`` tensors / None -> ``x [B, T, d]``, ``mask [B, T]`` (T = max(1, longest))."""
    T = max([1] + [s.shape[0] for s in seqs if s is not None])
    rows, mask = [], torch.zeros(len(seqs), T, dtype=torch.bool, device=device)
    for b, s in enumerate(seqs):
        if s is None:
            rows.append(torch.zeros(T, dim, device=device))
        else:
            rows.append(torch.nn.functional.pad(s.float(), (0, 0, 0, T - s.shape[0])))  # [T_i, d] -> [T, d]
            mask[b, : s.shape[0]] = True
    return torch.stack(rows, 0), mask  # [B, T, d], [B, T]


def _batch(prepared, rows_idx, encoders, towers, cfg: ModelConfig, device) -> dict:
    """Model batch ``{m: (x, mask)}`` from the towers, token limits applied (``reduce_tokens``)."""
    batch = {}
    for m in sorted(prepared):
        seqs = _tower_sequences(encoders[m], towers[m], [prepared[m][j] for j in rows_idx])
        x, mask = _pad(seqs, encoders[m].dim, device)
        batch[m] = reduce_tokens(x, mask, cfg.token_limit(m), cfg.token_reduction)  # [B, <=M, d]
    return batch


def _set_modes(model, towers, training: bool, tower_mode: str) -> None:
    model.train(training)
    for t in towers.values():
        t.train(training and tower_mode == "train")


# ---- public API -------------------------------------------------------------------------
def fit_end_to_end(
    inputs: Mapping[str, Sequence],
    labels: Sequence[int] | np.ndarray,
    train_idx: Sequence[int] | np.ndarray,
    val_idx: Sequence[int] | np.ndarray | None = None,
    encoders: Mapping | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    tower_lr: float = 1e-5,
    tower_mode: str = "eval",
    progress: bool = True,
):
    """Train the classifier and fine-tune the encoder towers end to end.

    Same objective, optimiser, seeding and early stopping as :func:`mmal.train.fit`
    (METHODS E loss via the shared ``_loss``), but each batch runs the towers with
    autograd instead of reading cached features.

    Parameters
    ----------
    inputs : ``{modality: [raw input per item]}`` over N items (see the module docstring).
    labels : int array [N] (entries outside ``train_idx``/``val_idx`` ignored, e.g. -1).
    train_idx, val_idx : item indices; without ``val_idx`` every epoch runs, last state kept.
    encoders : ``{modality: Encoder}`` (``mmal.encoders.load(...)``) for every modality of
        ``inputs``. Their modules are deep-copied; the (per-process cached) encoders are
        never modified. Encoders without a PyTorch module (``text:e5-multilingual``) raise
        :class:`ConfigError`.
    model_config : built from the encoders' dims and ``max(labels)+1`` classes when None.
    train_config : :class:`TrainConfig` (``lr`` for the classifier, ``weight_decay`` for
        both groups, ``epochs``, ``batch_size``, ``patience``, ``monitor``, ``seed``,
        ``grad_clip`` over all parameters, ``device``); ``finetune_towers`` is set True in
        the returned history's config.
    tower_lr : AdamW learning rate of the tower parameters (1e-5, a usual BERT/ViT
        fine-tuning rate; the classifier keeps ``train_config.lr``).
    tower_mode : ``"eval"`` (default) keeps the towers' BatchNorm statistics frozen and
        their dropout / drop-connect off while their weights train — stable with the small
        batches of active learning (EfficientNet's BatchNorm would otherwise re-estimate
        statistics from a handful of images); ``"train"`` puts them in train mode.
    progress : rich progress bar.

    Returns
    -------
    model : trained :class:`MultimodalClassifier`, eval mode, best state restored.
    towers : ``{modality: torch.nn.Module}`` the tuned tower copies (eval mode, best state).
    history : as :func:`fit` (``epochs``, ``best_epoch``, ``stopped_early``,
        ``train_samples_per_s``) plus ``train_config`` (dict) and ``tower_lr``/``tower_mode``.
    """
    if encoders is None:
        raise ConfigError("fit_end_to_end needs encoders={modality: mmal.encoders.load(spec)} for every input modality")
    if tower_mode not in TOWER_MODES:
        raise ConfigError(f"tower_mode = '{tower_mode}': expected one of {TOWER_MODES}")
    if not tower_lr > 0:
        raise ConfigError(f"tower_lr = {tower_lr}: expected > 0")
    tc = replace(train_config or TrainConfig(), finetune_towers=True)
    n = _check(inputs, encoders, len(np.asarray(labels).reshape(-1)))
    train_idx = as_index(train_idx, n, "train_idx")
    val_idx = as_index(val_idx, n, "val_idx") if val_idx is not None else np.zeros(0, np.int64)
    labels, k = check_labels(labels, train_idx, val_idx, n, None if model_config is None else model_config.n_classes)
    if model_config is None:
        model_config = ModelConfig(input_dims={m: encoders[m].dim for m in inputs}, n_classes=k)
    for m in inputs:
        if model_config.input_dims.get(m) != encoders[m].dim:
            raise ConfigError(f"encoder '{encoders[m].name}' gives {encoders[m].dim}-d tokens but ModelConfig.input_dims['{m}'] = {model_config.input_dims.get(m)}")
    device = torch.device(tc.device)

    # decode + preprocess every used item once; position j in `prepared` <-> item used_idx[j]
    used_idx = np.unique(np.concatenate([train_idx, val_idx]))
    pos = {int(i): j for j, i in enumerate(used_idx)}
    prepared = _prepare_all(inputs, encoders, used_idx)
    weight = class_weights(labels[train_idx], model_config.n_classes, tc.class_weight)
    if weight is not None:
        weight = weight.to(device)
    y_all = torch.as_tensor(labels)
    with torch_threads(tc.threads), seeded(tc.seed):
        model = MultimodalClassifier(model_config).to(device)
        towers = {m: copy.deepcopy(encoders[m].module).to(device) for m in sorted(inputs)}
        for t in towers.values():
            t.requires_grad_(True)
        tower_params = [p for m in sorted(towers) for p in towers[m].parameters()]
        groups = [{"params": list(model.parameters()), "lr": tc.lr}, {"params": tower_params, "lr": float(tower_lr)}]

        def batch_loss(bi):
            batch = _batch(prepared, [pos[int(i)] for i in bi], encoders, towers, model_config, device)
            return _loss(model(batch), y_all[bi].to(device), tc, weight)

        def predict(vi):
            return _predict(model, towers, encoders, prepared, [pos[int(i)] for i in vi], model_config, device,
                            max(1, tc.batch_size))

        history = train_epochs({"model": model, **{f"tower:{m}": t for m, t in towers.items()}}, groups, train_idx,
                               batch_loss, tc, val_idx=val_idx, val_labels=labels[val_idx], predict=predict,
                               weight=weight, set_train_mode=lambda flag: _set_modes(model, towers, flag, tower_mode),
                               progress=progress, desc="fine-tune")
    _set_modes(model, towers, False, tower_mode)
    history.update(train_config=tc.to_dict(), tower_lr=float(tower_lr), tower_mode=tower_mode)
    return model, towers, history


@torch.no_grad()
def _predict(model, towers, encoders, prepared, rows, cfg, device, batch_size: int) -> np.ndarray:
    """Fused probabilities ``[len(rows), C]`` with model and towers in eval mode (modes restored)."""
    modes = (model.training, {m: t.training for m, t in towers.items()})
    model.eval()
    for t in towers.values():
        t.eval()
    try:
        out = []
        for s in range(0, len(rows), batch_size):
            batch = _batch(prepared, rows[s : s + batch_size], encoders, towers, cfg, device)
            out.append(torch.softmax(model(batch)["logits"].float(), -1).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, cfg.n_classes), np.float32)
    finally:
        model.train(modes[0])
        for m, t in towers.items():
            t.train(modes[1][m])


def encode_with_towers(
    inputs: Mapping[str, Sequence],
    encoders: Mapping,
    towers: Mapping[str, torch.nn.Module],
    ids: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, SequenceFeatures]:
    """Re-encode items with tuned towers: ``{modality: SequenceFeatures}`` for :func:`mmal.train.score`.

    Same preprocessing and pooling as the frozen encoder (its ``_prepare`` /
    ``_forward_torch``) with ``towers[m]`` as the network, in eval mode and
    ``torch.inference_mode``; a multi-part item (video frames) gets its parts' tokens
    concatenated and the mean of their pooled vectors, as the feature cache does. Inputs
    are decoded batch by batch (bounded memory).

    Parameters
    ----------
    inputs, encoders : as :func:`fit_end_to_end`.
    towers : ``{modality: module}`` as returned by :func:`fit_end_to_end` (or loaded from
        a checkpoint); modalities without a tower use the encoder's own (frozen) module.
    ids : item ids (default ``"0".."N-1"``).
    batch_size : items per tower pass (default: the encoder's ``default_batch_size``).
    progress : rich progress bar.
    """
    n = _check(inputs, encoders)
    ids = np.asarray([str(i) for i in range(n)] if ids is None else list(ids)).astype(str)
    if len(ids) != n:
        raise ConfigError(f"ids has {len(ids)} entries but inputs have {n} items")
    out = {}
    with progress_bar(progress) as bar:
        for m in sorted(inputs):
            enc = encoders[m]
            tower = towers.get(m, enc.module)
            was = tower.training
            tower.eval()
            bs = int(batch_size or enc.default_batch_size)
            seqs, pooled = [], np.zeros((n, enc.dim), np.float32)
            task = bar.add_task(f"encode {m} (tuned)", total=n)
            try:
                for s in range(0, n, bs):
                    idx = np.arange(s, min(n, s + bs))
                    rows = _prepare_all({m: inputs[m]}, encoders, idx)[m]
                    flat = [p for r in rows if r is not None for p in r]
                    if flat:
                        with torch.inference_mode():
                            p, q = enc._forward_torch(flat, module=tower)
                        p = p.float().cpu().numpy()
                        q = [t.float().cpu().numpy() for t in q]
                    k = 0
                    for j, r in zip(idx, rows):
                        if r is None:
                            seqs.append(None)
                            continue
                        pooled[j] = p[k : k + len(r)].mean(0)  # video: mean over frames
                        seqs.append(np.concatenate(q[k : k + len(r)], 0))  # [parts*T, d]
                        k += len(r)
                    bar.advance(task, len(idx))
            finally:
                tower.train(was)
            out[m] = SequenceFeatures.from_list(ids, seqs, enc.dim, pooled=pooled)
    return out


def towers_state(towers: Mapping[str, torch.nn.Module], encoders: Mapping, params: Mapping[str, dict] | None = None) -> dict:
    """Plain, ``weights_only``-loadable record of tuned towers: ``{m: {spec, params, state_dict}}``."""
    params = params or {}
    return {
        m: {"spec": encoders[m].name, "params": dict(params.get(m, {})),
            "state_dict": {k: v.detach().cpu() for k, v in t.state_dict().items()}}
        for m, t in towers.items()
    }


def load_towers(state: Mapping[str, dict], device: str = "cpu"):
    """Inverse of :func:`towers_state`: ``(encoders, towers)`` with the tuned weights loaded
    into deep copies of the (cached) encoders' modules."""
    from mmal import encoders as E

    encs, towers = {}, {}
    for m, rec in state.items():
        enc = E.load(rec["spec"], **dict(rec.get("params", {})))
        if enc.module is None:
            raise ConfigError(f"tuned tower for '{m}' names encoder '{rec['spec']}', which has no PyTorch module")
        t = copy.deepcopy(enc.module)
        try:
            t.load_state_dict(rec["state_dict"])
        except RuntimeError as e:
            raise ConfigError(f"tuned tower for '{m}' does not match encoder '{rec['spec']}' ({e})") from e
        encs[m], towers[m] = enc, t.to(device).eval()
    return encs, towers
