"""``kmeans`` cold start (002 §4.3.2): the item nearest each of B k-means centres.

The k-means is :func:`mmal.cluster.kmeans_sampled` (the seeding and Lloyd steps MMSSL's
prototypes use).
"""

from __future__ import annotations

import numpy as np

from mmal.pool import ScoredPool, Selection
from mmal.select.api import empty_selection
from mmal.select.registry import register
from mmal.select.activeft import greedy_unique_pick
from mmal.select.coldstart import (FEATURES_DOC, _candidates, _fit_kmeans, _selection, concat_rows, pool_features)


@register("kmeans", cold_start=True, params={"features": FEATURES_DOC, "iters": "Lloyd iterations (20)", "fit_sample": "fit k-means on this many random candidates at most; None = all"})
def kmeans_centres(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
                   iters: int = 20, fit_sample: int | None = 100000) -> Selection:
    """K-means with B clusters over the concatenated representation; per centre the nearest item.

    002 §4.3.2 ("K-means"). Centres are taken in index order; each takes its nearest
    candidate not yet taken (so exactly B unique ids). ``fit_sample``: fit on a random
    subsample of that many candidates when there are more (then one assignment pass).
    Score = minus the Euclidean distance of the pick to its centre.
    """
    cand, _, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection("kmeans", {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    rng = np.random.default_rng(0) if rng is None else rng
    x = concat_rows(feats, None if len(cand) == len(pool.ids) else cand)
    cen, _, _ = _fit_kmeans(x, b, rng, iters, fit_sample, assign_all=False)  # only the centres are used
    # nearest unique candidate per centre: cosine similarity to the normalised centre is not
    # the same as Euclidean distance for non-unit centres, so rank by -||x - c||^2 directly
    # (= 2 x.c - ||c||^2 - 1 for unit x): feed [x, 1] . [2c, -||c||^2] to the greedy picker.
    xa = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1)
    ca = np.concatenate([2 * cen, -np.einsum("kd,kd->k", cen, cen)[:, None]], 1).astype(np.float32)
    rows, sim = greedy_unique_pick([xa], [ca])
    dist = np.sqrt(np.maximum(1.0 - sim, 0.0))  # ||x - c||^2 = 1 - (2 x.c - ||c||^2)
    return _selection(pool, "kmeans", cand[rows], -dist, [f"centre {j}" for j in range(len(rows))],
                      {"features": source, "n_clusters": int(b)}, cand)
