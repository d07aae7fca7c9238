"""Core-Set selection by k-center greedy (Sener & Savarese, ICLR 2018, Alg. 1).

Repeatedly pick the candidate farthest (Euclidean) from its nearest centre, where the
centres are the labeled items plus everything picked so far. One running min-distance
vector over the candidates is kept and updated against the newest centre only, block by
block: ``O(N·D)`` per pick, never ``O(N·|S|·D)``.

References
----------
O. Sener, S. Savarese. Active Learning for Convolutional Neural Networks: A Core-Set
Approach. ICLR 2018.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.cluster import check_candidates
from mmal.select.badge import BLOCK_DOC, DEFAULT_BLOCK, PROGRESS_DOC
from mmal.select.registry import register
from mmal.pool import ScoredPool, Selection
from mmal.utils import progress_task


def kcenter_greedy(
    x,
    budget: int,
    candidates,
    centres=None,
    rng: np.random.Generator | None = None,
    *,
    block: int = DEFAULT_BLOCK,
    progress: bool = False,
    method: str = "lazy",
    max_checks: int | None = None,
):
    """k-center greedy (Sener & Savarese 2018, Alg. 1) as a pure function of arrays.

    Parameters
    ----------
    x : float array [N, D]
        Features (numpy array or memmap; read in row blocks).
    budget : int
        The result has ``min(budget, len(candidates))`` picks.
    candidates : int array [K] or bool mask [N]
        Rows that may be picked.
    centres : int array [L] or bool mask [N], optional
        Rows already covered (labeled items). When empty, the first pick is a uniformly
        random candidate (drawn from ``rng``), as in the reference.
    rng : numpy.random.Generator, optional
        Only used for the first pick when there are no centres; ``None`` = ``default_rng(0)``.
    block : int
        Rows per distance block.
    progress : bool or callable
        See :func:`mmal.utils.progress_task`.
    method : {"lazy", "full"}
        Both are exact and pick the same rows. ``"full"`` updates the running min-distance
        of every candidate against each new centre (``O(N·D)`` per pick, memory-bound).
        ``"lazy"`` (default) keeps those minima as *upper bounds* ``u_i ≥ d_i`` (distances
        only shrink as centres are added) and checks a candidate against the centres it
        has not seen only when it is the current arg-max of the bounds: once the arg-max's
        bound is exact, it is the true farthest candidate (every other ``d_j ≤ u_j ≤ u_i``),
        with the same lowest-position tie rule as ``"full"``. This is the lazy-greedy
        evaluation of Minoux (1978) applied to the covering radius.
    max_checks : int, optional
        ``"lazy"`` only: after this many single-candidate checks within one pick, refresh
        every candidate at once with blocked matrix products (the cheaper path when most
        bounds are stale, e.g. right after a random first pick). ``None`` =
        ``max(256, K // 16)``. Does not change the result.

    Returns
    -------
    picks : int64 array [B]
        Row indices in pick order.
    radius : float64 array [B]
        Euclidean distance of each pick to its nearest centre when it was picked (the
        covering radius; ``inf`` for a random first pick). Ties: lowest candidate position.
    """
    n = x.shape[0]
    if x.ndim != 2:
        raise ConfigError(f"Core-Set features must be [N, D], got shape {x.shape}")
    cand = check_candidates(budget, candidates, n)
    cen = np.zeros(0, dtype=np.int64) if centres is None else np.asarray(centres)
    if cen.dtype == bool:
        cen = np.flatnonzero(cen)
    cen = cen.astype(np.int64)
    k_total = min(int(budget), len(cand))
    picks = np.empty(k_total, dtype=np.int64)
    radius = np.full(k_total, np.nan)
    if k_total == 0:
        return picks, radius
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")

    full = len(cand) == n and bool(np.all(cand == np.arange(n)))
    blocks = [(s, min(s + block, len(cand))) for s in range(0, len(cand), block)]

    def rows_of(s, e):  # candidate positions [s, e) -> rows (a slice keeps memmaps lazy)
        return slice(s, e) if full else cand[s:e]

    sqn = np.concatenate([_block_sqnorm(x, rows_of(s, e)) for s, e in blocks])  # [K]
    d2 = np.full(len(cand), np.inf)  # running min squared distance over candidates

    def update(centre_rows: np.ndarray):
        """d2 <- min(d2, ||x_i - x_c||²) for the given centres (a block of them at once)."""
        c = np.asarray(x[centre_rows])  # [L', D]
        csq = _block_sqnorm(x, centre_rows)  # [L']
        for s, e in blocks:
            xb = x[rows_of(s, e)]  # [R, D], stays in the stored dtype
            dots = np.asarray(xb @ c.T.astype(xb.dtype, copy=False), dtype=np.float64)  # [R, L']
            nd = sqn[s:e, None] + csq[None, :] - 2.0 * dots  # [R, L']
            np.minimum(d2[s:e], nd.min(axis=1), out=d2[s:e])

    for s in range(0, len(cen), 256):  # labeled centres, 256 at a time
        update(np.sort(cen[s : s + 256]))

    if method not in ("lazy", "full"):
        raise ConfigError(f"k-center greedy: method must be 'lazy' or 'full', got {method!r}")
    if method == "lazy":
        rng = np.random.default_rng(0) if rng is None else rng
        _kcenter_lazy(x, cand, rows_of, blocks, sqn, d2, k_total, len(cen) == 0, rng, picks, radius,
                      max_checks, progress)
        return picks, radius

    with progress_task(k_total, "k-center greedy", progress) as advance:
        for k in range(k_total):
            if k == 0 and len(cen) == 0:
                rng = np.random.default_rng(0) if rng is None else rng
                pos = int(rng.integers(len(cand)))
                r = np.inf
            else:
                pos = int(np.argmax(d2))
                r = float(np.sqrt(max(d2[pos], 0.0)))
            picks[k], radius[k] = cand[pos], r
            update(np.array([cand[pos]]))
            d2[pos] = -np.inf  # never picked again
            advance()
    return picks, radius


LAZY_BLOCK = 1024  # candidates per arg-max block of the lazy variant
LAZY_WIDTH = 64  # most candidates checked together in one matrix product


def _top_positions(ubb: np.ndarray, bmax: np.ndarray, t: int) -> np.ndarray:
    """Positions of the ``t`` largest entries of ``ubb`` ([nb, B] view), using block maxima."""
    if t == 1:
        b = int(np.argmax(bmax))
        return np.array([b * ubb.shape[1] + int(np.argmax(ubb[b]))])
    nb, bs = ubb.shape
    tb = np.arange(nb) if nb <= t else np.argpartition(-bmax, t - 1)[:t]  # the top t lie in these blocks
    vals = ubb[tb].ravel()  # [t·B]
    top = np.argpartition(-vals, t - 1)[:t] if len(vals) > t else np.arange(len(vals))
    return tb[top // bs] * bs + top % bs


def _kcenter_lazy(x, cand, rows_of, blocks, sqn, d2, k_total, random_first, rng, picks, radius,
                  max_checks, progress):
    """Lazy exact k-center greedy (see :func:`kcenter_greedy`, ``method="lazy"``); fills ``picks``/``radius``."""
    n_c = len(cand)
    dim = x.shape[1]
    if max_checks is None:
        max_checks = max(256, n_c // 16)
    cx = np.empty((k_total, dim), dtype=np.asarray(x[cand[:1]]).dtype)  # centres picked here [B, D]
    csq = np.empty(k_total)  # their squared norms
    seen = np.zeros(n_c, dtype=np.int64)  # centres (of those picked here) already folded into ub[i]
    nb = -(-n_c // LAZY_BLOCK)
    ub = np.full(nb * LAZY_BLOCK, -np.inf)  # upper bounds of the squared min-distance, padded
    ub[:n_c] = d2
    ubb = ub.reshape(nb, LAZY_BLOCK)  # view
    bmax = ubb.max(axis=1)  # [nb]

    def refresh_all(k):
        """Fold centres [min(seen), k) into every bound with blocked matrix products."""
        c0 = int(seen.min())
        for s, e in blocks:
            xb = x[rows_of(s, e)]  # [R, D]
            best = ub[s:e].copy()
            for c in range(c0, k, 1024):
                ce = min(c + 1024, k)
                dots = np.asarray(xb @ cx[c:ce].T.astype(xb.dtype, copy=False), dtype=np.float64)  # [R, L]
                nd = sqn[s:e, None] + csq[None, c:ce] - 2.0 * dots
                np.minimum(best, nd.min(axis=1), out=best)
            keep = ub[s:e] != -np.inf  # picked rows stay out
            ub[s:e][keep] = best[keep]
        seen[:] = k
        bmax[:] = ubb.max(axis=1)

    with progress_task(k_total, "k-center greedy (lazy)", progress) as advance:
        for k in range(k_total):
            if k == 0 and random_first:
                pos = int(rng.integers(n_c))
                r = np.inf
            else:
                checks, width = 0, 1
                while True:
                    b = int(np.argmax(bmax))
                    pos = b * LAZY_BLOCK + int(np.argmax(ubb[b]))
                    if seen[pos] == k:
                        break
                    if checks >= max_checks or not np.isfinite(ub[pos]):
                        refresh_all(k)
                        continue
                    rows = _top_positions(ubb, bmax, width)  # the `width` largest bounds (pos among them)
                    rows = np.union1d(rows[(seen[rows] < k) & np.isfinite(ub[rows])], [pos])
                    c0 = int(seen[rows].min())
                    xr = np.asarray(x[cand[rows]])  # [T, D]
                    dots = np.asarray(xr @ cx[c0:k].T.astype(xr.dtype, copy=False), dtype=np.float64)  # [T, L]
                    nd = sqn[rows, None] + csq[None, c0:k] - 2.0 * dots  # re-folding a seen centre is a no-op
                    ub[rows] = np.minimum(ub[rows], nd.min(axis=1))
                    seen[rows] = k
                    for bb in np.unique(rows // LAZY_BLOCK):
                        bmax[bb] = ubb[bb].max()
                    checks += len(rows)
                    width = min(2 * width, LAZY_WIDTH)
                r = float(np.sqrt(max(ub[pos], 0.0)))
            picks[k], radius[k] = cand[pos], r
            cx[k] = np.asarray(x[cand[pos]])
            csq[k] = sqn[pos]
            ub[pos] = -np.inf  # never picked again
            bmax[pos // LAZY_BLOCK] = ubb[pos // LAZY_BLOCK].max()
            advance()


def _block_sqnorm(x, rows) -> np.ndarray:
    xb = np.asarray(x[rows], dtype=np.float64)  # [R, D]
    return np.einsum("nd,nd->n", xb, xb)


def labeled_centres(pool: ScoredPool, labeled_mask) -> np.ndarray:
    """Rows that are labeled **and available**: the Core-Set centres.

    Sener & Savarese cover the unlabeled pool with balls around the *labeled training set*
    ``s0``. ``labeled_mask`` also marks rows that are merely unselectable (in ``simulate``,
    items without a gold label; in a workspace, labeled test items), so a centre must be
    in ``labeled_mask``, carry a known label (``pool.labels >= 0`` when the pool has labels)
    and not be a test item (``pool.split != "test"``).
    """
    if labeled_mask is None:
        return np.zeros(0, dtype=np.int64)
    m = np.asarray(labeled_mask, dtype=bool).copy()
    if pool.labels is not None:
        m &= np.asarray(pool.labels) >= 0
    if pool.split is not None:
        m &= pool.split != "test"
    return np.flatnonzero(m)


@register("coreset", cold_start=True, params={
    "feature": "'embedding' (pool.embedding, default) or 'penultimate' (pool.extras['penultimate'])",
    "block": BLOCK_DOC, "progress": PROGRESS_DOC,
    "method": "'lazy' (default) or 'full': both exact, same picks; lazy checks only arg-max candidates"},
    needs=("embedding",))
def coreset(
    pool: ScoredPool,
    budget: int,
    *,
    labeled_mask=None,
    rng: np.random.Generator | None = None,
    feature: str = "embedding",
    block: int = DEFAULT_BLOCK,
    progress: bool = False,
    method: str = "lazy",
) -> Selection:
    """Core-Set strategy: k-center greedy over pool features (Sener & Savarese 2018).

    Parameters
    ----------
    pool : ScoredPool
    budget : int
    labeled_mask : bool array [N], optional
        Never selected. The initial centres are the labeled, available items among them
        (:func:`labeled_centres`: known label, not a test item); ``split == "test"`` items
        are never selected nor centres.
    rng : numpy.random.Generator
        For the random first pick when nothing is labeled; ``None`` = ``default_rng(0)``.
    feature : {"embedding", "penultimate"}
        ``pool.embedding`` (default) or ``pool.extras["penultimate"]``.
    block, progress, method :
        See :func:`kcenter_greedy`.

    Returns
    -------
    Selection
        Ids in pick order; ``score`` = covering radius at pick time.
    """
    if feature == "embedding":
        if pool.embedding is None:
            raise ConfigError("coreset with feature='embedding' needs pool.embedding ([N, D])")
        x = pool.embedding
    elif feature == "penultimate":
        if "penultimate" not in pool.extras:
            raise ConfigError("coreset with feature='penultimate' needs pool.extras['penultimate'] ([N, D])")
        x = pool.extras["penultimate"]
    else:
        raise ConfigError(f"coreset: feature must be 'embedding' or 'penultimate', got '{feature}'")
    rng = np.random.default_rng(0) if rng is None else rng
    cand = np.flatnonzero(pool.selectable(labeled_mask))
    centres = labeled_centres(pool, labeled_mask)
    picks, radius = kcenter_greedy(x, budget, cand, centres, rng, block=block, progress=progress,
                                   method=method)
    return Selection(
        ids=pool.ids[picks], strategy="coreset", score=radius, reason=None,
        info={"n_candidates": int(len(cand)), "n_centres": int(len(centres))},
    )
