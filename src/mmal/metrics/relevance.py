"""Metrics of the relevance task (ordered levels 0 bad, 1 less, 2 good, 3 excellent; 003 §4.2).

AUC of {0, 1} against {2, 3}, Spearman and Pearson of the score against the level, and
NDCG@k per query. The score is the model's relevance score (003 eq. 9: ``r = p1 + 2 p2 +
3 p3`` for a level distribution). Headline: Spearman.
"""

from __future__ import annotations

import warnings

import numpy as np

from mmal.errors import ConfigError
from mmal.metrics.core import NAN, expected_label


def roc_auc_score(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import roc_auc_score as f

    return f(*args, **kwargs)


def pearsonr(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from scipy.stats import pearsonr as f

    return f(*args, **kwargs)


def spearmanr(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from scipy.stats import spearmanr as f

    return f(*args, **kwargs)

HEADLINE = "spearman"
N_LEVELS = 4


def ndcg_at_k(levels, scores, k: int = 10, gain: str = "exp") -> float:
    """NDCG@k of one query's candidates.

    ``DCG@k = sum_{i<k} g(l_(i)) / log2(i + 2)`` over candidates sorted by descending score
    (ties broken by input order, i.e. a stable sort), ``g(l) = 2^l - 1`` (``gain="exp"``,
    default) or ``l`` (``"linear"``); normalised by the DCG of the ideal order. NaN when the
    ideal DCG is 0 (no relevant candidate).
    """
    lv = np.asarray(levels, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if gain not in ("exp", "linear"):
        raise ConfigError(f"gain = {gain!r}: expected 'exp' or 'linear'")
    g = (2.0 ** lv - 1.0) if gain == "exp" else lv
    order = np.argsort(-sc, kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, len(lv) + 2))
    dcg = float((g[order] * disc[: len(order)]).sum())
    ideal = np.sort(g)[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else NAN


def relevance_metrics(levels, scores=None, *, probs=None, query_ids=None, k: int = 10) -> dict:
    """AUC ({0,1} negative, {2,3} positive), Spearman, Pearson, mean NDCG@k per query.

    Parameters
    ----------
    levels : int levels ``[N]`` in 0..3.
    scores : relevance scores ``[N]``; default ``E[y]`` of ``probs`` (003 eq. 9).
    probs : optional level distribution ``[N, 4]``; adds ``accuracy`` (argmax level) and
        ``expected_level_error`` (mean ``|E[y] - y|``, 000 eq. 11 on ordered levels).
    query_ids : ``[N]`` query of each pair; NDCG is averaged over queries with at least one
        candidate of level > 0 (``n_queries`` counts them). Without it, no NDCG.

    Undefined values (one class only, constant scores) are NaN.
    """
    y = np.asarray(levels, dtype=np.int64).reshape(-1)
    if len(y) and (y.min() < 0 or y.max() >= N_LEVELS):
        raise ConfigError(f"relevance levels must lie in 0..3; got range [{y.min()}, {y.max()}]")
    if scores is None:
        if probs is None:
            raise ConfigError("relevance_metrics: give scores or probs")
        scores = expected_label(probs)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(y):
        raise ConfigError(f"relevance_metrics: {len(y)} levels but {len(s)} scores")
    if not np.isfinite(s).all():
        raise ConfigError("relevance_metrics: scores contain NaN or inf")
    out: dict = {"n": int(len(y))}
    yb = y >= 2
    out["auc"] = float(roc_auc_score(yb, s)) if 0 < yb.sum() < len(yb) else NAN
    const = len(y) < 2 or np.ptp(s) == 0 or np.ptp(y) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["spearman"] = NAN if const else float(spearmanr(y, s).statistic)
        out["pearson"] = NAN if const else float(pearsonr(y, s).statistic)
    if query_ids is not None:
        q = np.asarray(query_ids, dtype=object)
        vals = []
        for key in dict.fromkeys(q.tolist()):
            m = q == key
            v = ndcg_at_k(y[m], s[m], k)
            if np.isfinite(v):
                vals.append(v)
        out[f"ndcg@{k}"] = float(np.mean(vals)) if vals else NAN
        out["n_queries"] = len(vals)
    if probs is not None:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (len(y), N_LEVELS):
            raise ConfigError(f"relevance_metrics: probs must be [{len(y)}, 4], got {p.shape}")
        out["accuracy"] = float((p.argmax(1) == y).mean()) if len(y) else NAN
        out["expected_level_error"] = float(np.abs(expected_label(p) - y).mean()) if len(y) else NAN
    return out


__all__ = ["relevance_metrics", "ndcg_at_k", "HEADLINE", "N_LEVELS"]
