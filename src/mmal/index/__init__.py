"""kNN backends behind one interface: :func:`build_index` -> :class:`Index`.

>>> idx = build_index(emb, metric="cosine", n_queries=len(seeds), k=3)   # planned for the workload
>>> sims, rows = idx.search(queries, k=3)                               # [Q, 3], [Q, 3]
>>> idx.describe()["plan"]["reason"]                                    # what was chosen and why

``backend="auto"`` asks the cost model :func:`mmal.index.plan.plan_index`: for ``n`` rows of
dimension ``d``, ``n_queries`` queries of ``k`` neighbours and ``target_recall`` (default
0.95) it predicts build + nprobe tuning + search of exact search and of FAISS
``IVF{nlist},Flat`` / ``IVF{nlist},SQ8`` (+ exact re-rank of ``k * k_factor``) for every
power-of-two ``nlist``, and builds the cheapest. Below ``exact_max = 50,000`` rows it is
always exact; Flat is not considered above ``ivf_flat_max = 2,000,000`` rows (RAM). IVF
``nprobe`` is then tuned on held-out rows to reach ``target_recall``
(:mod:`mmal.index.tuning`). Every choice is a named parameter that can be overridden; the
chosen plan, the prediction of every candidate and the tuning history are in
:meth:`Index.describe`. Measured against FAISS configurations in ``bench/knn.py``
(``docs/scale.md``).

The home-made list-major ``IVF*,BLAS*`` index was removed: on the fair benchmark
(1M x 384, 50k seeds, equal recall@3, build included) it was 1.8x faster than FAISS
IVF-Flat, short of the 2x it had to show to stay.
"""

from __future__ import annotations


from mmal.errors import ConfigError
from mmal.index.base import Index, check_metric, check_vectors
from mmal.index.exact import ExactIndex
from mmal.index.faiss_ import FaissIndex
from mmal.index.plan import (
    DEFAULT_QUERIES, ENCODINGS, EXACT_MAX, IVF_FLAT_MAX, NLIST_MAX, NLIST_MIN, IndexPlan, plan_index,
)
from mmal.index.tuning import tune_nprobe

__all__ = ["Index", "ExactIndex", "FaissIndex", "IndexPlan", "build_index", "plan_index", "auto_backend",
           "tune_nprobe", "DEFAULT_QUERIES", "EXACT_MAX", "IVF_FLAT_MAX"]

#: FaissIndex options the plan sets (a user's value is passed to the plan and kept)
_PLANNED = ("k_factor", "train_iters", "train_size", "tune_queries")


def auto_backend(n: int, dim: int, **plan_params) -> str:
    """Backend string ``build_index(backend="auto")`` builds for ``n x dim`` (see :func:`plan_index`)."""
    return plan_index(n, dim, **plan_params).backend


def _faiss_threads(threads):
    if threads is not None:
        return int(threads)
    try:
        import faiss
        return int(faiss.omp_get_max_threads())
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return 1


def build_index(vectors, *, metric: str = "cosine", backend: str = "auto", n_queries: int | None = None,
                k: int = 3, target_recall: float = 0.95, exact_max: int = EXACT_MAX,
                ivf_flat_max: int = IVF_FLAT_MAX, nlist: int | None = None, nlist_min: int = NLIST_MIN,
                nlist_max: int = NLIST_MAX, encodings=ENCODINGS, threads: int | None = None, **params) -> Index:
    """Build a kNN index over ``vectors [N, D]`` (numpy array or memmap; not copied).

    Parameters
    ----------
    vectors : float array [N, D]
    metric : {"cosine", "ip", "l2"}
        ``cosine`` L2-normalises (block by block) -- the paper's LSB metric (000 §3.1).
    backend : str
        ``"auto"`` (cost model, :func:`mmal.index.plan.plan_index`), ``"exact"`` or a FAISS
        factory string (``"Flat"``, ``"IVF1024,Flat"``, ``"IVF1024,SQ8"``, ``"IVF4096,PQ48"``).
    n_queries, k : int
        The workload ``auto`` plans for: queries the index will answer (default 10,000) and
        neighbours per query (default 3, the LSB k). ``k`` is also the k of the tuned recall.
    target_recall : float
        Recall@k that IVF nprobe tuning aims for (default 0.95, the LSB target).
    exact_max, ivf_flat_max, nlist, nlist_min, nlist_max, encodings :
        Limits of ``auto``'s search space (see :func:`mmal.index.plan.plan_index`).
    threads : int, optional
        ``faiss.omp_set_num_threads`` value; the plan assumes FAISS's current setting otherwise.
    **params
        Backend options: for ``exact`` ``base_block``, ``query_block``, ``progress``, ``device``
        (``auto``: the GPU when torch sees CUDA); for FAISS ``nprobe``, ``tune_queries``,
        ``tune_z``, ``k_factor``, ``rerank``, ``train_size``, ``train_iters``, ``add_block``,
        ``seed``, ``progress``, ``spherical``, ``quantizer`` (see :class:`FaissIndex`).
    """
    vectors = check_vectors(vectors)
    check_metric(metric)
    n, d = vectors.shape
    if n == 0:
        raise ConfigError("cannot build a kNN index over 0 vectors")
    plan = None
    if backend == "auto":
        planned = {p: params[p] for p in _PLANNED if p in params}
        plan = plan_index(int(n), int(d), n_queries=n_queries, k=k, target_recall=target_recall,
                          threads=_faiss_threads(threads), exact_max=exact_max, ivf_flat_max=ivf_flat_max,
                          nlist=nlist, nlist_min=nlist_min, nlist_max=nlist_max, encodings=encodings, **planned)
        backend = plan.backend
        if backend != "exact":
            params = {**params, "k_factor": plan.k_factor, "train_iters": plan.train_iters,
                      "train_size": plan.train_size, "tune_queries": plan.tune_queries}
    if backend == "exact":
        allowed = {"base_block", "query_block", "progress", "device"}
        extra = set(params) - allowed - (set(_PLANNED) if plan is not None else set())
        if extra and plan is not None:
            raise ConfigError(f"auto chose exact ({plan.reason}); {sorted(extra)} apply to IVF backends only: "
                              "drop them or pass backend='IVF<nlist>,Flat' / 'IVF<nlist>,SQ8'")
        if extra:
            raise ConfigError(f"exact backend does not take {sorted(extra)}; allowed: {sorted(allowed)}")
        index = ExactIndex(vectors, metric=metric, **{p: v for p, v in params.items() if p in allowed})
    elif "BLAS" in backend.upper():
        raise ConfigError(f"backend '{backend}': the IVF*,BLAS* index was removed (it did not beat "
                          "FAISS by 2x at equal recall); use 'auto' or e.g. 'IVF1024,Flat' / 'IVF1024,SQ8'")
    else:
        if "tune_k" in params:
            raise ConfigError("build_index takes k= (the tuned recall is recall@k); tune_k is FaissIndex's name")
        try:
            index = FaissIndex(vectors, backend, metric=metric, target_recall=target_recall, tune_k=k,
                               threads=threads, **params)
        except TypeError as e:
            raise ConfigError(f"backend '{backend}': {e}") from None
    index.plan = plan
    return index
