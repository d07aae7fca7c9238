"""BADGE: gradient embeddings + k-means++ seeding, without materialising N x C·D.

Implements METHODS.md E (thesis 002 ch. 3, eq. 3.3; Ash et al., "Deep Batch Active
Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR 2020, ref. JordanAsh/badge).

The gradient embedding of item ``i`` w.r.t. the last linear layer is
``g_i = (p_i - e_ŷi) ⊗ z_i`` with pseudo label ``ŷ_i = argmax p_i``. Written as a
concatenation of ``M`` weighted blocks (BMMAL, 002 eq. 3.14) it is
``g_i = ⊕_m w_im (p_i - e_ŷi) ⊗ z_im``; BADGE is the case ``M = 1, w = 1``. Because

    ⟨g_i, g_j⟩ = ⟨a_i, a_j⟩ · Σ_m w_im w_jm ⟨z_im, z_jm⟩,   a_i = p_i - e_ŷi,

every squared distance ``||g_i - g_j||² = ||g_i||² + ||g_j||² - 2⟨g_i, g_j⟩`` costs
``O(C + Σ_m D_m)`` instead of ``O(C · Σ_m D_m)``, and nothing of size ``N x C·D`` is ever
built. The k-means++ seeding keeps one running min-D² vector over the candidates and
updates it, block by block, against the newest centre only (``O(N·(C+D))`` per pick).

References
----------
J. T. Ash, C. Zhang, A. Krishnamurthy, J. Langford, A. Agarwal. Deep Batch Active
Learning by Diverse, Uncertain Gradient Lower Bounds. ICLR 2020.
D. Arthur, S. Vassilvitskii. k-means++: The Advantages of Careful Seeding. SODA 2007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmal import cluster
from mmal.cluster import check_candidates, d2_sample
from mmal.errors import ConfigError
from mmal.select.api import add_warning
from mmal.select.registry import register
from mmal.utils import progress_task
from mmal.pool import ScoredPool, Selection

DEFAULT_BLOCK = 8192


# ---------------------------------------------------------------------------------------
# gradient-embedding space (factorised)
# ---------------------------------------------------------------------------------------
def pseudo_label_residual(probs) -> np.ndarray:
    """``a_i = p_i - e_ŷi`` with ``ŷ_i = argmax_c p_ic`` (METHODS.md E, 002 eq. 3.3).

    Parameters
    ----------
    probs : float array [N, C]

    Returns
    -------
    float64 array [N, C]
    """
    a = np.array(probs, dtype=np.float64)  # [N, C] (copy)
    if a.ndim != 2:
        raise ConfigError(f"probs must be [N, C], got shape {a.shape}")
    a[np.arange(len(a)), np.argmax(a, axis=1)] -= 1.0
    return a


def gradient_embedding(probs, z, weights=None) -> np.ndarray:
    """Materialised gradient embedding, for small inputs, tests and benchmarks only.

    Implements METHODS.md E / 002 eq. 3.3 (one block) and eq. 3.14 (several blocks).

    Parameters
    ----------
    probs : float array [N, C]
    z : float array [N, D] or list of float arrays [N, D_m]
        One feature block per modality.
    weights : float array [N, M], optional
        Per-item block weights ``w_im`` (BMMAL); ``None`` = all ones.

    Returns
    -------
    float32 array [N, C · Σ_m D_m]
        Block ``m`` is ``w_im · (a_i ⊗ z_im)`` flattened class-major.
    """
    zs = list(z) if isinstance(z, (list, tuple)) else [z]
    a = pseudo_label_residual(probs).astype(np.float32)  # [N, C]
    n, c = a.shape
    dims = [int(zm.shape[1]) for zm in zs]
    out = np.empty((n, c * sum(dims)), dtype=np.float32)  # [N, C·ΣD_m], filled in place
    off = 0
    for m, zm in enumerate(zs):
        zm = np.asarray(zm, dtype=np.float32)  # [N, D_m]
        if weights is not None:
            zm = zm * np.asarray(weights, dtype=np.float32)[:, m : m + 1]
        for k in range(c):  # block m, class k: w_im · a_ik · z_im
            out[:, off + k * dims[m] : off + (k + 1) * dims[m]] = a[:, k : k + 1] * zm
        off += c * dims[m]
    return out


@dataclass
class GradientSpace:
    """Factorised view of ``g_i = ⊕_m w_im (a_i ⊗ z_im)`` (METHODS.md E).

    Parameters
    ----------
    a : float64 array [N, C]
        ``p_i - e_ŷi`` from :func:`pseudo_label_residual`.
    zs : list of float arrays [N, D_m]
        Feature blocks (numpy arrays or memmaps; read block-wise, never copied whole).
    weights : float array [N, M], optional
        Block weights; ``None`` means 1 everywhere (plain BADGE).
    """

    a: np.ndarray
    zs: list
    weights: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.a)
        for m, zm in enumerate(self.zs):
            if zm.ndim != 2 or zm.shape[0] != n:
                raise ConfigError(f"feature block {m} must be [N={n}, D], got {zm.shape}")
        if self.weights is not None:
            self.weights = np.asarray(self.weights, dtype=np.float64)
            if self.weights.shape != (n, len(self.zs)):
                raise ConfigError(
                    f"block weights must be [N={n}, M={len(self.zs)}], got {self.weights.shape}"
                )

    def __len__(self) -> int:
        return len(self.a)

    def _rows(self, arr, rows):
        """``arr[rows]``; a slice stays a view (memmaps are then read lazily)."""
        return arr[rows]

    def zdots(self, rows, j: int) -> np.ndarray:
        """``[R, M]`` matrix of ``⟨z_im, z_jm⟩`` for ``i`` in ``rows``."""
        out = []
        for zm in self.zs:
            zr = self._rows(zm, rows)  # [R, D_m]
            zj = np.asarray(zm[j])  # [D_m]
            out.append(np.asarray(zr @ zj.astype(zr.dtype, copy=False), dtype=np.float64))  # [R]
        return np.stack(out, axis=1)  # [R, M]

    def sqnorm(self, rows) -> np.ndarray:
        """``||g_i||² = ||a_i||² · Σ_m w_im² ||z_im||²`` for ``i`` in ``rows`` -> [R]."""
        a = self.a[rows]
        cols = []
        for zm in self.zs:
            zr = np.asarray(self._rows(zm, rows), dtype=np.float64)  # [R, D_m]
            cols.append(np.einsum("nd,nd->n", zr, zr))
        zn = np.stack(cols, axis=1)  # [R, M]
        if self.weights is not None:
            zn = zn * self.weights[rows] ** 2
        return np.einsum("nc,nc->n", a, a) * zn.sum(axis=1)

    def inner(self, rows, j: int) -> np.ndarray:
        """``⟨g_i, g_j⟩`` for ``i`` in ``rows`` -> [R] (factorised, METHODS.md E)."""
        zd = self.zdots(rows, j)  # [R, M]
        if self.weights is not None:
            zd = zd * (self.weights[rows] * self.weights[j])  # [R, M]
        return (self.a[rows] @ self.a[j]) * zd.sum(axis=1)  # [R]

    def centre_rows(self, rows):
        """Copy of the factors of ``rows``: ``(a [R, C], [z_m [R, D_m]], w [R, M] or None)``."""
        rows = np.asarray(rows)
        return (self.a[rows].copy(), [np.array(zm[rows]) for zm in self.zs],
                None if self.weights is None else self.weights[rows].copy())

    def sqdist_many(self, rows, centres, sqn_rows, sqn_centres) -> np.ndarray:
        """``||g_i - g_c||²`` for ``i`` in ``rows`` and every centre -> ``[R, L]``, clipped at 0.

        ``centres`` is ``(a [L, C], [z_m [L, D_m]], w [L, M] or None)`` as from
        :meth:`centre_rows`; one matrix product per block instead of one pass per centre.
        """
        ca, czs, cw = centres
        inner = None
        for m, zm in enumerate(self.zs):
            zr = np.asarray(self._rows(zm, rows))  # [R, D_m]
            zd = np.asarray(zr @ czs[m].T.astype(zr.dtype, copy=False), dtype=np.float64)  # [R, L]
            if self.weights is not None:
                zd *= self.weights[rows, m][:, None] * cw[None, :, m]
            inner = zd if inner is None else inner + zd
        inner *= self.a[rows] @ ca.T  # [R, L]
        d = sqn_rows[:, None] + sqn_centres[None, :] - 2.0 * inner
        return np.maximum(d, 0.0)

    def sqdist(self, rows, j: int, sqn_rows=None, sqn_j=None) -> np.ndarray:
        """``||g_i - g_j||²`` for ``i`` in ``rows`` -> [R], clipped at 0."""
        if sqn_rows is None:
            sqn_rows = self.sqnorm(rows)
        if sqn_j is None:
            sqn_j = float(self.sqnorm(np.array([j]))[0])
        d = sqn_rows + sqn_j - 2.0 * self.inner(rows, j)
        return np.maximum(d, 0.0)


# ---------------------------------------------------------------------------------------
# k-means++ seeding
# ---------------------------------------------------------------------------------------
def kmeanspp_seed(
    space: GradientSpace,
    budget: int,
    candidates,
    rng: np.random.Generator,
    *,
    block: int = DEFAULT_BLOCK,
    zero_tol: float = 1e-6,
    progress: bool = False,
    method: str = "exact",
    max_rejects: int = 32,
):
    """k-means++ seeding over a factorised gradient space (METHODS.md E, **(ref)** BADGE).

    ``method="exact"`` is :func:`mmal.cluster.kmeanspp_seed` (the seeding MMSSL's prototypes and
    the cold-start k-means share) with the largest-norm first centre.

    First centre = the candidate of largest ``||g||`` (ties: lowest index); every further
    centre is drawn with probability ∝ ``D²`` (squared distance to the nearest chosen
    centre). Chosen items have ``D² = 0``, so they are never drawn again — this equals the
    reference's "redraw duplicates" in distribution. If every remaining ``D²`` is 0 (the
    rest are duplicates of centres), the remaining picks are drawn uniformly at random
    without replacement. No Lloyd steps.

    Parameters
    ----------
    space : GradientSpace
    budget : int
        Number of centres; the result has ``min(budget, len(candidates))`` entries.
    candidates : int array [K] or bool mask [N]
        Rows that may be chosen; all others are ignored entirely.
    rng : numpy.random.Generator
    block : int
        Rows per distance block (memory per block ≈ ``block · Σ_m D_m`` floats).
    zero_tol : float
        A factorised ``D²`` below ``zero_tol · (||g_i||² + ||g_c||²)`` is set to 0: the
        cancellation in ``||g_i||² + ||g_c||² - 2⟨g_i,g_c⟩`` leaves float noise for exact
        duplicates, which would otherwise be drawn with tiny but non-zero probability.
    progress : bool or callable
        See :func:`mmal.utils.progress_task`.
    method : {"exact", "rejection"}
        ``"exact"`` (default): one pass over all candidates per pick, inverse-CDF draw from
        the exact ``D²`` vector (the reference algorithm; same picks for the same ``rng``).
        ``"rejection"``: the same k-means++ *distribution*, drawn by rejection sampling
        from stale upper bounds ``U_i ≥ D²_i`` (``D²`` only shrinks as centres are added):
        draw ``i ∝ U_i``, fold into ``U_i`` the centres it has not seen (one small matrix
        product), accept with probability ``D²_i / U_i``. Every trial accepts ``i`` with
        probability ``D²_i / ΣU``, so an accepted draw has law ``D²_i / ΣD²`` exactly (von
        Neumann 1951; Devroye 1986, II.3). Only drawn candidates are ever refreshed, so a
        pick costs a few ``O(k·(C+D))`` checks instead of ``O(N·(C+D))``. The random stream
        differs, so the picks differ from ``"exact"`` for the same seed (not in law).
    max_rejects : int
        ``"rejection"`` only: every bound is refreshed at once with blocked matrix products
        after at least this many rejections within one pick *and* once the checks of that
        pick have cost about as much as the refresh (``REFRESH_GAIN`` x the centre-candidate
        pairs checked ≥ ``N`` x the centres not yet folded into every bound). This keeps a
        pool of near-duplicates from stalling the sampler without ever paying an
        ``O(N·k)`` refresh for a few unlucky rejections. Does not change the law.

    Returns
    -------
    picks : int64 array [B]
        Row indices into the pool, in pick order.
    score : float64 array [B]
        ``D²`` of each pick at the moment it was drawn (first pick: ``||g||²``; NaN for
        picks filled at random).
    """
    if method not in ("exact", "rejection"):
        raise ConfigError(f"k-means++ seeding: method must be 'exact' or 'rejection', got {method!r}")
    if method == "exact":  # the one k-means++ seeding of the project (BADGE's largest-norm first centre)
        return cluster.kmeanspp_seed(space, budget, candidates, rng, first="max-norm", block=block,
                                     zero_tol=zero_tol, progress=progress, what="BADGE k-means++ seeding")
    cand, k_total, rows_of, sqn = cluster.seeding_setup(space, budget, candidates, block)
    picks = np.empty(k_total, dtype=np.int64)
    score = np.full(k_total, np.nan)
    if k_total == 0:
        return picks, score
    first = int(np.argmax(sqn))
    picks[0], score[0] = cand[first], sqn[first]
    _kmeanspp_rejection(space, cand, rows_of, sqn, first, k_total, rng, picks, score, block=block,
                        zero_tol=zero_tol, max_rejects=max_rejects, progress=progress)
    return picks, score


SAMPLE_BLOCK = 1024  # candidates per partial sum of the rejection sampler
REFRESH_GAIN = 8  # pairs per second of a blocked refresh over a single-candidate check (rough, measured)


def _kmeanspp_rejection(space, cand, rows_of, sqn, first, k_total, rng, picks, score, *, block, zero_tol,
                        max_rejects, progress):
    """k-means++ seeding by rejection from stale ``D²`` bounds (``method="rejection"``).

    Fills ``picks``/``score`` (``picks[0]`` already set). Per candidate ``i`` it keeps
    ``U_i`` (an upper bound of ``D²_i``) and ``seen_i`` (how many centres are folded in).
    """
    n_c = len(cand)
    nb = -(-n_c // SAMPLE_BLOCK)
    ub = np.zeros(nb * SAMPLE_BLOCK)  # padded; padding and chosen rows stay 0
    ubb = ub.reshape(nb, SAMPLE_BLOCK)
    seen = np.zeros(n_c, dtype=np.int64)
    cen = [np.empty((k_total, space.a.shape[1]))]  # centre factors, filled as picks are made
    cen_z = [np.empty((k_total, zm.shape[1]), dtype=np.asarray(zm[:1]).dtype) for zm in space.zs]
    cen_w = None if space.weights is None else np.empty((k_total, len(space.zs)))
    cen_sqn = np.empty(k_total)

    def add_centre(k, pos):
        a, zs, w = space.centre_rows([cand[pos]])
        cen[0][k] = a[0]
        for m in range(len(zs)):
            cen_z[m][k] = zs[m][0]
        if cen_w is not None:
            cen_w[k] = w[0]
        cen_sqn[k] = sqn[pos]

    def folded(rows_pos, pool_rows, c0, c1):
        """min over centres [c0, c1) of the (zero-tolerant) squared distance -> [R]."""
        best = np.full(len(rows_pos), np.inf)
        for c in range(c0, c1, 1024):
            ce = min(c + 1024, c1)
            centres = (cen[0][c:ce], [cz[c:ce] for cz in cen_z], None if cen_w is None else cen_w[c:ce])
            nd = space.sqdist_many(pool_rows, centres, sqn[rows_pos], cen_sqn[c:ce])  # [R, L]
            nd[nd <= zero_tol * (sqn[rows_pos][:, None] + cen_sqn[None, c:ce])] = 0.0
            np.minimum(best, nd.min(axis=1), out=best)
        return best

    def refresh_all(k):
        c0 = int(seen.min())
        for s in range(0, n_c, block):
            e = min(s + block, n_c)
            pos = np.arange(s, e)
            ub[s:e] = np.minimum(ub[s:e], folded(pos, rows_of(s, e), c0, k))
        ub[:n_c][chosen] = 0.0
        seen[:] = k

    chosen = np.zeros(n_c, dtype=bool)
    add_centre(0, first)
    ub[:n_c] = np.inf
    seen[:] = 0
    chosen[first] = True
    refresh_all(1)
    bsum = ubb.sum(axis=1)

    with progress_task(k_total, "k-means++ seeding (rejection)", progress) as advance:
        advance()
        for k in range(1, k_total):
            rejects, checked = 0, 0  # rejections / centre-candidate pairs checked in this pick
            while True:
                total = float(bsum.sum())
                if not np.isfinite(total):
                    raise ConfigError("BADGE: non-finite gradient distances (NaN/inf in probs or features)")
                if total <= 0.0:
                    break
                u = rng.random() * total
                cb = np.cumsum(bsum)
                b = min(int(np.searchsorted(cb, u, side="right")), nb - 1)
                while bsum[b] <= 0.0:
                    b = (b + 1) % nb
                j = _d2_sample_at(ubb[b], u - (cb[b - 1] if b else 0.0))
                pos = b * SAMPLE_BLOCK + j
                checked += k - int(seen[pos])
                t = float(folded(np.array([pos]), np.array([cand[pos]]), int(seen[pos]), k)[0]) \
                    if seen[pos] < k else ub[pos]
                t = min(t, ub[pos])
                accept = rng.random() * ub[pos] < t
                ub[pos], seen[pos] = t, k
                if accept:
                    break
                bsum[b] = ubb[b].sum()
                rejects += 1
                # ski rental: refresh everything once this pick's checks have cost as much as a
                # refresh would (a blocked product is ~REFRESH_GAIN x cheaper per pair than a check)
                if rejects >= max_rejects and checked * REFRESH_GAIN >= n_c * (k - int(seen.min())):
                    refresh_all(k)
                    bsum = ubb.sum(axis=1)
                    rejects, checked = 0, 0
            if total <= 0.0:  # everything left duplicates a centre: fill at random
                rest = np.flatnonzero(~chosen)
                picks[k:] = cand[rng.choice(rest, size=k_total - k, replace=False)]
                break
            chosen[pos] = True
            picks[k], score[k] = cand[pos], ub[pos]
            add_centre(k, pos)
            ub[pos] = 0.0
            bsum[b] = ubb[b].sum()
            advance()


def _d2_sample_at(w: np.ndarray, u: float) -> int:
    """Position ``j`` with ``cumsum(w)[j-1] <= u < cumsum(w)[j]``, skipping zero weights."""
    cdf = np.cumsum(w)
    j = min(int(np.searchsorted(cdf, u, side="right")), len(w) - 1)
    while w[j] <= 0.0:
        j = (j + 1) % len(w)
    return j


def kmeanspp_dense(g, budget: int, candidates, rng: np.random.Generator, *, zero_tol: float = 1e-6):
    """Reference k-means++ seeding over a materialised embedding ``g`` [N, E].

    Same algorithm, same random draws as :func:`kmeanspp_seed`; used to test the
    factorised version and as the "materialised" baseline in ``bench/select.py``.
    """
    g = np.asarray(g)
    cand = check_candidates(budget, candidates, len(g))
    k_total = min(int(budget), len(cand))
    picks = np.empty(k_total, dtype=np.int64)
    score = np.full(k_total, np.nan)
    if k_total == 0:
        return picks, score
    gc = g if len(cand) == len(g) and np.array_equal(cand, np.arange(len(g))) else g[cand]  # [K, E]
    sqn = np.einsum("ne,ne->n", gc, gc, dtype=np.float64)
    first = int(np.argmax(sqn))
    picks[0], score[0] = cand[first], sqn[first]
    d2 = np.full(len(cand), np.inf)
    chosen = np.zeros(len(cand), dtype=bool)
    chosen[first] = True
    newest = first
    for k in range(1, k_total):
        # ||g_i - g_c||² = ||g_i||² + ||g_c||² - 2 g_i·g_c over the dense [K, C·D] matrix
        nd = np.maximum(sqn + sqn[newest] - 2.0 * np.asarray(gc @ gc[newest], dtype=np.float64), 0.0)
        nd[nd <= zero_tol * (sqn + sqn[newest])] = 0.0
        np.minimum(d2, nd, out=d2)
        d2[chosen] = 0.0
        if d2.sum() <= 0.0:
            rest = np.flatnonzero(~chosen)
            picks[k:] = cand[rng.choice(rest, size=k_total - k, replace=False)]
            break
        newest = d2_sample(d2, rng)
        chosen[newest] = True
        picks[k], score[k] = cand[newest], d2[newest]
    return picks, score


def badge_select(
    probs,
    z,
    budget: int,
    candidates,
    rng: np.random.Generator,
    *,
    block: int = DEFAULT_BLOCK,
    zero_tol: float = 1e-6,
    progress: bool = False,
    method: str = "exact",
):
    """BADGE selection as a pure function of arrays (METHODS.md E, 002 eq. 3.3).

    Parameters
    ----------
    probs : float array [N, C]
        Class probabilities of the current model.
    z : float array [N, D]
        Input of the last linear layer (penultimate features); may be a memmap.
    budget : int
    candidates : int array [K] or bool mask [N]
        Selectable rows.
    rng : numpy.random.Generator
    block, zero_tol, progress, method :
        See :func:`kmeanspp_seed`.

    Returns
    -------
    picks : int64 array [min(budget, K)]
        Row indices in pick order.
    score : float64 array
        ``D²`` at pick time (see :func:`kmeanspp_seed`).
    """
    probs = np.asarray(probs)
    if z.ndim != 2 or z.shape[0] != probs.shape[0]:
        raise ConfigError(f"BADGE: features must be [N={probs.shape[0]}, D], got {z.shape}")
    space = GradientSpace(pseudo_label_residual(probs), [z])
    return kmeanspp_seed(space, budget, candidates, rng, block=block, zero_tol=zero_tol, progress=progress,
                         method=method)


def _features(pool: ScoredPool, feature: str):
    """Pick the feature matrix named by ``feature`` (``auto``/``penultimate``/``embedding``)."""
    if feature not in ("auto", "penultimate", "embedding"):
        raise ConfigError(f"feature must be 'auto', 'penultimate' or 'embedding', got '{feature}'")
    if feature in ("auto", "penultimate") and "penultimate" in pool.extras:
        return pool.extras["penultimate"]
    if feature == "penultimate":
        raise ConfigError("feature='penultimate' needs pool.extras['penultimate'] ([N, D])")
    if pool.embedding is None:
        raise ConfigError("this strategy needs pool.embedding ([N, D]) or pool.extras['penultimate']")
    return pool.embedding


_FEATURE_DOC = ("z of the gradient embedding: 'auto' = pool.extras['penultimate'] when present "
                "(input of the last linear layer, as in the reference), else pool.embedding; "
                "'penultimate' or 'embedding' to force one")
BLOCK_DOC = "rows per distance block (memory per block ~ block x D floats); does not change the result"
ZERO_TOL_DOC = "relative D^2 below which a candidate counts as a duplicate of a centre (float noise guard)"
PROGRESS_DOC = "progress: False, True (a bar via mmal.utils.progress_task) or a callable(done, total, desc)"
METHOD_DOC = ("k-means++ sampler: 'exact' (default; one pass over the pool per pick, the reference's draws) "
              "or 'rejection' (same k-means++ law from stale D^2 bounds, far faster on large pools; "
              "different random stream)")


@register("badge", params={"feature": _FEATURE_DOC, "block": BLOCK_DOC, "zero_tol": ZERO_TOL_DOC,
                           "progress": PROGRESS_DOC, "method": METHOD_DOC})
def badge(
    pool: ScoredPool,
    budget: int,
    *,
    labeled_mask=None,
    rng: np.random.Generator | None = None,
    feature: str = "auto",
    block: int = DEFAULT_BLOCK,
    zero_tol: float = 1e-6,
    progress: bool = False,
    method: str = "exact",
) -> Selection:
    """BADGE strategy (METHODS.md E): gradient embeddings + k-means++ seeding.

    Parameters
    ----------
    pool : ScoredPool
    budget : int
    labeled_mask : bool array [N], optional
        Labeled items are never selected (nor are ``split == "test"`` items).
    rng : numpy.random.Generator
        Required for reproducibility; ``None`` means ``default_rng(0)``.
    feature : {"auto", "penultimate", "embedding"}
        Which ``z`` to use: ``auto`` = ``pool.extras["penultimate"]`` when present (the
        input of the classifier's last linear layer, as in the reference), else
        ``pool.embedding``.
    block, zero_tol, progress, method :
        See :func:`kmeanspp_seed`.

    Returns
    -------
    Selection
        Ids in pick order; ``score`` = ``D²`` at pick time.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    z = _features(pool, feature)
    cand = np.flatnonzero(pool.selectable(labeled_mask))
    picks, score = badge_select(pool.probs, z, budget, cand, rng, block=block, zero_tol=zero_tol, progress=progress,
                                method=method)
    sel = Selection(
        ids=pool.ids[picks], strategy="badge", score=score, reason=None,
        info={"n_candidates": int(len(cand)), "method": method},
    )
    note_random_fill(sel, "badge")
    return sel


def note_random_fill(sel: Selection, name: str) -> None:
    """Say in ``sel.info`` how many picks k-means++ seeding drew at random because every item left
    duplicated a centre (their score is NaN; ``info["n_random_fill"]`` and a warning line)."""
    n_fill = int(np.isnan(np.asarray(sel.score, np.float64)).sum())
    sel.info["n_random_fill"] = n_fill
    if n_fill:
        add_warning(sel, f"strategy '{name}': every item left duplicated a centre after {len(sel) - n_fill} picks "
                         f"(D^2 = 0 within zero_tol); the other {n_fill} were drawn at random")
