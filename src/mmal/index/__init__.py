"""kNN backends behind one interface: :func:`build_index` -> :class:`Index`.

>>> idx = build_index(emb, metric="cosine")            # auto backend by size
>>> sims, rows = idx.search(queries, k=3)               # [Q, 3], [Q, 3]

``backend="auto"`` picks (N = number of indexed vectors):

* ``N < 50_000``: ``exact`` (blocked numpy matmul, or torch on a CUDA GPU; :class:`ExactIndex`);
* ``N < 2_000_000``: FAISS ``IVF{nlist},Flat`` (:class:`FaissIndex`; cosine = inner product
  on unit rows, spherical k-means);
* otherwise FAISS ``IVF{nlist},SQ8`` (8-bit codes, a quarter of the float32 RAM, exact
  re-ranking of a ``k * k_factor`` shortlist from the original, possibly memmapped, vectors);

with ``nlist = 2 ** round(log2(sqrt(N)))`` clipped to ``[nlist_min, nlist_max] = [16, 1024]``
and ``nprobe`` tuned at build time so that recall@3 on 300 held-out rows reaches
``target_recall=0.95`` (:mod:`mmal.index.tuning`).

the home-made list-major ``IVF*,BLAS*`` index was removed. On the fair
benchmark (``bench/knn.py``: 1M x 384, all 50k seeds, alternating runs, equal recall@3,
build included) it was 1.8x faster than FAISS IVF-Flat, short of the 2x it had to show
to stay, so FAISS is the default. Every choice is overridable.
"""

from __future__ import annotations

import math

from mmal.errors import ConfigError
from mmal.index.base import Index, check_metric, check_vectors
from mmal.index.exact import ExactIndex
from mmal.index.faiss_ import FaissIndex
from mmal.index.tuning import tune_nprobe

EXACT_MAX = 50_000
IVF_FLAT_MAX = 2_000_000
NLIST_MIN = 16
NLIST_MAX = 1024

__all__ = ["Index", "ExactIndex", "FaissIndex", "build_index", "auto_backend",
           "auto_nlist", "tune_nprobe"]


def auto_nlist(n: int, *, nlist_min: int = NLIST_MIN, nlist_max: int = NLIST_MAX) -> int:
    """``2 ** round(log2(sqrt(n)))`` clipped to ``[nlist_min, nlist_max]`` and to ``n``."""
    nl = 2 ** int(round(math.log2(max(1.0, math.sqrt(n)))))
    return int(max(1, min(n, max(nlist_min, min(nlist_max, nl)))))


def auto_backend(n: int, dim: int, *, exact_max: int = EXACT_MAX, ivf_flat_max: int = IVF_FLAT_MAX,
                 nlist: int | None = None, nlist_min: int = NLIST_MIN, nlist_max: int = NLIST_MAX) -> str:
    """Backend string ``build_index(backend="auto")`` uses for ``n`` vectors of ``dim``.

    ``exact`` below ``exact_max``; FAISS ``IVF{nlist},Flat`` below ``ivf_flat_max``;
    FAISS ``IVF{nlist},SQ8`` (8-bit codes + exact re-ranking) above.
    """
    if n < exact_max:
        return "exact"
    nl = int(nlist) if nlist else auto_nlist(n, nlist_min=nlist_min, nlist_max=nlist_max)
    return f"IVF{nl},Flat" if n < ivf_flat_max else f"IVF{nl},SQ8"


def build_index(vectors, *, metric: str = "cosine", backend: str = "auto", exact_max: int = EXACT_MAX,
                ivf_flat_max: int = IVF_FLAT_MAX, nlist: int | None = None, nlist_min: int = NLIST_MIN,
                nlist_max: int = NLIST_MAX, **params) -> Index:
    """Build a kNN index over ``vectors [N, D]`` (numpy array or memmap; not copied).

    Parameters
    ----------
    vectors : float array [N, D]
    metric : {"cosine", "ip", "l2"}
        ``cosine`` L2-normalises (block by block) -- the paper's LSB metric (000 §3.1).
    backend : str
        ``"auto"``, ``"exact"`` or a FAISS factory string (``"Flat"``, ``"IVF1024,Flat"``,
        ``"IVF1024,SQ8"``, ``"IVF4096,PQ48"``).
    exact_max, ivf_flat_max : int
        Size thresholds of ``auto`` (defaults 50k and 2M; see :func:`auto_backend`).
    nlist : int, optional
        Override ``auto``'s number of inverted lists (default :func:`auto_nlist`).
    nlist_min, nlist_max : int
        Clip range of ``auto``'s nlist (defaults 16 and 1024).
    **params
        Backend options: for ``exact`` ``base_block``, ``query_block``, ``progress``, ``device``
        (``auto``: the GPU when torch sees CUDA); for FAISS ``nprobe``, ``target_recall``,
        ``tune_queries``, ``tune_k``, ``tune_z``, ``k_factor``, ``rerank``, ``train_size``,
        ``train_iters``, ``add_block``, ``seed``, ``threads``, ``progress``, ``spherical``
        (see :class:`FaissIndex`).
    """
    vectors = check_vectors(vectors)
    check_metric(metric)
    n, d = vectors.shape
    if n == 0:
        raise ConfigError("cannot build a kNN index over 0 vectors")
    if backend == "auto":
        backend = auto_backend(n, d, exact_max=exact_max, ivf_flat_max=ivf_flat_max, nlist=nlist,
                               nlist_min=nlist_min, nlist_max=nlist_max)
    if backend == "exact":
        allowed = {"base_block", "query_block", "progress", "device"}
        extra = set(params) - allowed
        if extra:
            raise ConfigError(f"exact backend does not take {sorted(extra)}; allowed: {sorted(allowed)}")
        return ExactIndex(vectors, metric=metric, **params)
    if "BLAS" in backend.upper():
        raise ConfigError(f"backend '{backend}': the IVF*,BLAS* index was removed (it did not beat "
                          "FAISS by 2x at equal recall); use 'auto' or e.g. 'IVF1024,Flat' / 'IVF1024,SQ8'")
    try:
        return FaissIndex(vectors, backend, metric=metric, **params)
    except TypeError as e:
        raise ConfigError(f"backend '{backend}': {e}") from None
