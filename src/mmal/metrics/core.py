"""Pieces every task's metrics share (METHODS D), the bad-case scores and the modality gap (METHODS F).

The metrics of each task are in :mod:`mmal.metrics.binary`, :mod:`mmal.metrics.multiclass`
and :mod:`mmal.metrics.relevance`; :mod:`mmal.tasks` picks them.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError

DEFAULT_PRECISIONS = (40, 50, 60, 70, 80, 90)
NAN = float("nan")


def check_probs(y_true, probs):
    """``(labels int64 [N], probs float64 [N, C])`` after checking shapes, label range and finiteness."""
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


def expected_label_error(probs, labels) -> np.ndarray:
    """000 eq. 11 per item: ``|E_p[y] - y|`` ``[N, C], [N] -> [N]``.

    Defined only where labels are ordered (relevance levels 0..3); for two classes it is
    ``|p_1 - y|``. For unordered classes use :func:`true_class_error`.
    """
    p = np.asarray(probs, dtype=np.float64)
    return np.abs(expected_label(p) - np.asarray(labels, dtype=np.float64))


def true_class_error(probs, labels) -> np.ndarray:
    """``1 - p_y`` per item ``[N, C], [N] -> [N]``: how much probability misses the label.

    The bad-case score of unordered classes (METHODS D): eq. 11 would score a 50/50
    prediction of classes 4 and 6 for label 5 as perfect. Equal to eq. 11 for two classes.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    return 1.0 - p[np.arange(len(y)), y]


def badness(probs, labels, ordered: bool = False) -> np.ndarray:
    """How badly each prediction misses its human label ``[N, C], [N] -> [N]`` (METHODS B step 1, D).

    The one bad-case score of LSB seeds and of the batch table. ``ordered`` labels
    (relevance levels): 000 eq. 11, :func:`expected_label_error`. Unordered classes:
    :func:`true_class_error`, ``1 - p_y``. For two classes both are ``|p_1 - y|``.
    """
    return expected_label_error(probs, labels) if ordered else true_class_error(probs, labels)


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
    recall is NaN, not 0.0 ("not reached" is not a measured recall of zero) and
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
