"""Evaluation metrics of 000 §4.3 (METHODS D) and the modality gap (METHODS F)."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from mmal.errors import ConfigError

DEFAULT_PRECISIONS = (40, 50, 60, 70, 80, 90)
NAN = float("nan")


def _check(y_true, probs):
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(y) or p.shape[1] < 2:
        raise ConfigError(f"probs must be [N, C>=2] with N = len(y_true) = {len(y)}; got shape {p.shape}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ConfigError(f"y_true must be integer labels in [0, {p.shape[1]}); got dtype {y.dtype}, range [{y.min()}, {y.max()}]")
    if not np.isfinite(p).all():
        raise ConfigError("probs contains NaN or inf")
    return y.astype(np.int64), p


def expected_label(probs: np.ndarray) -> np.ndarray:
    """``E_p[y] = sum_c c * p_c`` ``[N, C] -> [N]`` (000 eq. 11's model output M[X])."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs @ np.arange(probs.shape[1], dtype=np.float64)


def multiclass_loss(y_true, probs) -> float:
    """Implements 000 eq. 11: mean ``|E_p[y] - y|`` (for binary: mean ``|p_1 - y|``)."""
    y, p = _check(y_true, probs)
    return float(np.abs(expected_label(p) - y).mean()) if len(y) else NAN


def operating_points(y_bin: np.ndarray, score: np.ndarray):
    """TP and FP counts at every distinct threshold ``score >= t`` (descending t).

    Returns ``(thresholds [K], tp [K], fp [K])``; the empty prediction set is not included.
    """
    order = np.argsort(-score, kind="mergesort")
    s, yb = score[order], y_bin[order].astype(np.int64)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(yb)[last]
    fp = (last + 1) - tp
    return s[last], tp, fp


def beta_variance(tp, fp) -> np.ndarray:
    """Implements 000 eq. 12: variance of Beta(alpha = TP+1, beta = FP+1)."""
    a = np.asarray(tp, dtype=np.float64) + 1.0
    b = np.asarray(fp, dtype=np.float64) + 1.0
    return a * b / ((a + b) ** 2 * (a + b + 1.0))


def recall_at_precision_points(y_bin, score, precisions=DEFAULT_PRECISIONS):
    """For each precision level P (in %), the operating point with the highest recall among
    those with precision >= P/100; ties in recall go to the higher precision (fewer FP).

    Returns ``{str(P): (recall, tp, fp, reachable)}``. ``reachable`` is False when no
    threshold reaches precision P (including when there are no positives); then the
    recall is NaN, not 0.0 (issue 9: "not reached" is not a measured recall of zero) and
    ``tp = fp = 0``.
    """
    y_bin = np.asarray(y_bin, dtype=bool)
    n_pos = int(y_bin.sum())
    _, tp, fp = operating_points(y_bin, np.asarray(score, dtype=np.float64))
    prec = tp / np.maximum(tp + fp, 1)
    out = {}
    for P in precisions:
        ok = np.flatnonzero(prec >= P / 100.0 - 1e-12) if n_pos else np.zeros(0, np.int64)
        if not len(ok):
            out[str(P)] = (NAN, 0, 0, False)
            continue
        best = ok[np.lexsort((fp[ok], -tp[ok]))[0]]  # max TP, then min FP
        out[str(P)] = (float(tp[best] / n_pos), int(tp[best]), int(fp[best]), True)
    return out


F1_VIEWS = ("binary", "argmax")


def compute(
    y_true,
    probs,
    *,
    threshold: float = 0.5,
    precisions: Sequence[int] = DEFAULT_PRECISIONS,
    beta_points: str = "r_at_p",
    f1_view: str = "binary",
) -> dict:
    """All evaluation metrics of 000 §4.3 / METHODS D for one prediction set.

    Parameters
    ----------
    y_true : int labels [N] in ``[0, C)``.
    probs : class probabilities [N, C].
    threshold : float
        Threshold of the binary F1 (``f1_view="binary"``): an item is predicted
        "non-zero" when ``1 - p_0 >= threshold`` (inclusive; default 0.5). 000 §4.3 states
        the view ("we base on zero or non-zero scores to calculate F1, AUC, and
        precision-recall") but no threshold; 0.5 on the non-zero score is our convention.
    precisions : precision levels (in %) of the recall-at-precision metrics (40..90).
    beta_points : which P/R operating points the max Beta variance (000 eq. 12) runs over.
        ``"r_at_p"`` (default): the operating points reported as R@P — the paper reports
        values below 1e-4 on 40k items, which only holds for these, not for the top-1
        threshold; ``"all"``: every distinct threshold (excluding the empty set).

    Returns
    -------
    dict with ``accuracy``, ``macro_f1`` (argmax predictions, all C classes); on the binary
    view "label 0 vs non-zero" (positive = non-zero, score = 1 - p_0): ``auc``, ``f1``,
    ``r_at_p`` ``{"40": recall, ...}`` (NaN where precision P is never reached) with
    ``r_at_p_reachable`` ``{"40": bool, ...}``, ``max_beta_variance``; on the ordinal view:
    ``multiclass_loss`` (000 eq. 11), ``spearman`` and ``pearson`` of ``E_p[y]`` vs ``y``;
    plus ``n``. Undefined values (one class only, constant predictions) are NaN.
    """
    y, p = _check(y_true, probs)
    if f1_view not in F1_VIEWS:
        raise ConfigError(f"f1_view = '{f1_view}': expected one of {', '.join(F1_VIEWS)}")
    if beta_points not in ("r_at_p", "all"):
        raise ConfigError(f"beta_points = '{beta_points}': expected 'r_at_p' or 'all'")
    res: dict = {"n": int(len(y))}
    if len(y) == 0:
        return res | {k: NAN for k in ("accuracy", "macro_f1", "auc", "f1", "max_beta_variance", "multiclass_loss", "spearman", "pearson")} | {
            "r_at_p": {str(P): NAN for P in precisions}, "r_at_p_reachable": {str(P): False for P in precisions},
        }
    pred = p.argmax(1)
    res["accuracy"] = float((pred == y).mean())
    res["macro_f1"] = float(f1_score(y, pred, labels=np.arange(p.shape[1]), average="macro", zero_division=0))

    yb = y != 0  # [N] binary view
    s = 1.0 - p[:, 0]
    both = 0 < yb.sum() < len(yb)
    res["auc"] = float(roc_auc_score(yb, s)) if both else NAN
    pred_nonzero = s >= threshold if f1_view == "binary" else pred != 0
    res["f1"] = float(f1_score(yb, pred_nonzero, zero_division=0)) if yb.any() else NAN
    res["f1_view"] = f1_view
    rp = recall_at_precision_points(yb, s, precisions)
    res["r_at_p"] = {k: v[0] for k, v in rp.items()}
    res["r_at_p_reachable"] = {k: bool(v[3]) for k, v in rp.items()}
    if not yb.any():
        res["max_beta_variance"] = NAN
    elif beta_points == "r_at_p":
        pts = [(tp, fp) for _, tp, fp, reached in rp.values() if reached]
        res["max_beta_variance"] = float(max(beta_variance(tp, fp) for tp, fp in pts)) if pts else NAN
    else:
        _, tp, fp = operating_points(yb, s)
        res["max_beta_variance"] = float(beta_variance(tp, fp).max())

    e = expected_label(p)
    res["multiclass_loss"] = float(np.abs(e - y).mean())
    if np.ptp(e) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res["spearman"] = float(stats.spearmanr(e, y).statistic)
            res["pearson"] = float(stats.pearsonr(e, y).statistic)
    else:
        res["spearman"] = res["pearson"] = NAN
    return res


def modality_gap(r1, r2, *, normalize: bool = True) -> float:
    """Modality gap ``||mean r1 - mean r2||`` (METHODS F, 002 Table 4.1).

    ``r1 [N, d]``, ``r2 [M, d]`` are the two modalities' representations; rows are
    L2-normalised first when ``normalize`` (the gap is defined on the unit sphere).
    """
    a, b = _rows(r1, normalize), _rows(r2, normalize)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"modality_gap: r1 has dimension {a.shape[1]} but r2 has {b.shape[1]}")
    return float(np.linalg.norm(a.mean(0) - b.mean(0)))


def modality_cosines(r1, r2) -> dict:
    """Gap and mean cosines (METHODS F): ``gap``, ``uni_cosine_1``/``_2`` (mean cosine over
    pairs i != j within a modality), ``cross_cosine`` (mean cosine of paired rows i, i)."""
    a, b = _rows(r1, True), _rows(r2, True)
    if a.shape != b.shape:
        raise ConfigError(f"modality_cosines: expected paired rows of equal shape, got {a.shape} and {b.shape}")

    def uni(x):
        n = len(x)
        if n < 2:
            return NAN
        s = x.sum(0)
        return float((s @ s - (x * x).sum()) / (n * (n - 1)))  # mean off-diagonal cosine

    return {
        "gap": float(np.linalg.norm(a.mean(0) - b.mean(0))),
        "uni_cosine_1": uni(a),
        "uni_cosine_2": uni(b),
        "cross_cosine": float((a * b).sum(1).mean()),
    }


def _rows(r, normalize):
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 2 or len(r) == 0:
        raise ConfigError(f"expected a non-empty [N, d] array, got shape {r.shape}")
    if normalize:
        r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    return r
