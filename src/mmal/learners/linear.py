"""``linear``: the probe a practitioner tries first.

Multinomial logistic regression (scikit-learn ``LogisticRegression``, lbfgs) on the
concatenation of each modality's pooled tower embedding, each L2-normalised on its own
(a missing modality is a zero block). Every other learner must beat it.

Being linear over per-modality blocks, it is exact for BMMAL: ``modality[m]`` are the
blocks the logits read, and zeroing a block is dropping its term.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np

from mmal.errors import ConfigError
from mmal.learners.base import Learner, softmax
from mmal.pool import coalition_key, coalition_subsets
from mmal.train.engine import as_index, check_labels

ABSENT_CLASS_LOGIT = -30.0


def pooled_blocks(features: Mapping, modalities: list[str], idx: np.ndarray, means: Mapping | None = None) -> dict[str, np.ndarray]:
    """``{m: [k, d_m]}`` L2-normalised pooled features (optionally centred first); zeros where absent."""
    out = {}
    for m in modalities:
        f = features[m]
        x = np.asarray(f.pooled[idx], dtype=np.float64)  # [k, d_m]
        if means is not None:
            x = x - np.asarray(means[m], dtype=np.float64)
        nrm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, nrm, out=np.zeros_like(x), where=nrm > 1e-12)
        x[~np.asarray(f.present[idx], bool)] = 0.0
        out[m] = x.astype(np.float32)
    return out


def pooled_means(features: Mapping, modalities: list[str]) -> dict[str, np.ndarray]:
    """Mean pooled feature of the items that have each modality (unlabeled pool statistics)."""
    out = {}
    for m in modalities:
        f = features[m]
        has = np.asarray(f.present, bool)
        out[m] = np.asarray(f.pooled[has], np.float64).mean(0) if has.any() else np.zeros(f.dim)
    return out


class LinearProbe(Learner):
    """Logistic regression on concatenated, L2-normalised pooled embeddings.

    Parameters
    ----------
    C : inverse L2 strength of ``LogisticRegression`` (10.0, the value the issue's probe used).
    max_iter : lbfgs iterations (2000).
    class_weight : ``None`` or ``"balanced"``.
    center : subtract the pool mean of each modality before normalising (False: the plain
        probe; the ``late-fusion`` learner always centres).
    heads : ``"fused"`` or ``"fused+unimodal"`` (one probe per modality on its own block,
        for unimodal accuracy).
    modalities : which modalities to use (default: every one in ``features``).
    smooth : ``alpha`` of the graph smoothing of the input over the items of the feature set
        (:mod:`mmal.learners.graph_smoothing`; 0.0 = off, the plain probe).
    smooth_k : neighbours of that smoothing (10).
    threads : BLAS / OpenMP threads of the solver (1; ``None``: the libraries' own count). At
        probe sizes (10²-10³ rows) the solver's iterations are short and threads spend more on
        synchronising than they save: on 2 cores with one other busy process, four fits at 267
        rows x 400 coordinates took 9-12 s with the default threads and 0.2-0.3 s with one.
    """

    name = "linear"
    serves = {"coalitions": {}, "unimodal": {"heads": "fused+unimodal"}}
    fused_blocks = True

    def __init__(self, n_classes: int | None = None, seed: int = 0, *, C: float = 10.0, max_iter: int = 2000,
                 class_weight: str | None = None, center: bool = False, heads: str = "fused", modalities=None,
                 smooth: float = 0.0, smooth_k: int = 10, threads: int | None = 1):
        if not C > 0:
            raise ConfigError(f"linear learner: C = {C}: expected > 0")
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"linear learner: class_weight = {class_weight!r}: expected None or 'balanced'")
        if heads not in ("fused", "fused+unimodal"):
            raise ConfigError(f"linear learner: heads = {heads!r}: expected 'fused' or 'fused+unimodal'")
        if threads is not None and int(threads) < 1:
            raise ConfigError(f"linear learner: threads = {threads}: expected >= 1 or None (the libraries' own count)")
        if not 0.0 <= float(smooth) < 1.0 or int(smooth_k) < 1:
            raise ConfigError(f"linear learner: smooth = {smooth}, smooth_k = {smooth_k}: expected 0 <= smooth < 1 "
                              "and smooth_k >= 1")
        super().__init__(n_classes, seed, C=float(C), max_iter=int(max_iter), class_weight=class_weight,
                         center=bool(center), heads=heads, modalities=None if modalities is None else sorted(modalities),
                         smooth=float(smooth), smooth_k=int(smooth_k), threads=None if threads is None else int(threads))
        self.coef_ = None  # [C, D]
        self.intercept_ = None  # [C]
        self.uni_ = {}  # m -> (coef [C, d_m], intercept [C])
        self.means_ = None
        self.modalities_ = None

    def design(self, features, idx) -> np.ndarray:
        """The probe's input rows ``x [len(idx), D]`` over ``features`` (the concatenated blocks it fits on)."""
        mods = sorted(self._features(features))
        means = pooled_means(features, mods) if self.params["center"] else None
        blocks = self._blocks(features, mods, as_index(idx, len(features[mods[0]]), "idx"), means)
        return np.concatenate([blocks[m] for m in mods], 1)

    def _blocks(self, features, mods, idx, means=None) -> dict[str, np.ndarray]:
        """The probe's input blocks of rows ``idx``: :func:`pooled_blocks` (centred on ``means`` when given),
        graph-smoothed when ``smooth > 0``."""
        alpha = self.params.get("smooth", 0.0)
        if not alpha:
            return pooled_blocks(features, mods, idx, means)
        from mmal.learners.graph_smoothing import NeighbourTable, neighbour_table

        n = len(features[mods[0]])

        def build():
            every = pooled_blocks(features, mods, np.arange(n), means)
            return NeighbourTable(np.concatenate([every[m] for m in mods], 1), self.params["smooth_k"])

        arrays = [a for m in mods for a in (features[m].pooled, features[m].present)]
        table = neighbour_table(arrays, (tuple(mods), self.params["center"], self.params["smooth_k"]), build)
        x = table.smoothed(idx, alpha)
        offs = np.cumsum([0] + [features[m].dim for m in mods])
        return {m: x[:, offs[j]:offs[j + 1]] for j, m in enumerate(mods)}

    def _fit_lr(self, x, y, C_total, tol: float = 1e-4):
        return self.fit_path(x, y, C_total, [self.params["C"]], tol)[0]

    def fit_path(self, x, y, C_total, Cs, tol: float = 1e-4) -> list[tuple[np.ndarray, np.ndarray]]:
        """The logistic regression on rows ``x`` at each inverse strength of ``Cs`` (this probe's other
        settings) -> ``[(coef [C_total, D], intercept [C_total])]``, in the order given.

        Each fit after the first starts from the previous solution (scikit-learn's ``warm_start``):
        along an increasing ``C`` path the optimum moves little, and lbfgs needs fewer iterations
        to reach the same tolerance. A class absent from ``y`` gets a logit of -30.
        """
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        classes = np.unique(y)
        out = []
        if len(classes) == 1:  # one class seen: it gets every item
            coef = np.zeros((C_total, x.shape[1]), np.float64)
            icpt = np.full(C_total, ABSENT_CLASS_LOGIT)
            icpt[classes[0]] = 0.0
            return [(coef, icpt.copy()) for _ in Cs]
        lr = LogisticRegression(max_iter=self.params["max_iter"], class_weight=self.params["class_weight"],
                                random_state=self.seed, tol=tol, warm_start=len(Cs) > 1)
        for c in Cs:
            lr.set_params(C=float(c))
            with threadpool_limits(self.params["threads"]), warnings.catch_warnings():
                # 1-2 labels per class (cold start, CV folds, 16 classes at 50 labels) is expected here
                warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
                lr.fit(x, y)
            coef = np.zeros((C_total, x.shape[1]), np.float64)
            icpt = np.full(C_total, ABSENT_CLASS_LOGIT)
            if len(lr.classes_) == 2:  # sklearn stores one row for binary problems
                coef[lr.classes_[1]], icpt[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
                coef[lr.classes_[0]], icpt[lr.classes_[0]] = 0.0, 0.0
            else:
                coef[lr.classes_], icpt[lr.classes_] = lr.coef_, lr.intercept_
            out.append((coef, icpt))
        return out

    def fit(self, features, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        import time

        mods = sorted(self._features(features))
        n = len(features[mods[0]])
        train_idx = as_index(train_idx, n, "train_idx")
        val_idx = as_index(val_idx, n, "val_idx") if val_idx is not None else np.zeros(0, np.int64)
        tr = np.concatenate([train_idx, val_idx])  # a probe needs no validation split: use every label
        labels, C_total = check_labels(labels, tr, np.zeros(0, np.int64), n, self.n_classes)
        self.n_classes = C_total
        t0 = time.perf_counter()
        self.modalities_ = mods
        self.means_ = pooled_means(features, mods) if self.params["center"] else None
        blocks = self._blocks(features, mods, tr, self.means_)
        x = np.concatenate([blocks[m] for m in mods], 1)
        y = labels[tr]
        self.coef_, self.intercept_ = self._fit_lr(x, y, C_total)
        self.uni_ = {}
        if self.params["heads"] == "fused+unimodal":
            for m in mods:
                has = np.asarray(features[m].present[tr], bool)
                if has.any():
                    self.uni_[m] = self._fit_lr(blocks[m][has], y[has], C_total)
        seconds = time.perf_counter() - t0
        if log is not None:
            log(f"linear: fitted on {len(tr)} items in {seconds:.2f} s")
        return {"epochs": [], "best_epoch": None, "stopped_early": False, "seconds": seconds,
                "train_samples_per_s": len(tr) / seconds if seconds > 0 else float("nan")}

    def _check_fitted(self):
        if self.coef_ is None:
            raise ConfigError("linear learner: call fit() (or load a checkpoint) before score()")

    def score(self, features, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        self._check_fitted()
        mods = self.modalities_
        n = len(features[mods[0]])
        idx = as_index(idx, n, "idx")
        blocks = self._blocks(features, mods, idx, self.means_)
        x = np.concatenate([blocks[m] for m in mods], 1)  # [k, D]
        logits = x @ self.coef_.T + self.intercept_  # [k, C]
        res = {
            "probs": softmax(logits).astype(np.float32),
            "embedding": x,
            "penultimate": x,
            "modality": blocks,
            "present": {m: np.asarray(features[m].present[idx], bool) for m in mods},
            "unimodal_probs": {m: softmax(blocks[m] @ c.T + b).astype(np.float32) for m, (c, b) in self.uni_.items()},
        }
        subsets = coalition_subsets(mods, coalitions) if coalitions else []
        if subsets:
            offs = np.cumsum([0] + [blocks[m].shape[1] for m in mods])
            res["coalition_probs"] = {}
            for s in subsets:
                lg = np.tile(self.intercept_, (len(idx), 1))
                for j, m in enumerate(mods):
                    if m in s:
                        lg = lg + blocks[m] @ self.coef_[:, offs[j]:offs[j + 1]].T
                res["coalition_probs"][coalition_key(s)] = softmax(lg).astype(np.float32)
        return res

    def state(self) -> dict:
        import torch

        self._check_fitted()
        return {
            "modalities": list(self.modalities_),
            "coef": torch.from_numpy(self.coef_.copy()), "intercept": torch.from_numpy(self.intercept_.copy()),
            "means": None if self.means_ is None else {m: torch.from_numpy(np.asarray(v)) for m, v in self.means_.items()},
            "unimodal": {m: {"coef": torch.from_numpy(c.copy()), "intercept": torch.from_numpy(b.copy())} for m, (c, b) in self.uni_.items()},
        }

    def load_state(self, state) -> None:
        self.modalities_ = list(state["modalities"])
        self.coef_ = state["coef"].numpy().astype(np.float64)
        self.intercept_ = state["intercept"].numpy().astype(np.float64)
        self.means_ = None if state["means"] is None else {m: v.numpy() for m, v in state["means"].items()}
        self.uni_ = {m: (d["coef"].numpy(), d["intercept"].numpy()) for m, d in state["unimodal"].items()}


def kernel_coordinates(K: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates ``A [n, r]`` with ``A Aᵀ = K`` for a Gram matrix ``K [n, n]``.

    From ``K = U Λ Uᵀ``: ``A = U Λ^½`` over the ``r`` eigenvalues above ``rtol · λ_max``.
    Returns ``(A, U_r, λ_r)``. An L2-penalised linear model depends on its training rows only
    through inner products (representer theorem), so fitting it on ``A`` instead of the
    ``D``-wide rows gives the same objective, the same predictions and the same weight norm,
    at ``O(n² r)`` instead of ``O(n D)`` per iteration when ``n < D``.
    """
    lam, U = np.linalg.eigh(np.asarray(K, np.float64))
    keep = lam > rtol * max(float(lam.max(initial=0.0)), 1e-300)
    lam, U = lam[keep], U[:, keep]
    return U * np.sqrt(lam), U, lam


def fit_probe(x: np.ndarray, y: np.ndarray, n_classes: int, C: float, seed: int, tol: float = 1e-4,
              class_weight: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``linear`` learner's logistic regression (``C``, ``class_weight``; lbfgs stopping tolerance
    ``tol``, scikit-learn's default) on rows ``x [n, D]`` -> ``(coef [C, D], intercept [C])``.

    When ``n < D`` it is solved on kernel coordinates (:func:`kernel_coordinates` of ``x xᵀ``)
    and mapped back exactly: with ``A = U Λ^½`` the weights ``w'`` on ``A`` correspond to
    ``w = xᵀ U Λ^-½ w'`` (same logits on every training row, same ``||w||``).
    """
    probe = LinearProbe(n_classes, seed, C=C, class_weight=class_weight)
    x = np.asarray(x, np.float64)
    if x.shape[0] >= x.shape[1]:
        return probe._fit_lr(x, y, n_classes, tol)
    A, U, lam = kernel_coordinates(x @ x.T)
    coef_a, icpt = probe._fit_lr(A, y, n_classes, tol)
    return (coef_a / np.sqrt(lam)) @ U.T @ x, icpt
