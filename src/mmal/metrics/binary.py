"""Metrics of a binary task on the positive class (000 §4.3; METHODS D "Binary").

000's classifiers (clickbait, unsafe content) are binary with rare positives; its report is
AUC, F1 and recall at precision P (R@P40 … R@P90) on the positive class, plus the max
Beta variance (eq. 12). Headline: R@P80. Everything is computed on the positive-class
score ``s = p_1`` (class index 1 is the positive class).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mmal.errors import ConfigError
from mmal.metrics.core import (DEFAULT_PRECISIONS, NAN, beta_variance, check_probs, operating_points,
                               recall_at_precision_points)


def average_precision_score(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import average_precision_score as f

    return f(*args, **kwargs)


def f1_score(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import f1_score as f

    return f(*args, **kwargs)


def roc_auc_score(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import roc_auc_score as f

    return f(*args, **kwargs)

HEADLINE = "r_at_p80"


def positive_score(probs) -> np.ndarray:
    """``p_1`` of ``probs [N, 2]`` (or a score ``[N]`` as given) -> ``[N]`` float64."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] != 2:
            raise ConfigError(f"binary metrics need probs [N, 2]; got shape {p.shape}")
        return p[:, 1]
    if p.ndim != 1:
        raise ConfigError(f"binary metrics need probs [N, 2] or a score [N]; got shape {p.shape}")
    return p


def binary_metrics(y_true, probs, *, threshold: float = 0.5, precisions: Sequence[int] = DEFAULT_PRECISIONS,
                   beta_points: str = "r_at_p") -> dict:
    """All binary metrics of one prediction set, on the positive class 1.

    Parameters
    ----------
    y_true : labels ``[N]`` in {0, 1}.
    probs : ``[N, 2]`` class probabilities (or the positive score ``[N]``).
    threshold : F1 and accuracy predict positive when ``p_1 >= threshold`` (0.5; 000 states no
        threshold).
    precisions : levels P (in %) of the recall-at-precision metrics.
    beta_points : operating points of the max Beta variance (000 eq. 12): ``"r_at_p"``
        (default, the R@P operating points) or ``"all"`` (every distinct threshold).

    Returns
    -------
    dict: ``n``, ``n_positive``, ``auc``, ``average_precision``, ``f1``, ``accuracy``,
    ``r_at_p40`` … ``r_at_p90`` (NaN where precision P is never reached, with
    ``r_at_p_reachable {"80": bool}``), ``max_beta_variance``. Undefined values (one class
    only) are NaN.
    """
    s = positive_score(probs)
    y = np.asarray(y_true).reshape(-1)
    if len(y) != len(s):
        raise ConfigError(f"binary metrics: {len(y)} labels but {len(s)} predictions")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ConfigError(f"binary metrics: labels must be 0 or 1; got values {sorted(set(np.unique(y).tolist()))[:5]}")
    if not np.isfinite(s).all():
        raise ConfigError("binary metrics: probs contain NaN or inf")
    if beta_points not in ("r_at_p", "all"):
        raise ConfigError(f"beta_points = '{beta_points}': expected 'r_at_p' or 'all'")
    yb = y.astype(bool)
    n_pos = int(yb.sum())
    both = 0 < n_pos < len(yb)
    out: dict = {"n": int(len(y)), "n_positive": n_pos}
    out["auc"] = float(roc_auc_score(yb, s)) if both else NAN
    out["average_precision"] = float(average_precision_score(yb, s)) if n_pos else NAN
    pred = s >= threshold
    out["f1"] = float(f1_score(yb, pred, zero_division=0)) if n_pos else NAN
    out["accuracy"] = float((pred == yb).mean()) if len(y) else NAN
    rp = recall_at_precision_points(yb, s, precisions)
    for k, (recall, *_rest) in rp.items():
        out[f"r_at_p{k}"] = recall
    out["r_at_p_reachable"] = {k: bool(v[3]) for k, v in rp.items()}
    if not n_pos:
        out["max_beta_variance"] = NAN
    elif beta_points == "r_at_p":
        pts = [(tp, fp) for _, tp, fp, reached in rp.values() if reached]
        out["max_beta_variance"] = float(max(beta_variance(tp, fp) for tp, fp in pts)) if pts else NAN
    else:
        _, tp, fp = operating_points(yb, s)
        out["max_beta_variance"] = float(beta_variance(tp, fp).max())
    return out


__all__ = ["binary_metrics", "positive_score", "HEADLINE", "check_probs"]
