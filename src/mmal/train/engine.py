"""The one training loop shared by every torch learner (cached features or end to end).

:func:`train_epochs` owns what every fit repeats: class weights, the AdamW optimiser over
parameter groups, seeded shuffling, the epoch loop, gradient clipping, validation,
early stopping with the best state restored, the history record and progress. What
differs between learners is only how a batch becomes a loss and how validation items
become probabilities; both are callbacks.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np
import torch

from mmal.errors import ConfigError
from mmal.train.config import TrainConfig
from mmal.utils import progress_bar, torch_threads


def as_index(idx, n: int, what: str) -> np.ndarray:
    """``idx`` as int64 ``[k]`` within ``[0, n)`` (``None`` = all ``n``)."""
    if idx is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ConfigError(f"{what}: indices must lie in [0, {n}), got min {idx.min()} max {idx.max()}")
    return idx


def check_labels(labels, train_idx, val_idx, n: int, n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Labels as int64 ``[N]`` (float with NaN = unlabeled accepted) and the class count.

    Every label used by ``train_idx``/``val_idx`` must be an integer ``>= 0`` (and
    ``< n_classes`` when given). Returns ``(labels, n_classes)`` where the class count
    defaults to ``max(2, max label + 1)``.
    """
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise ConfigError(f"labels has {len(labels)} entries but features have {n} items; expected one label per item")
    if len(train_idx) == 0:
        raise ConfigError("train_idx is empty: expected at least one labeled training item")
    used = labels[np.concatenate([train_idx, val_idx])]
    if np.issubdtype(used.dtype, np.floating) and np.isfinite(used).all() and (used == np.round(used)).all():
        labels = np.where(np.isfinite(labels), labels, -1).astype(np.int64)  # float labels with NaN = unlabeled
        used = labels[np.concatenate([train_idx, val_idx])]
    if not np.issubdtype(used.dtype, np.integer) or used.min() < 0:
        raise ConfigError(
            "labels at train/val indices must be integers >= 0 (no unlabeled items in train_idx/val_idx), "
            f"got dtype {used.dtype}"
        )
    k = max(2, int(used.max()) + 1) if n_classes is None else int(n_classes)
    if int(used.max()) >= k:
        raise ConfigError(f"label {int(used.max())} found but the model has n_classes = {k}")
    return labels.astype(np.int64), k


def class_weights(y_train: np.ndarray, n_classes: int, how: str | None) -> torch.Tensor | None:
    """``None``, or ``"balanced"``: ``n / (C · n_c)`` per class (0 for classes without items)."""
    if how is None:
        return None
    cnt = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    w = np.where(cnt > 0, len(y_train) / (n_classes * np.maximum(cnt, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def val_metrics(probs: np.ndarray, y: np.ndarray, weight) -> tuple[float, float]:
    """(cross-entropy, accuracy) of validation ``probs`` [N, C] against labels ``y`` [N].

    With class weights (a tensor [C]) the loss is the weighted mean, as in training.
    """
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, None)  # [N]
    if weight is not None:
        wv = weight.cpu().numpy()[y]
        loss = float(-(wv * np.log(p)).sum() / wv.sum())
    else:
        loss = float(-np.log(p).mean())
    return loss, float((probs.argmax(1) == y).mean())


def train_epochs(
    modules: dict[str, torch.nn.Module],
    param_groups: list[dict],
    train_idx: np.ndarray,
    batch_loss: Callable[[np.ndarray], torch.Tensor | dict | None],
    tc: TrainConfig,
    *,
    on_epoch_start: Callable[[int], None] | None = None,
    val_idx: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    weight: torch.Tensor | None = None,
    set_train_mode: Callable[[bool], None] | None = None,
    progress: bool = False,
    desc: str = "train",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run ``tc.epochs`` epochs of AdamW over ``train_idx``; returns the history.

    Parameters
    ----------
    modules : ``{name: module}`` whose parameters train; their ``state_dict`` is the
        "best state" restored after early stopping.
    param_groups : AdamW parameter groups (``[{"params": [...], "lr": ...}, ...]``);
        ``tc.weight_decay`` applies to every group that does not set its own.
    train_idx : item indices of the training set.
    batch_loss : ``fn(batch item indices [B]) -> scalar loss`` (model in train mode); or a dict
        of named scalar losses, which are summed and recorded per epoch (``losses``); or
        ``None`` to skip the batch (e.g. a last batch too small for in-batch negatives).
    on_epoch_start : optional ``fn(epoch)`` called before each epoch's batches (MMSSL refits
        its prototypes there).
    tc : :class:`TrainConfig` (``epochs``, ``batch_size``, ``patience``, ``monitor``,
        ``seed``, ``grad_clip``); ``batch_size = 0`` is not allowed; for full-batch
        training pass a batch size >= ``len(train_idx)``.
    val_idx, val_labels, predict : validation items, their labels and
        ``fn(indices) -> probs [k, C]`` (eval mode). Without validation items every epoch
        runs and the last state is kept (no labels are spent on a validation split).
    weight : class weights, only used for the validation loss (``batch_loss`` applies its own).
    set_train_mode : ``fn(training: bool)``; default puts every module in that mode.
    progress : a progress bar (epochs x batches) with the running loss.
    log : optional ``fn(str)`` called with one line per epoch (the CLI prints it).

    Returns
    -------
    dict: ``epochs`` (list of ``{epoch, train_loss, val_loss, val_accuracy, seconds}``),
    ``best_epoch``, ``stopped_early``, ``train_samples_per_s``, ``seconds``.

    Notes
    -----
    Shuffling uses a ``torch.Generator`` seeded with ``tc.seed``; the caller seeds weight
    init (and forks the global RNG) so the same seed gives identical weights.
    """
    val_idx = np.zeros(0, np.int64) if val_idx is None else np.asarray(val_idx, np.int64)
    if set_train_mode is None:
        def set_train_mode(flag: bool) -> None:
            for m in modules.values():
                m.train(flag)
    params = [p for g in param_groups for p in g["params"]]
    opt = torch.optim.AdamW(param_groups, lr=tc.lr, weight_decay=tc.weight_decay)
    gen = torch.Generator().manual_seed(int(tc.seed))
    history: dict = {"epochs": [], "best_epoch": None, "stopped_early": False}
    best, best_state, bad_epochs = None, None, 0
    n_batches = -(-len(train_idx) // tc.batch_size)
    t_train, seen, t_start = 0.0, 0, time.perf_counter()
    with progress_bar(progress, unit="batches") as bar:
        task = bar.add_task(desc, total=tc.epochs * n_batches)
        for epoch in range(tc.epochs):
            t0 = time.perf_counter()
            bar.update(task, description=f"{desc} epoch {epoch + 1}/{tc.epochs}")
            set_train_mode(True)
            if on_epoch_start is not None:
                on_epoch_start(epoch)
                set_train_mode(True)
            order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
            total, n_seen, parts, n_steps = 0.0, 0, {}, 0
            for b in range(n_batches):
                bi = order[b * tc.batch_size : (b + 1) * tc.batch_size]
                loss = batch_loss(bi)
                if loss is None:
                    bar.advance(task)
                    continue
                if isinstance(loss, dict):
                    for k, v in loss.items():
                        parts[k] = parts.get(k, 0.0) + float(v.detach())
                    loss = sum(loss.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                opt.step()
                total += float(loss.detach()) * len(bi)
                n_seen += len(bi)
                n_steps += 1
                bar.advance(task)
            t_train += time.perf_counter() - t0
            seen += n_seen
            if not np.isfinite(total):
                raise ConfigError(f"{desc}: the training loss became non-finite in epoch {epoch + 1}; "
                                  "try a lower learning rate")
            rec = {"epoch": epoch, "train_loss": total / max(n_seen, 1), "val_loss": float("nan"),
                   "val_accuracy": float("nan")}
            if parts:
                rec["losses"] = {k: v / max(n_steps, 1) for k, v in parts.items()}
            if len(val_idx):
                set_train_mode(False)
                probs = predict(val_idx)
                rec["val_loss"], rec["val_accuracy"] = val_metrics(probs, val_labels, weight)
            rec["seconds"] = time.perf_counter() - t0
            history["epochs"].append(rec)
            if log is not None:
                log(f"{desc} epoch {epoch + 1}/{tc.epochs}  loss {rec['train_loss']:.4f}"
                    + (f"  val_loss {rec['val_loss']:.4f}  val_acc {rec['val_accuracy']:.3f}" if len(val_idx) else ""))
            if not len(val_idx):
                history["best_epoch"] = epoch
                continue
            value = rec["val_loss"] if tc.monitor == "val_loss" else -rec["val_accuracy"]
            if best is None or value < best:
                best, bad_epochs, history["best_epoch"] = value, 0, epoch
                best_state = {k: {n: v.detach().clone() for n, v in m.state_dict().items()} for k, m in modules.items()}
            else:
                bad_epochs += 1
                if tc.patience is not None and bad_epochs >= tc.patience:
                    history["stopped_early"] = True
                    break
    if best_state is not None:
        for k, m in modules.items():
            m.load_state_dict(best_state[k])
    set_train_mode(False)
    history["train_samples_per_s"] = seen / t_train if t_train > 0 else float("nan")
    history["seconds"] = time.perf_counter() - t_start
    return history


def seeded(seed: int):
    """Context: fork the global torch RNG and seed it (weight init, dropout) with ``seed``."""
    @contextlib.contextmanager
    def _ctx():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield
    return _ctx()


__all__ = ["train_epochs", "torch_threads", "as_index", "check_labels", "class_weights", "val_metrics", "seeded"]
