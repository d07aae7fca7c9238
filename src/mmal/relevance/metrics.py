"""Relevance metrics: AUC ({0,1} vs {2,3}), Spearman, Pearson (003 §4.2), NDCG@k per query.

Pure numpy/scipy functions of (levels, scores, query ids).
"""

from __future__ import annotations

import numpy as np


def ndcg_at_k(levels, scores, k: int = 10, gain: str = "exp") -> float:
    """NDCG@k of one query's candidates.

    ``DCG@k = sum_{i<k} g(l_(i)) / log2(i + 2)`` over candidates sorted by descending score
    (ties broken by input order, i.e. a stable sort), ``g(l) = 2^l - 1`` (``gain="exp"``,
    default) or ``l`` (``"linear"``); normalised by the DCG of the ideal order. Returns NaN
    when the ideal DCG is 0 (no relevant candidate).
    """
    lv = np.asarray(levels, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    g = (2.0 ** lv - 1.0) if gain == "exp" else lv
    order = np.argsort(-sc, kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, len(lv) + 2))
    dcg = float((g[order] * disc[: len(order)]).sum())
    ideal = np.sort(g)[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else float("nan")


def relevance_metrics(levels, scores, query_ids=None, k: int = 10) -> dict:
    """AUC ({0,1} negative, {2,3} positive), Spearman, Pearson and mean NDCG@k per query.

    NDCG is averaged over queries with at least one candidate of level > 0 (``n_queries``
    counts them). Metrics that are undefined (one class only, constant scores) are NaN.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import roc_auc_score

    y = np.asarray(levels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    out = {"n": int(len(y))}
    yb = (y >= 2).astype(int)
    out["auc"] = float(roc_auc_score(yb, s)) if 0 < yb.sum() < len(yb) else float("nan")
    const = np.ptp(s) == 0 or np.ptp(y) == 0
    out["spearman"] = float("nan") if const else float(spearmanr(y, s).statistic)
    out["pearson"] = float("nan") if const else float(pearsonr(y, s).statistic)
    if query_ids is not None:
        q = np.asarray(query_ids)
        vals = []
        for key in dict.fromkeys(q.tolist()):
            m = q == key
            v = ndcg_at_k(y[m], s[m], k)
            if np.isfinite(v):
                vals.append(v)
        out[f"ndcg@{k}"] = float(np.mean(vals)) if vals else float("nan")
        out["n_queries"] = len(vals)
    return out
