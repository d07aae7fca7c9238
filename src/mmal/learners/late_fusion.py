"""``late-fusion``: per-modality encoders over the frozen towers, one linear layer over ``concat(z_m)``.

The model is :class:`mmal.models.late_fusion.LateFusionClassifier` (002 ch. 3's model
family; audio by 000 eq. 6 or eq. 7). This module builds its batches from the feature cache
and trains it with the shared loop :func:`mmal.train.engine.train_epochs`.

Training recipe (the choices are named parameters with the defaults below):

- every labeled item trains; no labels are spent on a validation split and nothing stops
  early (``epochs`` fixed): with 50-400 labels a 10-80-item validation split gives a noisy
  stopping rule and takes a fifth of the labels away;
- full-batch AdamW (``batch_size`` 512 covers the usual budgets), ``lr`` 0.01,
  ``weight_decay`` and ``label_smoothing`` as regularisers;
- the centring means are pool statistics computed from every item's features (no labels),
  so the learner is transductive in its normalisation only.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from mmal.errors import ConfigError
from mmal.learners.base import Learner
from mmal.pool import coalition_key, coalition_subsets
from mmal.learners.linear import fit_probe, kernel_coordinates, pooled_means
from mmal.models.late_fusion import LateFusionClassifier, LateFusionConfig, bucket_frames, late_fusion_loss, unit_frames
from mmal.train.config import TrainConfig
from mmal.train.engine import as_index, check_labels, class_weights, seeded, torch_threads, train_epochs

#: training defaults of this learner (override any TrainConfig field with train={...})
TRAIN_DEFAULTS = {"lr": 0.01, "epochs": 100, "batch_size": 512, "weight_decay": 0.01, "patience": None, "grad_clip": None}


def _pool_rows(seq: np.ndarray, max_tokens: int | None) -> np.ndarray:
    """Average ``[L, d]`` into ``max_tokens`` contiguous bins (token j -> bin floor(j*M/L))."""
    L = len(seq)
    if max_tokens is None or L <= max_tokens:
        return seq
    starts = (np.arange(max_tokens) * L + max_tokens - 1) // max_tokens
    sums = np.add.reduceat(seq.astype(np.float64), starts, axis=0)
    return sums / np.diff(np.append(starts, L))[:, None]


def late_fusion_batch(features: Mapping, idx, cfg: LateFusionConfig, frame_means: Mapping | None = None) -> dict:
    """Model input for items ``idx``.

    Vector modalities: ``{m: (x [B, d], present [B])}``. Frame modalities:
    ``{m: (frames [F, d], seg [F], present [B], buckets)}`` with every real frame of the batch packed
    (clips longer than ``cfg.audio_max_frames`` averaged into that many bins), each frame
    centred on ``frame_means[m]`` and L2-normalised (:func:`unit_frames`).
    """
    idx = np.asarray(idx, np.int64)
    out = {}
    for m in cfg.vector_modalities:
        f = features[m]
        out[m] = (torch.from_numpy(np.asarray(f.pooled[idx], np.float32)), torch.from_numpy(np.asarray(f.present[idx], bool)))
    for m in cfg.frame_modalities:
        f = features[m]
        rows = [(_pool_rows(np.asarray(f.sequence(int(i)), np.float32), cfg.audio_max_frames) if f.present[i] else None) for i in idx]
        lens = np.array([0 if r is None else len(r) for r in rows], np.int64)
        x = np.concatenate([r for r in rows if r is not None and len(r)], 0).astype(np.float32) if lens.sum() else np.zeros((0, f.dim), np.float32)
        mu = torch.zeros(f.dim) if frame_means is None else torch.as_tensor(np.asarray(frame_means[m]), dtype=torch.float32)
        frames = unit_frames(torch.from_numpy(x), mu)
        seg = torch.from_numpy(np.repeat(np.arange(len(idx)), lens))
        out[m] = (frames, seg, torch.from_numpy(lens > 0), bucket_frames(frames, lens))
    return out


def _take(batch: dict, rows: np.ndarray) -> dict:
    """Sub-batch of a prebuilt batch: ``rows`` are positions in it (frames re-packed)."""
    rows = np.asarray(rows, np.int64)
    r = torch.from_numpy(rows)
    out = {}
    for m, v in batch.items():
        if len(v) == 2:
            out[m] = (v[0][r], v[1][r])
            continue
        frames, seg, has, _ = v
        lens = torch.bincount(seg, minlength=len(has)).numpy()
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        sel = np.concatenate([np.arange(starts[i], starts[i] + lens[i]) for i in rows]) if len(rows) else np.zeros(0, np.int64)
        out[m] = (frames[torch.from_numpy(sel)], torch.from_numpy(np.repeat(np.arange(len(rows)), lens[rows])), has[r], None)
    return out


INITS = ("zero", "probe")


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per item: each class's items are shuffled and dealt round-robin from a random start."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), np.int64)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        out[rows] = (np.arange(len(rows)) + rng.integers(folds)) % folds
    return out


def choose_head_scale(z: Mapping[str, np.ndarray], head: set | list, y: np.ndarray, grid, *, folds: int = 3, C: float = 10.0,
                      seed: int = 0, min_scored: int = 10) -> tuple[float | None, dict]:
    """The audio block's scale (``head_scale``) chosen from ``grid`` by cross-validation on the labeled items.

    ``z {m: [n, D_m]}`` are the initial unit blocks of the labeled items (centred, normalised;
    the head modalities' block at scale 1, i.e. the avg-pool block VLMAE starts from) and
    ``head`` the head modalities. For each ``s`` in ``grid`` the rows ``concat(z_m · s_m)``
    (``s_m = s`` for head modalities, 1 otherwise) are scored by ``folds``-fold stratified
    cross-validation of the probe the learner starts from (:func:`fit_probe`, on kernel
    coordinates of ``K(s) = Σ_vec Z Zᵀ + s² Σ_head Z Zᵀ``, so a grid point costs ``folds``
    fits of width ``n``): the held-out log-loss, summed over held-out items whose class the
    fold's training part has. Returns ``(best s, {"log_loss": {s: mean loss}, "scored": k})``;
    ``(None, ...)`` when fewer than ``min_scored`` held-out items can be scored (too few labels
    per class: the caller keeps its fixed default). Ties go to the earlier grid value.
    The scale is the one choice the papers leave open that moves accuracy by > 10 points
    between datasets (bench/learner.py: synthetic-video, whose classes are in the speech for a
    third of the clips, wants 1.0; Tux Paint, whose sound effects barely name the class, 0.25).
    """
    y = np.asarray(y)
    fold = stratified_folds(y, folds, seed)
    K_vec = sum((np.asarray(v, np.float64) @ np.asarray(v, np.float64).T for m, v in z.items() if m not in head), np.zeros((len(y),) * 2))
    K_head = sum((np.asarray(v, np.float64) @ np.asarray(v, np.float64).T for m, v in z.items() if m in head), np.zeros((len(y),) * 2))
    n_classes = int(y.max()) + 1
    scorable = np.zeros(len(y), bool)
    for f in range(folds):
        seen = np.unique(y[fold != f])
        scorable |= (fold == f) & np.isin(y, seen)
    info = {"log_loss": {}, "scored": int(scorable.sum()), "folds": folds}
    if scorable.sum() < min_scored or len(np.unique(y)) < 2:
        return None, info
    for s in grid:
        A, _, _ = kernel_coordinates(K_vec + float(s) ** 2 * K_head)
        loss = 0.0
        for f in range(folds):
            tr, va = fold != f, (fold == f) & scorable
            if not va.any():
                continue
            coef, icpt = fit_probe(A[tr], y[tr], n_classes, C, seed)
            lg = A[va] @ coef.T + icpt
            lg = lg - lg.max(1, keepdims=True)
            loss -= float((lg[np.arange(va.sum()), y[va]] - np.log(np.exp(lg).sum(1))).sum())
        info["log_loss"][float(s)] = loss / scorable.sum()
    best = min(info["log_loss"], key=lambda s: info["log_loss"][s])  # dicts keep grid order: ties -> earlier
    return best, info


@torch.no_grad()
def _init_from_probe(net: LateFusionClassifier, batch: dict, y: np.ndarray, n_classes: int, C: float, seed: int) -> None:
    """Set the fused linear layer to the logistic-regression probe fitted on the initial blocks.

    The blocks at initialisation are the centred, normalised vectors and the avg-pool audio
    block (VLMAE starts from uniform attention), so this is the ``linear`` learner's solution
    on the same inputs (:func:`fit_probe`); training then continues from it.
    """
    z, _ = net.blocks(batch)
    x = torch.cat([z[m] for m in net.dims], 1).numpy().astype(np.float64)
    coef, icpt = fit_probe(x, y, n_classes, C, seed)
    net.fused.weight.copy_(torch.from_numpy(coef))
    net.fused.bias.copy_(torch.from_numpy(icpt))


class LateFusionLearner(Learner):
    """Late fusion (the default learner). ``model`` = :class:`LateFusionConfig` fields,
    ``train`` = :class:`TrainConfig` fields over :data:`TRAIN_DEFAULTS`, plus
    ``label_smoothing`` (0.0), ``init`` (``"probe"``, default: start the fused layer from the
    logistic-regression probe with ``probe_C`` = 10 on the initial blocks; ``"zero"``:
    PyTorch's default init), ``head_scale_grid`` ((0.25, 0.5, 1.0): when audio frames reach
    the head and ``model`` does not set ``head_scale``, each fit chooses it from this grid by
    ``cv_folds``-fold cross-validation on its labeled items, :func:`choose_head_scale`; with
    too few labels per class, or an empty grid, the config's default 0.25 is kept),
    ``modalities`` (default: every modality of the features), ``init_encoders`` (``None``,
    default; or a stored MMSSL pre-training folder ``DIR/pretrain/<name>``: the vector
    modalities' encoders become its projection heads, :mod:`mmal.learners.mmssl_init`) and
    ``freeze_encoders`` (True: those heads do not train)."""

    name = "late-fusion"
    serves = {"coalitions": {}, "unimodal": {"heads": "fused+unimodal"}, "mc_samples": {"dropout": 0.2}}
    fused_blocks = True
    train_defaults = TRAIN_DEFAULTS
    model_config = LateFusionConfig
    pretraining = "mmssl"

    def __init__(self, n_classes: int | None = None, seed: int = 0, *, model: Mapping | None = None,
                 train: Mapping | None = None, label_smoothing: float = 0.0, init: str = "probe",
                 probe_C: float = 10.0, head_scale_grid=(0.25, 0.5, 1.0), cv_folds: int = 3, modalities=None,
                 init_encoders: str | None = None, freeze_encoders: bool = True):
        model = dict(model or {})
        unknown = set(model) - set(LateFusionConfig.__dataclass_fields__) | ({"input_dims", "n_classes"} & set(model))
        if unknown:
            allowed = sorted(set(LateFusionConfig.__dataclass_fields__) - {"input_dims", "n_classes"})
            raise ConfigError(f"late-fusion learner: unknown model keys {sorted(unknown)}; allowed: {allowed}")
        train = dict(train or {})
        TrainConfig.from_dict({**TRAIN_DEFAULTS, **train})  # validate early
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"late-fusion learner: label_smoothing = {label_smoothing}: expected in [0, 1)")
        if init not in INITS:
            raise ConfigError(f"late-fusion learner: init = {init!r}: expected one of {INITS}")
        grid = [float(g) for g in (head_scale_grid or ())]
        if any(not (g > 0 and np.isfinite(g)) for g in grid):
            raise ConfigError(f"late-fusion learner: head_scale_grid = {list(head_scale_grid)}: expected positive numbers")
        if int(cv_folds) < 2:
            raise ConfigError(f"late-fusion learner: cv_folds = {cv_folds}: expected >= 2")
        super().__init__(n_classes, seed, model=model, train=train, label_smoothing=float(label_smoothing),
                         init=init, probe_C=float(probe_C), head_scale_grid=grid, cv_folds=int(cv_folds),
                         modalities=None if modalities is None else sorted(modalities),
                         init_encoders=None if init_encoders is None else str(init_encoders),
                         freeze_encoders=bool(freeze_encoders))
        self.net: LateFusionClassifier | None = None
        self._pretrained = None  # MMSSL heads handed over by init_from_pretraining

    def init_from_pretraining(self, pretrained: dict) -> None:
        """The stored MMSSL heads that ``init_encoders`` names, as read by the workspace edge
        (:func:`mmal.loop.pretrain.load_mmssl_heads`): the learner never reads files itself."""
        self._pretrained = pretrained

    @property
    def supports_mc_dropout(self) -> bool:  # type: ignore[override]
        cfg = self.net.config if self.net is not None else None
        return bool(cfg and cfg.dropout > 0)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**TRAIN_DEFAULTS, **self.params["train"], "seed": self.seed})

    def fit(self, features, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        features = self._features(features)
        n = len(next(iter(features.values())))
        train_idx = as_index(train_idx, n, "train_idx")
        val_idx = as_index(val_idx, n, "val_idx") if val_idx is not None else np.zeros(0, np.int64)
        labels, C = check_labels(labels, train_idx, val_idx, n, self.n_classes)
        self.n_classes = C
        model_cfg, pre = dict(self.params["model"]), None
        if self.params.get("init_encoders"):
            from mmal.learners.mmssl_init import mmssl_model_overrides

            pre = self._pretrained
            if pre is None:
                raise ConfigError(f"late-fusion learner: init_encoders = {self.params['init_encoders']!r} but no MMSSL "
                                  "pre-training was handed over; train through `mmal train` / `simulate`, or call "
                                  "init_from_pretraining(mmal.loop.pretrain.load_mmssl_heads(folder)) first")
            dims = LateFusionConfig(input_dims={m: f.dim for m, f in features.items()}, n_classes=C, **model_cfg)
            model_cfg.update(mmssl_model_overrides(pre, dims.input_dims, dims.vector_modalities))
        cfg = LateFusionConfig(input_dims={m: f.dim for m, f in features.items()}, n_classes=C, **model_cfg)
        tc = self.train_config()
        weight = class_weights(labels[train_idx], C, tc.class_weight)
        with torch_threads(tc.threads), seeded(self.seed):
            net = LateFusionClassifier(cfg)
            if pre is not None:
                from mmal.learners.mmssl_init import copy_mmssl_heads

                copy_mmssl_heads(net, pre, self.params["freeze_encoders"])
            means = pooled_means(features, cfg.modalities) if cfg.center else {m: np.zeros(f.dim) for m, f in features.items()}
            net.set_statistics({m: torch.from_numpy(v) for m, v in means.items()})
            rows = np.concatenate([train_idx, val_idx])
            pos = {int(i): j for j, i in enumerate(rows)}
            cache = late_fusion_batch(features, rows, cfg, means)  # built once, indexed per step
            y = torch.from_numpy(labels)
            ls = self.params["label_smoothing"]

            def batch_loss(bi):
                if len(bi) == len(rows) and not len(val_idx):  # full batch: order is irrelevant, reuse the cache
                    return late_fusion_loss(net(cache), y[torch.from_numpy(rows)], weight, ls)
                out = net(_take(cache, [pos[int(i)] for i in bi]))
                return late_fusion_loss(out, y[torch.from_numpy(bi)], weight, ls)

            @torch.no_grad()
            def predict(vi):
                return torch.softmax(net(_take(cache, [pos[int(i)] for i in vi]))["logits"], -1).numpy()

            chosen = self._choose_head_scale(net, cache, labels[rows], rows)
            if self.params["init"] == "probe":
                _init_from_probe(net, cache, labels[rows], C, self.params["probe_C"], self.seed)
            history = train_epochs({"net": net}, [{"params": [p for p in net.parameters() if p.requires_grad]}], train_idx, batch_loss, tc,
                                   val_idx=val_idx, val_labels=labels[val_idx], predict=predict, weight=weight,
                                   progress=progress, desc="train late-fusion", log=log)
        self.net = net.eval()
        history["head_scale"] = chosen
        if log is not None and chosen["source"] == "cross-validation":
            log(f"late-fusion: head_scale {cfg.head_scale} chosen by {chosen['info']['folds']}-fold cross-validation "
                f"(held-out log-loss {', '.join(f'{s}: {v:.3f}' for s, v in chosen['info']['log_loss'].items())})")
        return history

    def _choose_head_scale(self, net: LateFusionClassifier, cache: dict, y: np.ndarray, rows: np.ndarray) -> dict:
        """Set ``net.config.head_scale`` by :func:`choose_head_scale` when it applies; returns how it was set."""
        cfg = net.config
        grid = self.params["head_scale_grid"]
        if "head_scale" in self.params["model"] or not cfg.frame_modalities or not grid:
            why = "set" if "head_scale" in self.params["model"] else "default"
            return {"value": cfg.head_scale, "source": why}
        with torch.no_grad():
            z, _ = net.blocks(cache)
        unit = {m: (v / cfg.head_scale if m in cfg.frame_modalities else v).numpy() for m, v in z.items()}
        best, info = choose_head_scale(unit, set(cfg.frame_modalities), y, grid, folds=self.params["cv_folds"],
                                       C=self.params["probe_C"], seed=self.seed)
        if best is None:
            return {"value": cfg.head_scale, "source": "default (too few labels per class to cross-validate)", "info": info}
        cfg.head_scale = best
        return {"value": best, "source": "cross-validation", "info": info}

    def _frame_means(self) -> dict:
        return {m: mod.mu.numpy() for m, mod in self.net.frames.items()}

    def _check_fitted(self):
        if self.net is None:
            raise ConfigError("late-fusion learner: call fit() (or load a checkpoint) before score()")

    @torch.no_grad()
    def score(self, features, idx=None, *, coalitions=False, progress: bool = False, batch_size: int = 1024) -> dict:
        from mmal.utils import progress_bar

        self._check_fitted()
        features = self._features(features)
        net, cfg = self.net, self.net.config
        n = len(next(iter(features.values())))
        idx = as_index(idx, n, "idx")
        subsets = coalition_subsets(cfg.block_modalities, coalitions) if coalitions else []
        acc: dict = {"probs": [], "fused": [], "modality": {}, "present": {}, "uni": {}, "coal": {coalition_key(s): [] for s in subsets}}
        was = net.training
        net.eval()
        try:
            with torch_threads(self.train_config().threads), progress_bar(progress) as bar:
                task = bar.add_task("score", total=len(idx))
                for s in range(0, len(idx), batch_size):
                    bi = idx[s : s + batch_size]
                    out = net(late_fusion_batch(features, bi, cfg, self._frame_means()))
                    acc["probs"].append(torch.softmax(out["logits"], -1).numpy())
                    acc["fused"].append(out["fused_input"].numpy())
                    for m, z in out["modality"].items():
                        acc["modality"].setdefault(m, []).append(z.numpy())
                        acc["present"].setdefault(m, []).append(out["present"][m].numpy())
                    for m, lg in (out.get("unimodal_logits") or {}).items():
                        acc["uni"].setdefault(m, []).append(torch.softmax(lg, -1).numpy())
                    for sub in subsets:
                        lg, _ = net.head({m: out["modality"][m] for m in sub}, n=len(bi))
                        acc["coal"][coalition_key(sub)].append(torch.softmax(lg, -1).numpy())
                    bar.advance(task, len(bi))
        finally:
            net.train(was)

        def cat(parts, width):
            return np.concatenate(parts, 0).astype(np.float32) if parts else np.zeros((0, width), np.float32)

        D = sum(net.dims.values())
        fused = cat(acc["fused"], D)
        res = {
            "probs": cat(acc["probs"], cfg.n_classes),
            "embedding": fused,
            "penultimate": fused,
            "modality": {m: cat(v, net.dims[m]) for m, v in acc["modality"].items()},
            "present": {m: np.concatenate(v) for m, v in acc["present"].items()},
            "unimodal_probs": {m: cat(v, cfg.n_classes) for m, v in acc["uni"].items()},
        }
        if subsets:
            res["coalition_probs"] = {k: cat(v, cfg.n_classes) for k, v in acc["coal"].items()}
        return res

    def mc_probs(self, features, T: int, seed: int) -> np.ndarray:
        """``[T, N, C]`` fused probabilities with dropout active on the blocks (BALD)."""
        from mmal.train.mc_dropout import mc_dropout, mc_dropout_probs

        self._check_fitted()
        if not self.supports_mc_dropout:
            raise ConfigError("BALD needs MC-dropout: the late-fusion learner was trained with dropout = 0; "
                              "set [model] dropout = 0.2 (or --param) and train again")
        features = self._features(features)
        cfg = self.net.config
        n = len(next(iter(features.values())))
        batch = late_fusion_batch(features, np.arange(n), cfg, self._frame_means())

        def once():
            z, _ = self.net.blocks(batch)
            logits, _ = self.net.head(z, drop=True)
            return torch.softmax(logits, -1)

        with mc_dropout(self.net):
            return mc_dropout_probs(once, T, seed)

    def state(self) -> dict:
        self._check_fitted()
        return {"model_config": self.net.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    def load_state(self, state) -> None:
        cfg = LateFusionConfig.from_dict(state["model_config"])
        net = LateFusionClassifier(cfg)
        net.load_state_dict(state["state_dict"])
        self.net = net.eval()
        self.n_classes = cfg.n_classes


__all__ = ["LateFusionLearner", "late_fusion_batch", "TRAIN_DEFAULTS"]
