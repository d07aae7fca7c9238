"""TypiClust (Hacohen, Dekel, Weinshall, ICML 2022; TPC_RP with given features), METHODS F.

Typicality = 1 / mean distance to the ``k_nn`` nearest neighbours (their eq. 1); per k-means
cluster, uncovered by labels and largest first, the most typical member.
"""

from __future__ import annotations

import numpy as np

from mmal.pool import ScoredPool, Selection
from mmal.select.api import empty_selection
from mmal.select.registry import register
from mmal.select.coldstart import (FEATURES_DOC, _candidates, _fit_kmeans, _selection, concat_rows, pool_features)


# ---------------------------------------------------------------------------------------
# TypiClust
# ---------------------------------------------------------------------------------------
class TypicalityCache:
    """A cluster's neighbour lists, kept while members are removed (TypiClust's repeated visits).

    Built once from the cluster's current members: each member's ``length`` nearest other
    members with their squared distances, by FAISS in float32. :meth:`mean_sqdist` for a
    later, smaller member set uses each row's first ``k`` listed neighbours still in the set
    (``None`` = rebuild: some row has fewer than ``k`` of them left). These float32 means
    only screen: :func:`typiclust` recomputes the rows near the best one in float64 with
    :func:`typicality` (``rows=``) and decides with those, so the pick is the float64 one.
    """

    def __init__(self, x: np.ndarray, members: np.ndarray, length: int):
        import faiss

        self.members = np.asarray(members, np.int64)
        xm = np.ascontiguousarray(x[self.members], dtype=np.float32)
        m = len(xm)
        self.length = length = int(min(length, m - 1))
        index = faiss.IndexFlatL2(xm.shape[1])
        index.add(xm)
        d2, nb = index.search(xm, min(m, length + 1))  # [m, L+1] ascending, usually the row itself first
        own = nb == np.arange(m)[:, None]
        no_own = ~own.any(1)
        own[no_own, -1] = True  # a row not in its own list (duplicates): drop the farthest instead
        self.nb = nb[~own].reshape(m, length)
        self.d2 = np.maximum(d2[~own].reshape(m, length), 0.0).astype(np.float64)

    def mean_sqdist(self, members: np.ndarray, k: int):
        """Mean squared distance to the k nearest of ``members`` (a subset of the build's), or ``None``."""
        local = np.searchsorted(self.members, members)
        alive = np.zeros(len(self.members), bool)
        alive[local] = True
        valid = alive[self.nb[local]]  # [n, L]
        take = valid & (np.cumsum(valid, axis=1) <= k)
        if (take.sum(1) < k).any():
            return None
        return (self.d2[local] * take).sum(1) / k


def typicality(x: np.ndarray, k: int, block: int = 512, rows=None) -> np.ndarray:
    """``1 / (mean squared-L2 distance to the k nearest other rows + 1e-5)`` (TypiClust ref.).

    The reference code uses faiss ``IndexFlatL2`` distances, which are squared. ``[n, D] -> [n]``,
    or ``[len(rows)]`` for the given ``rows`` only (their neighbours are still all of ``x``);
    float64; distances are computed ``block`` rows at a time (memory ``block x n``).
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    k = max(1, min(k, n - 1))
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    out = np.empty(len(rows))
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        d2 = np.maximum(sq[r, None] + sq[None, :] - 2.0 * x[r] @ x.T, 0.0)  # [R, n]
        d2[np.arange(len(r)), r] = np.inf  # not its own neighbour
        out[s:s + block] = 1.0 / (np.partition(d2, k - 1, axis=1)[:, :k].mean(1) + 1e-5)
    return out


@register("typiclust", cold_start=True, params={"features": FEATURES_DOC, "k_nn": "neighbours for typicality (20)", "min_cluster_size": "clusters this small are skipped (5)", "max_clusters": "cap on the number of clusters (500)", "iters": "Lloyd iterations (20)", "fit_sample": "fit k-means on this many random items at most; None = all", "cache_min": "clusters with more free members than this keep a neighbour cache (256)", "shortlist_extra": "cached neighbours per member beyond k_nn (8)", "screen_tol": "float32 screen margin on the mean squared distance, times the largest squared norm (1e-4)"})
def typiclust(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
              k_nn: int = 20, min_cluster_size: int = 5, max_clusters: int = 500, iters: int = 20,
              fit_sample: int | None = 100000, cache_min: int = 256, shortlist_extra: int = 8,
              screen_tol: float = 1e-4) -> Selection:
    """TypiClust (Hacohen et al. 2022, TPC_RP on given features), as the reference code does it.

    k-means with ``min(|L| + B, max_clusters)`` clusters over candidates and labeled items;
    clusters of <= ``min_cluster_size`` items are skipped (unless all are); the rest are
    visited by fewest labeled items, then largest size, cyclically; each visit picks the
    member of highest :func:`typicality` with ``k = min(k_nn, n_c // 2)`` among its members
    still unlabeled and unpicked. Score = typicality; reason = ``cluster c``.

    k-means is fitted on at most ``fit_sample`` random rows, then every row is assigned to
    the centres (the reference code fits sklearn's ``MiniBatchKMeans`` when there are more
    than 50 clusters; it does not fit on all rows either).

    Clusters of more than ``cache_min`` free members keep a :class:`TypicalityCache`
    (each member's ``k_nn + shortlist_extra`` nearest members, float32, built once): a
    visit screens with it and recomputes in float64 only the members whose float32 mean
    squared distance is within ``screen_tol`` (times the largest squared norm; float32
    errors are ~1e-6 of it) of the best, so the pick is the float64 argmax; smaller
    clusters are computed directly.
    """
    cand, lab, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection("typiclust", {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    rng = np.random.default_rng(0) if rng is None else rng
    rel = np.union1d(cand, lab) if len(lab) else cand  # sorted rows: candidates and labeled
    x = concat_rows(feats, None if len(rel) == len(pool.ids) else rel)
    k = min(len(lab) + b, max_clusters, len(rel))
    _, assign, _ = _fit_kmeans(x, k, rng, iters, fit_sample)
    is_cand = np.isin(rel, cand) if len(lab) else np.ones(len(rel), bool)
    sizes = np.bincount(assign, minlength=k)
    lab_counts = np.bincount(assign[~is_cand], minlength=k)
    order = [c for c in np.lexsort((-sizes, lab_counts)) if sizes[c] > 0]
    big = [c for c in order if sizes[c] > min_cluster_size]
    order = big or order
    by_cluster = np.argsort(assign, kind="stable")  # members of each cluster, ascending rows
    starts = np.concatenate([[0], np.cumsum(sizes)])
    free = is_cand.copy()  # members that may still be picked
    cache = {}  # cluster -> TypicalityCache of its free members
    sqmax = float(np.max(np.einsum("nd,nd->n", x, x))) if len(x) else 1.0  # scale of float32 distance errors
    picks, scores, reasons = [], [], []
    i = 0
    while len(picks) < b:
        c = order[i % len(order)]
        i += 1
        all_members = by_cluster[starts[c]:starts[c + 1]]
        members = all_members[free[all_members]]
        if len(members) == 0:
            if not any(free[by_cluster[starts[cc]:starts[cc + 1]]].any() for cc in order):  # skipped clusters only
                order = [cc for cc in np.lexsort((-sizes, lab_counts))
                         if free[by_cluster[starts[cc]:starts[cc + 1]]].any()]
                i = 0
            continue
        kc = min(k_nn, len(members) // 2)
        if len(members) <= 1:
            t = np.ones(1)
        elif len(members) <= cache_min:
            t = typicality(x[members], kc)
        else:
            tc = cache.get(c)
            msd = None if tc is None else tc.mean_sqdist(members, kc)
            if msd is None:  # no cache yet, or a row lost too many neighbours: rebuild from the free members
                cache[c] = tc = TypicalityCache(x, members, kc + shortlist_extra)
                msd = tc.mean_sqdist(members, kc)
            # float32 screen, float64 decision: only rows within screen_tol of the best can win
            near = np.flatnonzero(msd <= msd.min() + screen_tol * max(1.0, float(sqmax)))
            t = np.full(len(members), -np.inf)
            t[near] = typicality(x[members], kc, rows=near)
        j = int(np.argmax(t))
        picks.append(int(members[j]))
        scores.append(float(t[j]))
        reasons.append(f"cluster {int(c)}")
        free[members[j]] = False
    rows = rel[np.array(picks, np.int64)]
    return _selection(pool, "typiclust", rows, scores, reasons,
                      {"features": source, "n_clusters": int(k), "n_clusters_used": int(len(big) or len(order))}, cand)
