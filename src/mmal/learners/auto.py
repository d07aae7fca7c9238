"""``auto``: the classification default, chosen per fit by cross-validation on the fit's own labels.

Fixed design choices tuned on a few datasets do not carry to others, so the default does
not fix one: each ``fit`` scores a menu of candidates by ``cv_folds``-fold stratified
cross-validation on the labeled training items it was given (no extra label, never a
test item), picks the best, and refits it on all of them. The menu always contains the
pipeline a practitioner would try first — scikit-learn ``LogisticRegression`` on the
L2-normalised pooled embeddings with ``C = 10`` — so the default is that pipeline
whenever nothing beats it on held-out folds; ties go to it (it is listed first).

Candidates (named parameter ``candidates``):

- ``linear`` probes over ``C_grid`` (0.1, 1, 10, 100) × ``class_weights`` (None,
  "balanced"): the regularisation and class weighting a rare-positive task needs are
  chosen, not fixed;
- the ``C = 10`` probes (each class weighting) on graph-smoothed inputs, ``alpha`` over
  ``smooth_grid`` (0.5, 0.8): each item's embedding averaged with its 10 nearest
  neighbours in the unlabeled pool (:mod:`mmal.learners.graph_smoothing`, SGC eq. 8 with
  one hop); the features of every item are read, never a label outside the fit's own;
- ``late-fusion`` (:mod:`mmal.learners.late_fusion`), only when ``candidates`` names it
  (:data:`DEFAULT_CANDIDATES`), with the workspace's ``[model]`` /
  ``[train]`` settings (its own audio-scale CV runs inside each fold).

Criterion (``criterion``): ``"auto"`` = the task's metric, average precision of the
positive class for two classes (the ranking quality R@P reads, smoother than R@P80 itself
on a few positives), macro-F1 for more; or any of ``log_loss``, ``average_precision``,
``macro_f1``, ``accuracy``. It is computed on the out-of-fold probabilities of all folds
pooled. A candidate replaces the ``C = 10`` probe only when it beats it in at least
``confidence`` (0.9) of ``n_boot`` (200) bootstrap resamples of those held-out items
(:func:`weighted_scores`); among such candidates the best held-out score wins.

The probe candidates' fold fits are cheap by construction. Probes with the same inputs
and class weighting are one ``C`` path per fold, fitted in increasing ``C``, each fit
warm-started from the previous one. When there are fewer labeled rows than dimensions
(a few hundred labels over the towers' 2,048) they are solved on kernel coordinates of
their inputs: ``A`` with ``A Aᵀ = X Xᵀ`` over the labeled rows, ``r <= n`` columns instead
of ``D``. An L2-penalised linear model reads its rows only through inner products
(representer theorem), so a fold's fit and its held-out logits are those of the probe on
the full-width rows, up to the solver's tolerance. The chosen candidate is then refitted
on the full-width rows of every label, as ``linear`` fits.

With fewer than two classes holding ``cv_folds`` labels there is nothing to cross-validate
on and the learner is the ``C = 10`` probe. What was chosen, and every
candidate's held-out score, is in the fit history (``history["auto"]``) and the
checkpoint (``state()["cv"]``).
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from mmal.errors import ConfigError
from mmal.learners.base import Learner, softmax
from mmal.learners.late_fusion import TRAIN_DEFAULTS, LateFusionLearner
from mmal.learners.linear import LinearProbe, kernel_coordinates
from mmal.models.late_fusion import LateFusionConfig
from mmal.train.engine import as_index, check_labels

CANDIDATE_KINDS = ("linear", "late-fusion")
#: the default menu: the probes. ``late-fusion`` trains a network per fold (20-75 s a fit at
#: 100-400 labels on Tux Paint's audio, against 1-3 s for the probes) and was chosen in 3 of
#: 55 bench fits (bench/learner.py, before it left the menu); ``candidates=("linear", "late-fusion")``
#: puts it back
DEFAULT_CANDIDATES = ("linear",)
CRITERIA = ("auto", "log_loss", "average_precision", "macro_f1", "accuracy")
#: the baseline probe: listed first, chosen on ties and when there is too little to cross-validate
BASELINE_C = 10.0


def candidate_menu(kinds, C_grid, class_weights, smooth_grid=()) -> list[tuple[str, str, dict]]:
    """``[(key, learner name, params)]`` in preference order (the ``C = 10`` unweighted probe first)."""
    out = []
    if "linear" in kinds:
        grid = sorted({float(c) for c in C_grid} | {BASELINE_C}, key=lambda c: (c != BASELINE_C, c))
        for w in sorted(set(class_weights), key=lambda w: w is not None):
            for c in grid:
                out.append((f"linear C={c:g}" + ("" if w is None else f" {w}"), "linear",
                            {"C": c, "class_weight": w}))
            for a in sorted({float(a) for a in smooth_grid} - {0.0}):
                out.append((f"linear C={BASELINE_C:g}" + ("" if w is None else f" {w}") + f" smooth={a:g}", "linear",
                            {"C": BASELINE_C, "class_weight": w, "smooth": a}))
        # the baseline first, whatever the grid
        out.sort(key=lambda t: t[0] != f"linear C={BASELINE_C:g}")
    if "late-fusion" in kinds:
        out.append(("late-fusion", "late-fusion", {}))
    return out


def cv_criterion(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """Held-out score, larger is better (log-loss is negated)."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, log_loss, roc_auc_score

    C = probs.shape[1]
    if name == "log_loss":
        p = np.clip(probs, 1e-7, 1.0)
        return -float(log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(C)))
    if name == "average_precision":
        if C != 2:
            raise ConfigError(f"auto learner: criterion average_precision needs two classes, got {C}")
        return float(average_precision_score(y == 1, probs[:, 1])) if (y == 1).any() else float("nan")
    if name == "auc":
        if C == 2:
            return float(roc_auc_score(y == 1, probs[:, 1])) if 0 < (y == 1).sum() < len(y) else float("nan")
        present = np.unique(y)
        p = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
        return float(roc_auc_score(y, p, multi_class="ovr", labels=present)) if len(present) > 2 else float("nan")
    pred = probs.argmax(1)
    if name == "macro_f1":
        return float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0))
    if name == "accuracy":
        return float(accuracy_score(y, pred))
    raise ConfigError(f"auto learner: criterion = {name!r}: expected one of {CRITERIA}")


def weighted_scores(name: str, y: np.ndarray, probs: np.ndarray, W: np.ndarray) -> np.ndarray:
    """The criterion under item weights ``W [B, n]`` (bootstrap counts) -> ``[B]``, larger is better.

    Average precision is the step-wise sum over positives in score order (ties in that order),
    macro-F1 is over the classes present in ``y``; log-loss, accuracy: weighted means.
    """
    W = np.asarray(W, np.float64)
    if name == "average_precision":
        o = np.argsort(-probs[:, 1], kind="stable")
        pos = (y[o] == 1).astype(np.float64)
        w = W[:, o]
        tp = np.cumsum(w * pos, 1)
        seen = np.cumsum(w, 1)
        prec = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        npos = (w * pos).sum(1)
        return np.divide((w * pos * prec).sum(1), npos, out=np.full(len(W), np.nan), where=npos > 0)
    if name == "macro_f1":
        pred = probs.argmax(1)
        f1 = []
        for c in np.unique(y):
            tp = W @ ((y == c) & (pred == c)).astype(np.float64)
            fp = W @ ((y != c) & (pred == c)).astype(np.float64)
            fn = W @ ((y == c) & (pred != c)).astype(np.float64)
            den = 2 * tp + fp + fn
            f1.append(np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0))
        return np.mean(f1, 0)
    if name == "log_loss":
        item = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))
        return -(W @ item) / W.sum(1)
    if name == "accuracy":
        return (W @ (probs.argmax(1) == y).astype(np.float64)) / W.sum(1)
    raise ConfigError(f"auto learner: criterion {name!r} has no bootstrap form; use one of "
                      "average_precision, macro_f1, log_loss, accuracy")


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint folds (positions into ``y``), each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    offset = 0
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rows = rows[rng.permutation(len(rows))]
        fold[rows] = (np.arange(len(rows)) + offset) % k  # the offset spreads the remainders
        offset += len(rows)
    return [np.flatnonzero(fold == f) for f in range(k)]


class AutoLearner(Learner):
    """The default classifier: the best of a candidate menu by cross-validation (see the module doc).

    Parameters
    ----------
    candidates : kinds in the menu (``("linear",)``; add ``"late-fusion"`` for the network, see
        :data:`DEFAULT_CANDIDATES`).
    C_grid : inverse L2 strengths of the ``linear`` candidates ((0.1, 1, 10, 100); 10 is always in).
    class_weights : class weightings of the ``linear`` candidates ((None, "balanced")).
    smooth_grid : graph-smoothing strengths ``alpha`` of the extra ``C = 10`` probes ((0.5, 0.8);
        empty: none).
    criterion : see the module doc (``"auto"``).
    cv_folds : folds (3); at least two classes need this many labels to cross-validate at all.
    confidence : bootstrap share in which a candidate must beat the ``C = 10`` probe (0.9).
    n_boot : bootstrap resamples of the held-out items (200).
    heads : ``"fused"`` or ``"fused+unimodal"``, passed to every candidate.
    modalities : the modalities every candidate uses (default all).
    model, train : ``[model]`` (:class:`LateFusionConfig` fields) and ``[train]`` settings of the
        ``late-fusion`` candidate.
    """

    name = "auto"
    serves = {"coalitions": {}, "unimodal": {"heads": "fused+unimodal"}}
    train_defaults = TRAIN_DEFAULTS
    model_config = LateFusionConfig

    def __init__(self, n_classes: int | None = None, seed: int = 0, *, model: Mapping | None = None,
                 train: Mapping | None = None, candidates=DEFAULT_CANDIDATES, C_grid=(0.1, 1.0, 10.0, 100.0),
                 class_weights=(None, "balanced"), smooth_grid=(0.5, 0.8), criterion: str = "auto", cv_folds: int = 3, confidence: float = 0.9,
                 n_boot: int = 200, heads: str = "fused", modalities=None):
        kinds = [str(c) for c in (candidates or ())]
        bad = sorted(set(kinds) - set(CANDIDATE_KINDS))
        if not kinds or bad:
            raise ConfigError(f"auto learner: candidates = {list(candidates or ())}: expected a non-empty subset of "
                              f"{list(CANDIDATE_KINDS)}")
        grid = [float(c) for c in (C_grid or ())]
        if any(not (c > 0 and np.isfinite(c)) for c in grid):
            raise ConfigError(f"auto learner: C_grid = {list(C_grid)}: expected positive numbers")
        weights = [None if w in (None, "none", "None") else str(w) for w in (class_weights or (None,))]
        if any(w not in (None, "balanced") for w in weights):
            raise ConfigError(f"auto learner: class_weights = {list(class_weights)}: expected None and/or 'balanced'")
        smooths = [float(a) for a in (smooth_grid or ())]
        if any(not 0.0 <= a < 1.0 for a in smooths):
            raise ConfigError(f"auto learner: smooth_grid = {list(smooth_grid)}: expected numbers in [0, 1)")
        if criterion not in CRITERIA:
            raise ConfigError(f"auto learner: criterion = {criterion!r}: expected one of {list(CRITERIA)}")
        if int(cv_folds) < 2:
            raise ConfigError(f"auto learner: cv_folds = {cv_folds}: expected >= 2")
        if heads not in ("fused", "fused+unimodal"):
            raise ConfigError(f"auto learner: heads = {heads!r}: expected 'fused' or 'fused+unimodal'")
        if not 0.5 <= float(confidence) < 1.0 or int(n_boot) < 10:
            raise ConfigError(f"auto learner: confidence = {confidence}, n_boot = {n_boot}: expected 0.5 <= confidence < 1 "
                              "and n_boot >= 10")
        if (model or {}).get("init_encoders"):
            raise ConfigError("init_encoders (encoders started from MMSSL heads) applies to the late-fusion learner, "
                              "not to auto's cross-validated menu: train with --learner late-fusion")
        LateFusionLearner(n_classes, seed, model=model, train=train)  # validate the late-fusion settings now
        super().__init__(n_classes, seed, model=dict(model or {}), train=dict(train or {}), candidates=kinds,
                         C_grid=grid, class_weights=weights, smooth_grid=smooths, criterion=criterion, cv_folds=int(cv_folds),
                         confidence=float(confidence), n_boot=int(n_boot), heads=heads,
                         modalities=None if modalities is None else sorted(modalities))
        self.inner: Learner | None = None
        self.chosen: str | None = None
        self.cv: dict = {}

    # ---- the menu ------------------------------------------------------------------
    def menu(self) -> list[tuple[str, str, dict]]:
        return candidate_menu(self.params["candidates"], self.params["C_grid"], self.params["class_weights"],
                              self.params["smooth_grid"])

    def _build(self, kind: str, params: dict, n_classes: int) -> Learner:
        common = {"modalities": self.params["modalities"]}
        if kind == "linear":
            return LinearProbe(n_classes, self.seed, heads=self.params["heads"], **common, **params)
        model = dict(self.params["model"])
        if self.params["heads"] != "fused":
            model.setdefault("heads", self.params["heads"])
        return LateFusionLearner(n_classes, self.seed, model=model, train=self.params["train"],
                                 cv_folds=self.params["cv_folds"], **common, **params)

    def _probe_oofs(self, features, rows: np.ndarray, y: np.ndarray, folds, probes, n_classes: int):
        """Out-of-fold probabilities ``{key: [n, C]}`` and seconds ``{key: s}`` of the probe candidates.

        Probes that share their inputs (smoothing) and class weighting form one ``C`` path per fold,
        fitted in increasing ``C`` with warm starts (:meth:`LinearProbe.fit_path`), on the kernel
        coordinates of the inputs when there are fewer labeled rows than dimensions (module doc).
        """
        groups: dict = {}
        for key, _, params in probes:
            groups.setdefault((params.get("smooth", 0.0), params["class_weight"]), []).append((float(params["C"]), key))
        coords: dict = {}
        oofs = {key: np.zeros((len(rows), n_classes), np.float64) for key, _, _ in probes}
        seconds = {key: 0.0 for key, _, _ in probes}
        for (alpha, weight), members in groups.items():
            t1 = time.perf_counter()
            if alpha not in coords:
                x = self._build("linear", {"smooth": alpha}, n_classes).design(features, rows)
                coords[alpha] = (kernel_coordinates(x.astype(np.float64) @ x.T.astype(np.float64))[0]
                                 if x.shape[0] < x.shape[1] else x)
            A = coords[alpha]
            members.sort()
            probe = self._build("linear", {"class_weight": weight}, n_classes)
            for f in folds:
                fit_rows = np.setdiff1d(np.arange(len(rows)), f)
                path = probe.fit_path(A[fit_rows], y[fit_rows], n_classes, [c for c, _ in members])
                for (_, key), (coef, icpt) in zip(members, path):
                    oofs[key][f] = softmax(A[f] @ coef.T + icpt)
            dt = (time.perf_counter() - t1) / len(members)
            for _, key in members:
                seconds[key] = dt
        return oofs, seconds

    def criterion_for(self, n_classes: int) -> str:
        c = self.params["criterion"]
        return ("average_precision" if n_classes == 2 else "macro_f1") if c == "auto" else c

    # ---- contract ------------------------------------------------------------------
    def fit(self, features, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        n = len(next(iter(features.values())))
        train_idx = as_index(train_idx, n, "train_idx")
        val_idx = as_index(val_idx, n, "val_idx") if val_idx is not None else np.zeros(0, np.int64)
        rows = np.concatenate([train_idx, val_idx])  # CV replaces a validation split: every label is used
        labels, C = check_labels(labels, rows, np.zeros(0, np.int64), n, self.n_classes)
        self.n_classes = C
        y = labels[rows]
        k = self.params["cv_folds"]
        menu = self.menu()
        crit = self.criterion_for(C)
        t0 = time.perf_counter()
        counts = np.bincount(y, minlength=C)
        scores: dict[str, float] = {}
        seconds: dict[str, float] = {}
        p_better: dict[str, float] = {}
        if int(np.sum(counts >= k)) < 2:
            chosen = (f"linear C={BASELINE_C:g}", "linear", {"C": BASELINE_C, "class_weight": None})
            reason = f"fewer than two classes with {k} labels: no cross-validation, the C={BASELINE_C:g} probe"
        else:
            folds = stratified_folds(y, k, self.seed)
            oofs, seconds = self._probe_oofs(features, rows, y, folds, [c for c in menu if c[1] == "linear"], C)
            for key, kind, params in menu:
                if kind != "linear":
                    t1 = time.perf_counter()
                    oof = np.zeros((len(rows), C), np.float64)
                    for f in folds:
                        cand = self._build(kind, params, C)
                        cand.fit(features, labels, rows[np.setdiff1d(np.arange(len(rows)), f)], log=None)
                        oof[f] = cand.predict_proba(features, rows[f])
                    oofs[key] = oof
                    seconds[key] = time.perf_counter() - t1
                scores[key] = cv_criterion(crit, y, oofs[key])
            # a candidate replaces the baseline only when it beats it in at least `confidence` of the
            # bootstrap resamples of the held-out items (a one-sided paired test; the winner's curse
            # of picking the best of many noisy scores is what this guards against)
            W = np.random.default_rng([self.seed, 7]).multinomial(len(y), np.full(len(y), 1 / len(y)),
                                                                  size=self.params["n_boot"])
            base = menu[0][0]
            b0 = weighted_scores(crit, y, oofs[base], W)
            for key in scores:
                if key != base:
                    d = weighted_scores(crit, y, oofs[key], W) - b0
                    ok = np.isfinite(d)
                    p_better[key] = float(np.mean(d[ok] > 0)) if ok.any() else 0.0
            sure = [key for key, pb in p_better.items() if pb >= self.params["confidence"] and np.isfinite(scores[key])]
            best = max(sure, key=lambda key: scores[key]) if sure else base
            chosen = next(c for c in menu if c[0] == best)
            reason = (f"best held-out {crit} of {k} folds among the candidates that beat the C={BASELINE_C:g} probe in "
                      f">= {self.params['confidence']:.0%} of {self.params['n_boot']} bootstrap resamples")
        key, kind, params = chosen
        self.inner = self._build(kind, params, C)
        history = self.inner.fit(features, labels, rows, progress=progress, log=log)
        self.chosen = key
        self.cv = {"chosen": key, "learner": kind, "params": dict(params), "criterion": crit, "folds": k,
                   "scores": scores, "p_better_than_baseline": p_better, "seconds": seconds, "reason": reason, "n_labels": int(len(rows)),
                   "total_seconds": time.perf_counter() - t0}
        if log is not None:
            table = ", ".join(f"{a}: {b:.3f}" for a, b in scores.items())
            log(f"auto: {key} ({reason}{'; ' + table if table else ''})")
        history = dict(history)
        history["auto"] = self.cv
        return history

    def _check(self) -> Learner:
        if self.inner is None:
            raise ConfigError("auto learner: call fit() (or load a checkpoint) before score()")
        return self.inner

    def score(self, features, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        return self._check().score(features, idx, coalitions=coalitions, progress=progress)

    def mc_probs(self, features, T: int, seed: int) -> np.ndarray:
        return self._check().mc_probs(features, T, seed)

    @property
    def fused_blocks(self) -> bool:  # type: ignore[override]
        return bool(self.inner is not None and self.inner.fused_blocks)

    @property
    def supports_mc_dropout(self) -> bool:  # type: ignore[override]
        return bool(self.inner is not None and self.inner.supports_mc_dropout)

    def state(self) -> dict:
        inner = self._check()
        return {"chosen": self.chosen, "learner": inner.name, "config": inner.config(), "inner": inner.state(),
                "cv": _plain(self.cv)}

    def load_state(self, state: Mapping) -> None:
        from mmal.learners import make_learner

        cfg = dict(state["config"])
        self.inner = make_learner(state["learner"], **cfg)
        self.inner.load_state(state["inner"])
        self.chosen = state["chosen"]
        self.cv = dict(state.get("cv", {}))


def _plain(d):
    """Plain values only (a checkpoint is read with ``weights_only=True``)."""
    if isinstance(d, dict):
        return {str(k): _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    if isinstance(d, (np.floating, np.integer)):
        return d.item()
    return d


__all__ = ["AutoLearner", "candidate_menu", "cv_criterion", "stratified_folds", "CRITERIA", "CANDIDATE_KINDS"]
