"""Cost model behind ``build_index(backend="auto")``: exact vs FAISS IVF-Flat vs IVF-SQ8.

:func:`plan_index` is a pure function of the workload -- ``n`` indexed rows of dimension
``d``, ``n_queries`` queries of ``k`` neighbours, a ``target_recall`` -- and of the machine
constants below. It predicts, in seconds, build + tuning + search of every candidate

* ``exact``: ``Q * n * d`` multiply-adds (BLAS) + a top-k selection over ``Q * n`` scores;
* ``IVF{nlist},Flat`` and ``IVF{nlist},SQ8`` (+ exact re-rank of ``k * k_factor``) for
  ``nlist`` a power of two in ``[nlist_min, nlist_max]`` with at least ``MIN_ROWS_PER_LIST``
  rows per list:

  - k-means training: ``train_size * nlist * d * train_iters`` (BLAS, ``train_size =
    min(n, 40 * nlist)``: FAISS warns below 39 points per centroid);
  - adding: ``n * nlist * d`` (coarse assignment, BLAS) + ``n * d`` (read, normalise, copy);
  - nprobe tuning: exact neighbours of ``tune_queries`` rows (``tune_queries * n * d``, BLAS)
    and their IVF searches at every nprobe step up to the prior;
  - search: ``Q * nlist * d`` (coarse, BLAS) + ``Q * nprobe * (n / nlist) * d`` list scan
    (Flat: float32 rows; SQ8: 8-bit codes, about 2x faster per row here) + ``Q * k *
    k_factor * d`` re-rank (SQ8 only);

and returns the cheapest as an :class:`IndexPlan` (with every candidate's prediction and a
one-line reason). ``nprobe`` cannot be known without the data: the model uses a prior
(:func:`nprobe_prior`) and the index then tunes the real nprobe on held-out rows
(:mod:`mmal.index.tuning`).

The constants were measured on the project's benchmark machine (2 shared cores, OpenBLAS,
faiss-cpu 1.x; ``bench/knn.py`` data, 300k x 384, 20k queries, ``IVF{128..4096}``) and
are per thread; ``threads`` scales the BLAS and scan terms. They set the *ranking* of the
candidates, which is what the plan needs; ``bench/results/knn.json`` has the measured
totals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from mmal.errors import ConfigError

#: multiply-adds per second per thread of a float32 GEMM (exact search, k-means, coarse assignment)
GEMM_MADDS_PER_THREAD = 27e9
#: seconds per value to read, normalise and copy one row block into an index (single-threaded numpy)
PREP_S_PER_VALUE = 9e-9
#: row-dimensions scanned per second per thread by an IVF list scan (memory bound at these sizes)
SCAN_PER_THREAD = {"Flat": 1.85e9, "SQ8": 3.7e9}
#: seconds per value of the exact re-rank (gather of the shortlist rows + dot products)
RERANK_S_PER_VALUE = 3e-9
#: seconds per score of the exact backend's top-k selection (numpy argpartition, one thread)
SELECT_S_PER_SCORE = 2e-9
#: fixed cost of building any FAISS index (Python, allocation), seconds
IVF_FIXED_S = 0.05
#: nprobe that reached recall@3 = 0.95 with nlist 1024 at 300k, 1M and 10M rows on the benchmark
NPROBE_AT_095 = 12
#: training points per list (FAISS wants >= 39) and the fewest rows per list a candidate may have
TRAIN_PER_LIST = 40
MIN_ROWS_PER_LIST = 39

EXACT_MAX = 50_000
IVF_FLAT_MAX = 2_000_000
NLIST_MIN = 16
NLIST_MAX = 16_384
DEFAULT_QUERIES = 10_000
ENCODINGS = ("Flat", "SQ8")


@dataclass(frozen=True)
class IndexPlan:
    """The configuration :func:`plan_index` chose, and why.

    ``candidates`` lists ``(backend, predicted seconds)`` of every configuration considered,
    cheapest first; ``breakdown`` the predicted seconds of the chosen one by phase.
    """

    backend: str
    nlist: int
    nprobe_prior: int
    k_factor: int
    train_size: int
    train_iters: int
    tune_queries: int
    predicted_s: float
    reason: str
    workload: dict = field(default_factory=dict)
    breakdown: dict = field(default_factory=dict)
    candidates: tuple = ()

    def as_dict(self) -> dict:
        out = asdict(self)
        out["candidates"] = [list(c) for c in self.candidates]
        return out


def nprobe_prior(target_recall: float, k: int, nlist: int) -> int:
    """Prior nprobe for ``target_recall`` at recall@``k`` (the tuner finds the real one).

    ``NPROBE_AT_095 * ((1 - 0.95) / (1 - target)) ** 0.75 * sqrt(k / 3) * (1024 / nlist) ** 0.75``,
    clipped to ``[1, nlist]``; ``target = 1`` means every list. No paper gives this law; it
    is fitted to the benchmark data (clustered embeddings, ``bench/knn.py``): 1024 lists
    needed nprobe 10-16 for recall@3 ~0.96 at 100k, 300k, 1M and 10M rows, while fewer lists
    needed many more (512 lists: 40 at 100k, > 24 at 300k) and more lists fewer (2048 and
    4096 lists: 1-3 at 300k) -- on clustered data, finer lists follow the clusters. Halving
    the miss rate is assumed to cost about 1.7x the lists, a larger k sqrt(k) more.
    """
    if target_recall >= 1.0:
        return int(nlist)
    p = (NPROBE_AT_095 * ((1.0 - 0.95) / (1.0 - target_recall)) ** 0.75 * math.sqrt(max(1, k) / 3.0)
         * (1024.0 / nlist) ** 0.75)
    return int(max(1, min(nlist, math.ceil(p))))


def _check(name, value, lo):
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ConfigError(f"kNN plan: {name} must be an integer >= {lo}, got {value!r}")


def plan_index(n: int, d: int, *, n_queries: int | None = None, k: int = 3, target_recall: float = 0.95,
               threads: int = 1, exact_max: int = EXACT_MAX, ivf_flat_max: int = IVF_FLAT_MAX,
               nlist: int | None = None, nlist_min: int = NLIST_MIN, nlist_max: int = NLIST_MAX,
               encodings=ENCODINGS, k_factor: int = 4, train_iters: int = 10,
               train_size: int | None = None, tune_queries: int = 300) -> IndexPlan:
    """Cheapest predicted configuration for ``n_queries`` searches of ``k`` over ``n x d`` rows.

    Parameters
    ----------
    n, d : int
        Rows and dimension of the indexed vectors.
    n_queries : int, optional
        Queries the index will answer (all batches together). Default ``DEFAULT_QUERIES``
        (10,000); pass the real count -- with few queries exact search wins at any size.
    k : int
        Neighbours per query.
    target_recall : float in (0, 1]
        Recall@k the IVF nprobe is tuned to; ``1.0`` makes exact search the only exact answer.
    threads : int
        Threads FAISS and BLAS use (scales the BLAS and scan terms).
    exact_max : int
        Below this many rows always ``exact`` (default 50,000: exact is exact, and IVF saves
        well under a second there).
    ivf_flat_max : int
        Above this many rows ``Flat`` is not considered (its float32 copy of the rows would
        not fit next to the data; default 2,000,000).
    nlist : int, optional
        Only consider this many lists.
    nlist_min, nlist_max : int
        Range of the powers of two tried as nlist (defaults 16 and 16,384).
    encodings : sequence of {"Flat", "SQ8"}
        IVF encodings considered (default both).
    k_factor : int
        SQ8 re-rank shortlist is ``k * k_factor`` (default 4).
    train_iters, train_size, tune_queries : int
        k-means iterations (default 10), training sample (default ``min(n, 40 * nlist)``)
        and nprobe-tuning rows (default 300), as :class:`mmal.index.FaissIndex` takes them.

    Returns
    -------
    IndexPlan
        Deterministic: the same arguments give the same plan.
    """
    _check("n", n, 1)
    _check("d", d, 1)
    if n_queries is None:
        n_queries = DEFAULT_QUERIES
    _check("n_queries", n_queries, 1)
    _check("k", k, 1)
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) or not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"kNN plan: target_recall must be in (0, 1], got {target_recall!r}")
    _check("threads", threads, 1)
    _check("exact_max", exact_max, 0)
    _check("ivf_flat_max", ivf_flat_max, 0)
    _check("nlist_min", nlist_min, 1)
    _check("nlist_max", nlist_max, 1)
    if nlist_min > nlist_max:
        raise ConfigError(f"kNN plan: nlist_min ({nlist_min}) is larger than nlist_max ({nlist_max})")
    if nlist is not None:
        _check("nlist", nlist, 1)
    _check("k_factor", k_factor, 1)
    _check("train_iters", train_iters, 1)
    if train_size is not None:
        _check("train_size", train_size, 1)
    _check("tune_queries", tune_queries, 0)
    encodings = tuple(encodings)
    bad = [e for e in encodings if e not in ENCODINGS]
    if bad or not encodings:
        raise ConfigError(f"kNN plan: encodings must be a non-empty subset of {list(ENCODINGS)}, got {list(encodings)}")

    q = int(n_queries)
    workload = {"n": int(n), "d": int(d), "n_queries": q, "k": int(k), "target_recall": float(target_recall),
                "threads": int(threads)}
    gemm = GEMM_MADDS_PER_THREAD * threads
    kk = min(k, n)
    exact_s = q * n * d / gemm + q * n * SELECT_S_PER_SCORE + n * d * PREP_S_PER_VALUE
    cands = [("exact", exact_s, {"search": round(exact_s, 3)}, None)]

    def ivf_cost(nl: int, enc: str):
        npb = nprobe_prior(target_recall, k, nl)
        n_train = min(n, int(train_size) if train_size else TRAIN_PER_LIST * nl)
        rows_per_list = n / nl
        scan = SCAN_PER_THREAD[enc] * threads
        train = n_train * nl * d * train_iters / gemm
        add = n * nl * d / gemm + n * d * PREP_S_PER_VALUE
        tq = min(n, tune_queries)
        steps_tried = 2 * npb  # the tuner walks 1, 2, 3, 4, 5, 6, 8, ... up to about the prior
        tune = tq * n * d / gemm + tq * (nl * d / gemm + steps_tried * rows_per_list * d / scan)
        search = q * nl * d / gemm + q * npb * rows_per_list * d / scan
        rerank = q * kk * k_factor * d * RERANK_S_PER_VALUE if enc == "SQ8" else 0.0
        parts = {"train": train, "add": add, "tune": tune, "search": search + rerank, "fixed": IVF_FIXED_S}
        return sum(parts.values()), {p: round(v, 3) for p, v in parts.items()}, npb

    if n >= exact_max and target_recall < 1.0:
        if nlist is not None:
            nlists = [int(nlist)] if nlist <= n else []
        else:
            nlists = [2 ** e for e in range(int(math.log2(nlist_min)) if nlist_min > 1 else 0, 31)
                      if nlist_min <= 2 ** e <= nlist_max and 2 ** e * MIN_ROWS_PER_LIST <= n]
        for nl in nlists:
            for enc in encodings:
                if enc == "Flat" and n > ivf_flat_max:
                    continue
                cost, parts, npb = ivf_cost(nl, enc)
                cands.append((f"IVF{nl},{enc}", cost, parts, npb))
    # cheapest first; ties broken by the order built (exact, then smaller nlist, Flat before SQ8)
    order = sorted(range(len(cands)), key=lambda i: (round(cands[i][1], 9), i))
    best = cands[order[0]]
    backend, cost, parts, npb = best
    if n < exact_max:
        reason = f"n = {n:,} < exact_max = {exact_max:,}: exact search"
    elif target_recall >= 1.0:
        reason = "target_recall = 1: only exact search guarantees it"
    else:
        runner = cands[order[1]] if len(order) > 1 else None
        reason = (f"predicted {cost:.2f} s for {q:,} queries of k = {k} over {n:,} x {d}"
                  + (f"; next best {runner[0]} {runner[1]:.2f} s" if runner else ""))
    nl = int(backend[3:].split(",")[0]) if backend.startswith("IVF") else 0
    return IndexPlan(
        backend=backend, nlist=nl, nprobe_prior=int(npb or 0), k_factor=int(k_factor),
        train_size=int(min(n, train_size or TRAIN_PER_LIST * nl)) if nl else 0, train_iters=int(train_iters),
        tune_queries=int(tune_queries), predicted_s=round(cost, 3), reason=reason, workload=workload,
        breakdown=parts, candidates=tuple((cands[i][0], round(cands[i][1], 3)) for i in order),
    )
