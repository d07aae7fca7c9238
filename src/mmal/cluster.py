"""Clustering shared by the strategies and the models: one k-means++ seeding, Lloyd k-means.

- :func:`kmeanspp_seed` — k-means++ seeding (Arthur & Vassilvitskii 2007) over any *space*
  that gives squared norms and squared distances of its rows: BADGE and BMMAL seed in a
  factorised gradient space (:class:`mmal.select.badge.GradientSpace`, METHODS E: no
  materialised ``N x C·D`` matrix), MMSSL's prototypes and the cold-start strategies in a
  plain vector space (:class:`DenseSpace`). Same algorithm, same random draws.
- :func:`kmeans`, :func:`assign_to_centres`, :func:`kmeans_sampled` — Lloyd k-means with
  that seeding (MMSSL's prototypes, 002 §4.2.2; the k-means, TypiClust and ProbCover
  cold-start strategies).

Pure numpy (torch for one scatter-add); randomness only through the caller's ``numpy.random.Generator`` or seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmal.errors import ConfigError
from mmal.utils import progress_task

#: how the first centre is chosen: BADGE's reference takes the largest norm, k-means++ a random row
FIRSTS = ("max-norm", "random")


@dataclass
class DenseSpace:
    """Rows of a plain matrix ``x [N, D]`` as a k-means++ space (squared Euclidean distances)."""

    x: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def sqnorm(self, rows) -> np.ndarray:
        xr = self.x[rows]
        return np.einsum("nd,nd->n", xr, xr).astype(np.float64)

    def sqdist(self, rows, j: int, sqn_rows, sqn_j) -> np.ndarray:
        """``||x_i - x_j||²`` for ``i`` in ``rows`` -> [R], clipped at 0.

        The dot products run in ``x``'s dtype (no float64 copy of the rows per pick: at 10^5
        rows and 10^4 centres that copy would dominate); norms and the sum in float64.
        """
        return np.maximum(sqn_rows + sqn_j - 2.0 * (self.x[rows] @ self.x[j]).astype(np.float64), 0.0)


def check_candidates(budget, candidates, n):
    """Candidate rows as unique int64 indices in ``[0, n)`` (a bool mask ``[n]`` accepted)."""
    if int(budget) < 0:
        raise ConfigError(f"budget must be >= 0, got {budget}")
    candidates = np.asarray(candidates)
    if candidates.dtype == bool:
        if candidates.shape != (n,):
            raise ConfigError(f"candidate mask must have shape [{n}], got {candidates.shape}")
        candidates = np.flatnonzero(candidates)
    candidates = candidates.astype(np.int64)
    if candidates.size and (candidates.min() < 0 or candidates.max() >= n):
        raise ConfigError(f"candidate indices must lie in [0, {n}), got range "
                          f"[{candidates.min()}, {candidates.max()}]")
    if len(np.unique(candidates)) != len(candidates):
        raise ConfigError("candidate indices must be unique")
    return candidates


def d2_sample(d2: np.ndarray, rng: np.random.Generator) -> int:
    """Draw a position with probability ``d2 / Σ d2`` (``Σ d2 > 0``)."""
    cdf = np.cumsum(d2)  # [R]
    u = rng.random() * cdf[-1]
    k = int(np.searchsorted(cdf, u, side="right"))
    k = min(k, len(d2) - 1)
    while d2[k] <= 0.0:  # only reachable through float edge cases at the cdf's ends
        k = (k + 1) % len(d2)
    return k


def seeding_setup(space, budget: int, candidates, block: int):
    """What every k-means++ sampler over ``space`` starts from: ``(cand, k_total, rows_of, sqn)``.

    ``cand`` the checked candidate rows, ``k_total = min(budget, len(cand))``, ``rows_of(s, e)``
    the pool rows of candidate positions ``[s, e)`` (a slice when the candidates are all rows,
    in order), ``sqn`` the candidates' squared norms computed ``block`` rows at a time (empty
    when ``k_total`` is 0).
    """
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")
    n = len(space)
    cand = check_candidates(budget, candidates, n)
    k_total = min(int(budget), len(cand))
    full = len(cand) == n and (n == 0 or (cand[0] == 0 and cand[-1] == n - 1 and np.all(np.diff(cand) == 1)))

    def rows_of(s, e):  # candidate positions [s, e) -> pool rows (slice when contiguous)
        return slice(s, e) if full else cand[s:e]

    sqn = np.empty(len(cand) if k_total else 0)
    for s in range(0, len(sqn), block):
        sqn[s : s + block] = space.sqnorm(rows_of(s, min(s + block, len(cand))))
    return cand, k_total, rows_of, sqn


def kmeanspp_seed(space, budget: int, candidates, rng: np.random.Generator, *, first: str = "max-norm",
                  block: int = 8192, zero_tol: float = 1e-6, progress=False, what: str = "k-means++ seeding"):
    """k-means++ seeding over ``space`` (METHODS E, **(ref)** BADGE): exact inverse-CDF draws.

    First centre: the candidate of largest norm (``first="max-norm"``, BADGE's reference; ties:
    lowest index) or a uniformly random candidate (``"random"``, plain k-means++). Every further
    centre is drawn with probability ∝ ``D²`` (squared distance to the nearest chosen centre).
    Chosen items have ``D² = 0`` and are never drawn again (the reference's "redraw duplicates"
    in distribution). If every remaining ``D²`` is 0 (the rest duplicate centres), the
    remaining picks are drawn uniformly without replacement. No Lloyd steps.

    Parameters
    ----------
    space : an object with ``len()``, ``sqnorm(rows) -> [R]`` and
        ``sqdist(rows, j, sqn_rows, sqn_j) -> [R]`` (:class:`DenseSpace`, or BADGE's gradient space).
    budget : number of centres; the result has ``min(budget, len(candidates))`` entries.
    candidates : int array [K] or bool mask [N]: rows that may be chosen.
    rng : numpy Generator.
    block : rows per distance block.
    zero_tol : a ``D²`` below ``zero_tol · (||g_i||² + ||g_c||²)`` is 0 (float noise of an exact duplicate).
    progress : see :func:`mmal.utils.progress_task`.

    Returns
    -------
    picks : int64 [B] pool rows in pick order; score : float64 [B], ``D²`` of each pick when it
    was drawn (the first: its squared norm; NaN for picks filled at random).
    """
    if first not in FIRSTS:
        raise ConfigError(f"k-means++ seeding: first must be one of {FIRSTS}, got {first!r}")
    cand, k_total, rows_of, sqn = seeding_setup(space, budget, candidates, block)
    picks = np.empty(k_total, dtype=np.int64)
    score = np.full(k_total, np.nan)
    if k_total == 0:
        return picks, score
    first_pos = int(np.argmax(sqn)) if first == "max-norm" else int(rng.integers(len(cand)))
    picks[0], score[0] = cand[first_pos], sqn[first_pos]
    d2 = np.full(len(cand), np.inf)  # running min-D² over candidates
    chosen = np.zeros(len(cand), dtype=bool)
    chosen[first_pos] = True
    newest = first_pos
    with progress_task(k_total, what, progress) as advance:
        advance()
        for k in range(1, k_total):
            c_row, c_sqn = int(cand[newest]), sqn[newest]
            for s in range(0, len(cand), block):
                e = min(s + block, len(cand))
                nd = space.sqdist(rows_of(s, e), c_row, sqn[s:e], c_sqn)  # [R]
                nd[nd <= zero_tol * (sqn[s:e] + c_sqn)] = 0.0
                np.minimum(d2[s:e], nd, out=d2[s:e])
            d2[chosen] = 0.0
            total = float(d2.sum())
            if not np.isfinite(total):
                raise ConfigError(f"{what}: non-finite distances (NaN/inf in the inputs)")
            if total <= 0.0:  # everything left duplicates a centre: fill at random
                rest = np.flatnonzero(~chosen)
                picks[k:] = cand[rng.choice(rest, size=k_total - k, replace=False)]
                break
            newest = d2_sample(d2, rng)
            chosen[newest] = True
            picks[k], score[k] = cand[newest], d2[newest]
            advance()
    return picks, score


def kmeans(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0, init: str = "k-means++", block: int = 65536):
    """Lloyd k-means (squared Euclidean), :func:`kmeanspp_seed` seeding (or ``init="random"`` rows).

    Returns ``(centroids [k, D] float32, assign [N] int64, sqdist [N] float64)``; an empty
    cluster is re-seeded with the row farthest from its centre. Deterministic by ``seed``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= k <= n:
        raise ConfigError(f"k-means: k must lie in [1, N={n}], got {k}")
    rng = np.random.default_rng(seed)
    if init == "random":
        c = x[np.sort(rng.choice(n, size=k, replace=False))].copy()
    elif init == "k-means++":
        rows, _ = kmeanspp_seed(DenseSpace(x), k, np.arange(n), rng, first="random", zero_tol=0.0)
        c = x[rows].copy()
    else:
        raise ConfigError(f"k-means init must be 'k-means++' or 'random', got {init!r}")
    xsq = np.einsum("nd,nd->n", x, x)
    assign = np.zeros(n, dtype=np.int64)
    d2 = np.zeros(n)
    x64 = torch.from_numpy(x).double() if iters > 1 else None  # for the centroid sums, converted once
    for it in range(max(1, iters)):
        assign_to_centres(x, c, xsq, block=block, out=(assign, d2))
        if it == iters - 1:
            break
        counts = np.bincount(assign, minlength=k)
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(
            0, torch.from_numpy(assign), x64).numpy()  # [k, D]
        new = c.copy()
        nz = counts > 0
        new[nz] = (sums[nz] / counts[nz, None]).astype(np.float32)
        for j in np.flatnonzero(~nz):  # empty cluster: take the worst-fit row
            far = int(np.argmax(d2))
            new[j] = x[far]
            d2[far] = 0.0
        c = new
    return c, assign, d2


def assign_to_centres(x: np.ndarray, centres: np.ndarray, xsq=None, *, block: int = 65536,
                      max_block_elements: int = 2**26, out=None):
    """Lloyd's assignment step: each row's nearest centre in squared Euclidean distance.

    ``dd = (|x|^2 + |c|^2) - 2 x.c``, evaluated in that order, ``block`` rows at a time,
    fewer when ``block x k`` would exceed ``max_block_elements`` (256 MB of float32 per
    temporary; k = 20,000 prototypes would otherwise need 5 GB per block).
    Returns ``(assign [N] int64, d2 [N] float64)`` (``d2`` clipped at 0), written into
    ``out`` when given. ``xsq``: the rows' squared norms, if already known.
    """
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centres, dtype=np.float32)
    n = len(x)
    block = max(1, min(int(block), int(max_block_elements) // max(1, len(c))))
    xsq = np.einsum("nd,nd->n", x, x) if xsq is None else xsq
    assign, d2 = out if out is not None else (np.empty(n, dtype=np.int64), np.empty(n))
    csq = np.einsum("kd,kd->k", c, c)
    for s in range(0, n, block):
        dots = x[s:s + block] @ c.T  # [R, k]
        dots *= 2.0  # exact
        dd = xsq[s:s + block, None] + csq[None, :]
        dd -= dots
        a = dd.argmin(1)
        assign[s:s + block] = a
        d2[s:s + block] = np.maximum(np.take_along_axis(dd, a[:, None], 1)[:, 0], 0.0)
    return assign, d2


def kmeans_sampled(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0, fit_sample: int | None = None,
                   sample_rng: np.random.Generator | None = None, assign_all: bool = True):
    """:func:`kmeans` on all rows, or fitted on a uniform random sample of ``fit_sample`` rows.

    With more than ``fit_sample`` rows the sample is drawn with ``sample_rng`` (default
    ``default_rng(seed)``), :func:`kmeans` runs on it, and every row is then assigned to the
    fitted centres (one Lloyd assignment step, :func:`assign_to_centres`);
    ``assign_all=False`` skips that pass and returns ``None`` for both. Returns
    ``(centroids, assign [N], sqdist [N])``. Used by MMSSL's prototypes and the cold-start
    strategies.
    """
    n = len(x)
    if fit_sample is None or n <= int(fit_sample):
        return kmeans(x, k, iters=iters, seed=seed)
    rng = np.random.default_rng(seed) if sample_rng is None else sample_rng
    sub = np.sort(rng.choice(n, size=int(fit_sample), replace=False))
    cen, _, _ = kmeans(np.asarray(x, np.float32)[sub], k, iters=iters, seed=seed)
    if not assign_all:
        return cen, None, None
    return (cen, *assign_to_centres(x, cen))


__all__ = ["DenseSpace", "kmeanspp_seed", "seeding_setup", "kmeans", "assign_to_centres", "kmeans_sampled", "d2_sample",
           "check_candidates"]
