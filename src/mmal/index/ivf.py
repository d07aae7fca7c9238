"""List-major IVF with BLAS scoring (``IVF{nlist},BLAS`` / ``IVF{nlist},BLAS16``) and nprobe tuning.

Why not FAISS ``IndexIVFFlat`` for batch search: FAISS scans the probed lists query by
query with SIMD distance loops, far below BLAS speed on the 2-core benchmark VM. LSB
asks all seeds at once (50k queries), so here the work is turned around: every query
picks its ``nprobe`` lists, the (query, list) pairs are grouped by list, and each list is
scored against all queries that probe it with one matrix product
``[m_l, D] x [D, n_l]`` (BLAS; ~10x faster per probed list than the FAISS scan on the
1M x 384 benchmark data). The coarse quantiser is FAISS k-means (spherical for cosine)
trained on a small seeded sample.

Storage (vectors kept in list order, L2-normalised for cosine):

* ``BLAS``: float32 -- scores are exact for the scanned rows;
* ``BLAS16``: float16 (half the RAM: 7.7 GB for 10M x 384) -- a ``k * k_factor``
  shortlist is re-ranked with exact scores read from the original vectors (memmap).

``nprobe`` is, unless given, **tuned at build time** (:func:`tune_nprobe`): ``tune_queries``
indexed rows are taken as held-out queries, their exact top-``tune_k`` neighbours
(excluding themselves) are accumulated during the pass that adds the vectors (no extra
read of a memmap), and nprobe grows along ``NPROBE_STEPS`` until recall@``tune_k`` on them
minus ``tune_z`` standard errors reaches ``target_recall``.
"""

from __future__ import annotations

import re

import numpy as np

from mmal.errors import ConfigError, MissingPackageError
from mmal.index.base import (
    Index, check_metric, check_vectors, iter_blocks, normalize_rows, release_pages, sort_topk,
)
from mmal.utils import ProgressTask, progress_task

_BLAS = re.compile(r"^IVF(\d+),BLAS(16)?$")

#: nprobe values tried by the tuner (about 1.25-1.5x apart; capped at nlist)
NPROBE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192,
                256, 320, 384, 512, 640, 768, 1024)


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise MissingPackageError("faiss-cpu", "IVF k-means / coarse assignment") from None
    return faiss


class TruthAccumulator:
    """Exact top-``k`` (self excluded) of held-out rows, accumulated block by block.

    Used while an index streams its vectors once, so tuning needs no second pass.
    ``queries [T, D]`` are prepared (normalised for cosine) copies of indexed rows
    ``self_rows [T]``; a row never counts as its own neighbour.
    """

    def __init__(self, queries: np.ndarray, self_rows: np.ndarray, k: int, metric: str):
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.self_rows = np.asarray(self_rows, dtype=np.int64)
        self.k = int(k)
        self.metric = metric
        self.larger = metric in ("cosine", "ip")
        fill = -np.inf if self.larger else np.inf
        self.best_s = np.full((len(self.q), self.k), fill, dtype=np.float32)  # [T, k]
        self.best_r = np.full((len(self.q), self.k), -1, dtype=np.int64)
        self.q_sq = np.einsum("ij,ij->i", self.q, self.q)

    def update(self, block: np.ndarray, start: int) -> None:
        """Merge one prepared block of rows ``[start, start + len(block))``."""
        s = self.q @ block.T  # [T, D] x [D, B] -> [T, B]
        if self.metric == "l2":
            s = np.maximum(self.q_sq[:, None] - 2.0 * s + np.einsum("ij,ij->i", block, block)[None, :], 0.0)
        rows = np.arange(start, start + block.shape[0], dtype=np.int64)
        own = (self.self_rows >= start) & (self.self_rows < start + block.shape[0])
        if own.any():  # a query is not its own neighbour
            s[np.flatnonzero(own), self.self_rows[own] - start] = -np.inf if self.larger else np.inf
        kk = min(self.k, block.shape[0])
        key = -s if self.larger else s
        part = np.argpartition(key, kk - 1, axis=1)[:, :kk] if block.shape[0] > kk else \
            np.broadcast_to(np.arange(block.shape[0]), (len(self.q), block.shape[0]))
        cand_s = np.concatenate([self.best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_r = np.concatenate([self.best_r, rows[part]], axis=1)
        self.best_s, self.best_r = sort_topk(cand_s, cand_r, self.k, self.larger)


def pick_tune_rows(n: int, tune_queries: int, seed: int) -> np.ndarray:
    """Sorted, seeded sample of ``min(n, tune_queries)`` row numbers used as tuning queries."""
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(n, size=min(n, int(tune_queries)), replace=False))


def recall_excluding_self(found: np.ndarray, truth: np.ndarray, self_rows: np.ndarray, k: int,
                          return_se: bool = False):
    """Mean recall@k of ``found [T, k+1]`` (self row dropped) against ``truth [T, k]``.

    With ``return_se`` also the standard error of that mean over the queries.
    """
    hits = []
    for f, t, s in zip(found.tolist(), truth.tolist(), self_rows.tolist()):
        f = [r for r in f if r != s and r >= 0][:k]
        t = [r for r in t if r >= 0]
        if t:
            hits.append(len(set(f) & set(t)) / len(t))
    mean = float(np.mean(hits)) if hits else 1.0
    if not return_se:
        return mean
    se = float(np.std(hits, ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0
    return mean, se


def tune_nprobe(index, queries: np.ndarray, self_rows: np.ndarray, truth: np.ndarray, *,
                target_recall: float, nlist: int, steps=NPROBE_STEPS, z: float = 1.0) -> tuple[int, list]:
    """Smallest nprobe in ``steps`` whose recall@k (self excluded) reaches ``target_recall``.

    "Reaches" means ``recall - z * stderr >= target_recall`` (one-sided margin for the
    sampling noise of the tuning queries; ``z=0`` compares the plain mean).

    Implements the nprobe auto-tuning of ``docs/selection.md`` ("kNN index"): ``index``
    must have a settable ``nprobe`` and a ``search(queries, k)``; ``truth [T, k]`` is the
    exact top-k of ``queries`` (rows ``self_rows``). Returns ``(nprobe, [(nprobe, recall, stderr), ...])``;
    if no step reaches the target, ``nprobe = nlist`` (exhaustive).
    """
    k = truth.shape[1]
    history = []
    cands = sorted({min(int(s), nlist) for s in steps} | {nlist})
    for npb in cands:
        index.nprobe = npb
        _, found = index.search(queries, k + 1)  # [T, k+1], may contain the query row itself
        rec, se = recall_excluding_self(found, truth, self_rows, k, return_se=True)
        history.append((int(npb), round(rec, 4), round(se, 4)))
        if rec - z * se >= target_recall or rec >= 1.0:
            return int(npb), history
    return int(nlist), history


class IVFBlasIndex(Index):
    """Inverted-file index searched list by list with matrix products (see module docstring).

    Parameters
    ----------
    vectors : float array [N, D]
        Numpy array or memmap; never loaded whole (read in ``add_block`` blocks, twice:
        once to assign lists, once to store rows in list order). Kept by reference for
        ``BLAS16`` re-ranking.
    factory : str
        ``"IVF{nlist},BLAS"`` (float32 storage) or ``"IVF{nlist},BLAS16"`` (float16 + re-rank).
    metric : {"cosine", "ip", "l2"}
    nprobe : int, optional
        Lists scanned per query. Default: tuned for ``target_recall``.
    target_recall : float
        Recall@``tune_k`` the tuner aims for (default 0.95; the LSB issue's target).
    tune_queries : int
        Held-out indexed rows used for tuning (default 300; ~0.01 standard error on recall).
    tune_k : int
        k of the tuned recall (default 3 = LSB's default ``k``).
    tune_z : float
        Safety margin: tuning stops when ``recall - tune_z * stderr >= target_recall``
        (stderr over the tuning queries; default 1.0). Without it, recall on fresh queries
        fell just short of the target (0.938 for 0.95 on the 1M benchmark).
    max_block : int
        Largest score block (queries x list rows) formed at once; big lists are scored in
        query chunks (default 2**22 floats = 16 MiB).
    train_size : int, optional
        k-means training sample (seeded, without replacement). Default ``min(N, 32 * nlist)``.
    train_iters : int
        k-means iterations (default 10).
    k_factor : int
        ``BLAS16`` shortlist is ``k * k_factor`` before exact re-ranking (default 4).
    rerank_rows : int
        ``BLAS16``: shortlist rows read from ``vectors`` per re-ranking chunk before the
        memmap pages are released (default 16384; bounds resident memory).
    add_block : int
        Rows per block while reading (default 65536).
    query_block : int
        Queries per coarse-assignment block at search time (default 8192).
    seed : int
        Seed of the training / tuning samples and of k-means.
    threads : int, optional
        ``faiss.omp_set_num_threads`` (k-means and assignment); default leaves it alone.
    progress : bool
        Progress over blocks and lists: bool or callable (:class:`mmal.utils.ProgressTask`).
    """

    def __init__(self, vectors, factory: str, *, metric: str = "cosine", nprobe: int | None = None,
                 target_recall: float = 0.95, tune_queries: int = 300, tune_k: int = 3,
                 tune_z: float = 1.0, max_block: int = 2**22, rerank_rows: int = 16384,
                 train_size: int | None = None, train_iters: int = 10, k_factor: int = 4,
                 add_block: int = 65536, query_block: int = 8192, seed: int = 0,
                 threads: int | None = None, progress: bool = False):
        faiss = _faiss()
        self.vectors = check_vectors(vectors)
        self.metric = check_metric(metric)
        n, d = (int(s) for s in self.vectors.shape)
        self.dim = d
        m = _BLAS.match(factory.replace(" ", ""))
        if m is None:
            raise ConfigError(f"unsupported backend '{factory}'; expected 'IVF<nlist>,BLAS' or 'IVF<nlist>,BLAS16'")
        nlist = int(m.group(1))
        if nlist < 1 or nlist > n:
            raise ConfigError(f"IVF{nlist}: need 1 <= nlist <= number of vectors ({n})")
        if not 0.0 < float(target_recall) <= 1.0:
            raise ConfigError(f"target_recall must be in (0, 1], got {target_recall}")
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        self.backend = factory
        self.nlist = nlist
        self.half = m.group(2) is not None
        self.k_factor = int(k_factor)
        self.add_block = int(add_block)
        self.query_block = int(query_block)
        self.seed = int(seed)
        self.progress = progress
        self.ntotal = n
        self.max_block = int(max_block)
        self.rerank_rows = int(rerank_rows)

        # 1. coarse k-means on a small seeded sample (vectors prepared like the index)
        n_train = min(n, int(train_size) if train_size else 32 * nlist)
        n_train = max(n_train, nlist)
        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
        xt = self._prep(self.vectors[sample])  # [T, D]
        release_pages(self.vectors)
        # cosine: spherical k-means + max-cosine assignment. Plain L2 k-means on unit vectors
        # leaves low-norm "hub" centroids that collect huge lists (measured on 1M x 384:
        # largest list 21.8k rows, imbalance sum(n_l^2) nlist / N^2 = 3.0).
        spherical = self.metric == "cosine"
        km = faiss.Kmeans(d, nlist, niter=int(train_iters), seed=self.seed, verbose=False,
                          spherical=spherical, max_points_per_centroid=10**9, min_points_per_centroid=1)
        km.train(xt)
        del xt
        self.centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)  # [nlist, D]
        self._quant = faiss.IndexFlatL2(d) if self.metric == "l2" else faiss.IndexFlatIP(d)
        self._quant.add(self.centroids)

        # 2. assign every row (one pass); exact truth of the tuning rows on the way
        tune_rows = pick_tune_rows(n, tune_queries, self.seed) if nprobe is None else np.zeros(0, np.int64)
        acc = None
        if len(tune_rows):
            acc = TruthAccumulator(self._prep(self.vectors[tune_rows]), tune_rows, min(int(tune_k), n - 1) or 1, self.metric)
        labels = np.empty(n, dtype=np.int32)
        for a, b in self._blocks("IVF assign"):
            blk = self._prep(self.vectors[a:b])  # [B, D]
            release_pages(self.vectors)
            labels[a:b] = self._quant.search(blk, 1)[1][:, 0]
            if acc is not None:
                acc.update(blk, a)

        # 3. store rows in list order (second pass)
        order = np.argsort(labels, kind="stable")  # list-ordered position -> row
        counts = np.bincount(labels, minlength=nlist)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [nlist + 1]
        self.list_rows = order.astype(np.int64)  # [N]
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n, dtype=np.int64)
        del order, labels
        self.store = np.empty((n, d), dtype=np.float16 if self.half else np.float32)
        self.store_sq = np.empty(n, dtype=np.float32) if self.metric == "l2" else None
        for a, b in self._blocks("IVF store"):
            blk = self._prep(self.vectors[a:b])
            release_pages(self.vectors)
            self.store[pos[a:b]] = blk
            if self.store_sq is not None:
                self.store_sq[pos[a:b]] = np.einsum("ij,ij->i", blk, blk)
        del pos

        # 4. nprobe: given, or tuned for target_recall
        self.tune_history: list = []
        if nprobe is not None:
            self.nprobe = int(nprobe)
        elif acc is None:  # tuning switched off (tune_queries=0): scan 1/16 of the lists
            self.nprobe = max(1, nlist // 16)
        else:
            self.nprobe, self.tune_history = tune_nprobe(
                self, acc.q, tune_rows, acc.best_r, target_recall=float(target_recall), nlist=nlist,
                z=float(tune_z))

    # ---- helpers ----------------------------------------------------------------------
    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int):
        if int(value) < 1:
            raise ConfigError(f"nprobe must be >= 1, got {value}")
        self._nprobe = int(min(int(value), self.nlist))

    def _prep(self, block) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32)
        return normalize_rows(block) if self.metric == "cosine" else block

    def _blocks(self, what: str):
        blocks = list(iter_blocks(self.ntotal, self.add_block))
        if not self.progress:
            yield from blocks
            return
        with progress_task(len(blocks), what, self.progress) as advance:
            for ab in blocks:
                yield ab
                advance()

    # ---- search -----------------------------------------------------------------------
    def search(self, queries, k: int):
        """k nearest rows (see :meth:`Index.search`), list-major with one GEMM per list."""
        queries, k = self._check_queries(queries, k)
        q = self._prep(queries)  # [Q, D]
        nq = q.shape[0]
        larger = self.larger_is_closer
        bad = -np.inf if larger else np.inf
        npb = self.nprobe
        # shortlist per (query, list): exact for float32 storage, re-ranked for float16
        kk = min(self.ntotal, k * self.k_factor) if self.half else k

        # coarse lists of every query: [Q, nprobe]
        probes = np.empty((nq, npb), dtype=np.int64)
        for a, b in iter_blocks(nq, self.query_block):
            probes[a:b] = self._quant.search(q[a:b], npb)[1]
        q_sq = np.einsum("ij,ij->i", q, q) if self.metric == "l2" else None

        # group (query, slot) pairs by list
        flat = probes.ravel()  # [Q * nprobe]
        order = np.argsort(flat, kind="stable")
        pair_q = order // npb
        pair_slot = order % npb
        bounds = np.searchsorted(flat[order], np.arange(self.nlist + 1))
        cand_s = np.full((nq, npb * kk), bad, dtype=np.float32)  # [Q, nprobe * kk]
        cand_r = np.full((nq, npb * kk), -1, dtype=np.int64)
        lists = np.flatnonzero(np.diff(bounds) > 0)
        bar = ProgressTask(len(lists), "IVF search", self.progress)
        try:
            for lst in lists:
                lo, hi = self.offsets[lst], self.offsets[lst + 1]
                if hi > lo:
                    pa, pb = bounds[lst], bounds[lst + 1]
                    xs = np.asarray(self.store[lo:hi], dtype=np.float32)  # [n_l, D]
                    take = min(kk, hi - lo)
                    step = max(1, self.max_block // int(hi - lo))
                    for ca in range(pa, pb, step):  # query chunks bound the score block size
                        cb = min(pb, ca + step)
                        qi, slot = pair_q[ca:cb], pair_slot[ca:cb]
                        s = q[qi] @ xs.T  # [m, D] x [D, n_l] -> [m, n_l]
                        if self.metric == "l2":
                            s = np.maximum(q_sq[qi, None] - 2.0 * s + self.store_sq[None, lo:hi], 0.0)
                        if hi - lo > take:  # best `take` columns, no negated copy
                            part = (np.argpartition(s, hi - lo - take, axis=1)[:, -take:] if larger
                                    else np.argpartition(s, take - 1, axis=1)[:, :take])
                        else:
                            part = np.broadcast_to(np.arange(hi - lo), (len(qi), hi - lo))
                        cols = slot[:, None] * kk + np.arange(take)[None, :]  # [m, take]
                        cand_s[qi[:, None], cols] = np.take_along_axis(s, part, axis=1)
                        cand_r[qi[:, None], cols] = self.list_rows[lo + part]
                bar.advance()
        finally:
            bar.close()
        if self.half:
            return self._rerank(q, cand_s, cand_r, k)
        return sort_topk(cand_s, cand_r, k, larger)

    def _rerank(self, q: np.ndarray, cand_s: np.ndarray, cand_r: np.ndarray, k: int):
        """Exact scores of each query's best ``k * k_factor`` float16 candidates (original vectors)."""
        larger = self.larger_is_closer
        kk = min(cand_r.shape[1], k * self.k_factor)
        _, rows = sort_topk(cand_s, cand_r, kk, larger)  # [Q, kk]
        out_s = np.empty((q.shape[0], k), dtype=np.float32)
        out_r = np.empty((q.shape[0], k), dtype=np.int64)
        # small chunks: scattered memmap reads map whole fault-around windows into RSS until
        # release_pages (262k rows per chunk reached 17.3 GB peak RSS at 10M x 384)
        step = max(1, self.rerank_rows // max(kk, 1))
        for a, b in iter_blocks(q.shape[0], step):
            r = rows[a:b]
            flat = r.ravel()
            uniq, inv = np.unique(np.where(flat >= 0, flat, 0), return_inverse=True)  # sorted reads
            vecs = self._prep(self.vectors[uniq])  # [U, D]
            release_pages(self.vectors)
            g = vecs[inv.reshape(r.shape)]  # [q, kk, D]
            if self.metric == "l2":
                diff = g - q[a:b, None, :]
                s = np.einsum("qkd,qkd->qk", diff, diff)
            else:
                s = np.einsum("qd,qkd->qk", q[a:b], g)
            s = np.where(r >= 0, s, np.inf if self.metric == "l2" else -np.inf).astype(np.float32)
            out_s[a:b], out_r[a:b] = sort_topk(s, r, k, larger)
        out_r[~np.isfinite(out_s)] = -1
        return out_s, out_r
