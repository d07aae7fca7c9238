"""ProbCover (Yehuda, Dekel, Hacohen, Weinshall, NeurIPS 2022), METHODS F.

Greedy max coverage of delta-balls; delta by the purity rule (the largest delta whose
balls are >= alpha pure under k-means pseudo-labels).
"""

from __future__ import annotations

import math

import numpy as np

from mmal.cluster import kmeans
from mmal.pool import ScoredPool, Selection
from mmal.select.api import add_warning, empty_selection
from mmal.select.registry import register
from mmal.select.coldstart import (FEATURES_DOC, _candidates, _selection, concat_rows, pool_features)


# ---------------------------------------------------------------------------------------
# ProbCover
# ---------------------------------------------------------------------------------------
def purity_delta(x: np.ndarray, pseudo: np.ndarray, alpha: float = 0.95, block: int = 4096) -> tuple[float, float]:
    """Largest delta whose purity is >= alpha (ProbCover's rule), exactly.

    A row's delta-ball ``{j : ||x_i - x_j|| < delta}`` is pure when all its members share
    the row's pseudo-label, i.e. when ``delta <= d_i``, the distance from row i to the
    nearest row of another pseudo-label. purity(delta) = mean(d_i >= delta), so the largest
    delta with purity >= alpha is the ``floor((1 - alpha) N)``-th smallest d_i.
    Returns ``(delta, purity(delta))``.
    """
    x = np.asarray(x, np.float64)  # exact enough to rank distances
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    d_other = np.full(n, np.inf)
    for s in range(0, n, block):
        dd = sq[s:s + block, None] + sq[None, :] - 2.0 * (x[s:s + block] @ x.T)  # [R, N]
        dd[pseudo[s:s + block, None] == pseudo[None, :]] = np.inf
        d_other[s:s + block] = np.sqrt(np.maximum(dd.min(1), 0.0))
    srt = np.sort(d_other)
    m = int(math.floor((1.0 - alpha) * n))
    delta = float(srt[min(m, n - 1)])
    if not np.isfinite(delta):  # a single pseudo-class: every ball is pure
        delta = float(np.sqrt(max(sq.max() * 4.0, 0.0))) or 1.0
    return delta, float(np.mean(d_other >= delta))


def delta_ball_graph(x: np.ndarray, delta: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency of ``||x_i - x_j|| < delta`` (self loops included): ``(indptr [N+1], indices)``."""
    x = np.asarray(x, np.float32)
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    ind, counts = [], []
    for s in range(0, n, block):
        dd = sq[s:s + block, None] + sq[None, :] - 2.0 * (x[s:s + block] @ x.T)
        r, c = np.nonzero(dd < delta * delta)
        counts.append(np.bincount(r, minlength=min(block, n - s)))
        ind.append(c.astype(np.int64))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return indptr, np.concatenate(ind) if ind else np.zeros(0, np.int64)


def max_coverage(indptr, indices, selectable: np.ndarray, covered: np.ndarray, budget: int) -> tuple[list, list]:
    """Greedy max coverage on a symmetric ball graph (ProbCover Alg. 1).

    Repeatedly pick the selectable row whose ball holds the most uncovered rows (ties: the
    lower row), then mark its ball covered. Returns ``(picks, newly_covered_counts)``;
    stops early when no ball covers anything new (the caller fills the rest).
    """
    n = len(indptr) - 1
    covered = covered.copy()
    deg = np.add.reduceat(~covered[indices], indptr[:-1]) if len(indices) else np.zeros(n, np.int64)
    deg = np.where(np.diff(indptr) > 0, deg, 0).astype(np.int64)
    deg[~selectable] = -1
    picks, gains = [], []
    for _ in range(budget):
        cur = int(np.argmax(deg))
        if deg[cur] <= 0:
            break
        picks.append(cur)
        gains.append(int(deg[cur]))
        nb = indices[indptr[cur]:indptr[cur + 1]]
        new = nb[~covered[nb]]
        covered[new] = True
        if len(new):  # every ball containing a newly covered y loses one (symmetric graph): one pass
            lo, hi = indptr[new], indptr[new + 1]
            owners = np.repeat(np.arange(len(new)), hi - lo)
            flat = indices[lo[owners] + (np.arange(len(owners)) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo))]
            deg -= np.bincount(flat, minlength=n)
        deg[cur] = -1
        deg[~selectable] = -1
    return picks, gains


@register("probcover", cold_start=True, params={"features": FEATURES_DOC, "alpha": "purity threshold of the delta rule (0.95)", "n_pseudo": "k-means pseudo-label clusters for the purity rule (default: the pool's number of classes, probs.shape[1])", "delta": "ball radius; None = chosen by the purity rule (recorded in info)", "delta_sample": "items used to choose delta; None = all", "iters": "Lloyd iterations (20)", "graph_max": "largest number of items the delta-ball graph is built on; above it, all labeled items and a uniform random sample of the candidates (50000; None = all)"})
def probcover(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
              alpha: float = 0.95, n_pseudo: int | None = None, delta: float | None = None,
              delta_sample: int | None = 20000, iters: int = 20, graph_max: int | None = 50000) -> Selection:
    """ProbCover (Yehuda et al. 2022): greedy max coverage of delta-balls.

    Over candidates and labeled items (labeled balls start covered), on the concatenated
    unit-norm representation with Euclidean distance. ``delta`` (``None`` = the purity rule,
    :func:`purity_delta`, on k-means pseudo-labels with ``n_pseudo`` clusters, default the
    pool's number of classes, purity threshold ``alpha`` = 0.95, computed on at most
    ``delta_sample`` random rows) is recorded in ``info``. When every point is covered
    before B picks, the rest are drawn at random (``info["n_random_fill"]``; the paper does
    not say). Score = newly covered count (NaN for random fill).

    The graph has N² distances: 50k items take about 30 s on 2 cores, 1M would take hours.
    Above ``graph_max`` items the graph (and the pick) is restricted to all labeled items
    and a uniform random sample of ``max(B, graph_max - |L|)`` candidates, so coverage is
    measured on a sample of the pool (``info["graph_items"]``, ``info["graph_sampled"]``).
    The paper builds the graph on the whole pool with a GPU; it does not say what to do
    past what fits.
    """
    cand, lab, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection("probcover", {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    rng = np.random.default_rng(0) if rng is None else rng
    rel = np.union1d(cand, lab)
    sampled = graph_max is not None and len(rel) > int(graph_max)
    if sampled:
        n_keep = min(len(cand), max(b, int(graph_max) - len(lab)))
        rel = np.union1d(np.sort(rng.choice(cand, size=n_keep, replace=False)), lab)
    x = concat_rows(feats, None if len(rel) == len(pool.ids) else rel)
    info = {"features": source, "alpha": alpha, "graph_items": int(len(rel)), "graph_sampled": bool(sampled)}
    if delta is None:
        k = int(n_pseudo or pool.n_classes)
        sub = np.arange(len(x)) if delta_sample is None or len(x) <= delta_sample else \
            np.sort(rng.choice(len(x), size=delta_sample, replace=False))
        _, pseudo, _ = kmeans(x[sub], min(max(k, 1), len(sub)), iters=iters, seed=int(rng.integers(2**31)))
        delta, pur = purity_delta(x[sub], pseudo, alpha)
        info.update({"delta_rule": "purity", "n_pseudo": k, "purity": pur, "delta_sample": int(len(sub))})
    else:
        info["delta_rule"] = "given"
    delta = max(float(delta), 1e-6)  # balls must hold at least their centre
    info["delta"] = delta
    indptr, indices = delta_ball_graph(x, delta)
    is_cand = np.isin(rel, cand)
    covered = np.zeros(len(rel), bool)
    for r in np.flatnonzero(~is_cand):
        covered[indices[indptr[r]:indptr[r + 1]]] = True
    picks, gains = max_coverage(indptr, indices, is_cand, covered, b)
    score = [float(g) for g in gains]
    reason = ["coverage"] * len(picks)
    n_fill = b - len(picks)
    if n_fill:
        rest = np.setdiff1d(np.flatnonzero(is_cand), picks)
        fill = rng.choice(rest, size=n_fill, replace=False)
        picks += [int(f) for f in fill]
        score += [math.nan] * n_fill
        reason += ["random fill (all covered)"] * n_fill
    covered_final = covered.copy()
    for p in picks:
        covered_final[indices[indptr[p]:indptr[p + 1]]] = True
    info.update({"n_random_fill": int(n_fill), "coverage": float(covered_final.mean()),
                 "mean_degree": float(np.diff(indptr).mean())})
    sel = _selection(pool, "probcover", rel[np.array(picks, np.int64)], score, reason, info, cand)
    if n_fill:
        add_warning(sel, f"strategy 'probcover': every item was covered after {b - n_fill} picks (delta "
                         f"{delta:.4g}); the other {n_fill} of the {b} were drawn at random")
    if sampled:
        add_warning(sel, f"strategy 'probcover': the delta-ball graph and the picks use {len(rel)} of the "
                         f"{len(np.union1d(cand, lab))} items (graph_max={graph_max}: all labeled items and a random "
                         "sample of the candidates)")
    return sel
