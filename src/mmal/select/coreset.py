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
from mmal.select.badge import BLOCK_DOC, DEFAULT_BLOCK, PROGRESS_DOC, _check_common
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
    cand = _check_common(budget, candidates, n)
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


def _block_sqnorm(x, rows) -> np.ndarray:
    xb = np.asarray(x[rows], dtype=np.float64)  # [R, D]
    return np.einsum("nd,nd->n", xb, xb)


def labeled_centres(pool: ScoredPool, labeled_mask) -> np.ndarray:
    """Rows that are labeled **and available**: the Core-Set centres (issue 9, fidelity 5).

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


@register("coreset", params={
    "feature": "'embedding' (pool.embedding, default) or 'penultimate' (pool.extras['penultimate'])",
    "block": BLOCK_DOC, "progress": PROGRESS_DOC}, needs=("embedding",))
def coreset(
    pool: ScoredPool,
    budget: int,
    *,
    labeled_mask=None,
    rng: np.random.Generator | None = None,
    feature: str = "embedding",
    block: int = DEFAULT_BLOCK,
    progress: bool = False,
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
    block, progress :
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
    picks, radius = kcenter_greedy(x, budget, cand, centres, rng, block=block, progress=progress)
    return Selection(
        ids=pool.ids[picks], strategy="coreset", score=radius, reason=None,
        info={"n_candidates": int(len(cand)), "n_centres": int(len(centres))},
    )
