"""FAISS backends: ``Flat``, ``IVF{nlist},Flat``, and ``IVF{nlist},PQ{m}`` / ``IVF{nlist},SQ8`` with exact re-ranking.

Vectors are added in blocks (a memmap is never loaded whole). For cosine the blocks are
L2-normalised on the fly and the index uses L2 internally (equivalent ranking on the
unit sphere, and better-behaved IVF/PQ quantisation than raw inner product).

PQ and SQ8 (8-bit scalar quantised) indexes re-rank: ``search`` asks FAISS for a shortlist of ``k * k_factor`` rows and
recomputes their exact scores from the *original* vectors (read from the memmap, sorted
by row for locality) -- like FAISS ``RFlat`` but without a second in-RAM copy.
"""

from __future__ import annotations

import re

import numpy as np

from mmal.errors import ConfigError, MissingPackageError
from mmal.index.base import (
    Index, check_metric, check_vectors, iter_blocks, normalize_rows, release_pages, sort_topk,
)
from mmal.utils import ProgressTask

_FACTORY = re.compile(r"^(?:Flat|IVF(\d+),Flat|IVF(\d+),PQ(\d+)(?:x(\d+))?|IVF(\d+),SQ8)$")


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise MissingPackageError("faiss-cpu", "the FAISS kNN backend") from None
    return faiss


class FaissIndex(Index):
    """A FAISS index built from a factory string.

    Parameters
    ----------
    vectors : float array [N, D]
        Numpy array or memmap; kept by reference for re-ranking, never copied whole.
    factory : str
        ``"Flat"``, ``"IVF{nlist},Flat"``, ``"IVF{nlist},PQ{m}"`` (optionally ``x{nbits}``) or
        ``"IVF{nlist},SQ8"`` (8-bit scalar quantiser, FAISS ``IndexIVFScalarQuantizer``).
    metric : {"cosine", "ip", "l2"}
    nprobe : int, optional
        Inverted lists visited per query (IVF only). Default: tuned at build time so that
        recall@``tune_k`` on ``tune_queries`` held-out indexed rows reaches
        ``target_recall`` (:func:`mmal.index.tuning.tune_nprobe`; their exact neighbours are
        accumulated while the vectors are added, no extra pass).
    target_recall : float
        Recall the nprobe tuner aims for (default 0.95, the LSB target).
    tune_queries, tune_k, tune_z :
        Tuning rows (default 300), k of the tuned recall (default 3) and the one-sided
        margin in standard errors (default 1.0).
        ``tune_queries=0`` skips tuning (nprobe = ``max(16, nlist // 64)``).
    k_factor : int
        Re-ranking shortlist is ``k * k_factor`` (PQ and SQ8 only; default 10). ``rerank=False``
        turns re-ranking off.
    train_size : int, optional
        Vectors sampled (uniformly, without replacement, by ``seed``) to train the
        coarse quantiser / PQ. Default ``min(N, 40 * nlist)`` (FAISS wants >= 39 per list).
    train_iters : int
        k-means iterations for the coarse quantiser (default 10; FAISS's own is 25,
        which costs 2.5x the training time for little recall at k <= 10).
    add_block : int
        Rows normalised and added per block (default 65536).
    seed : int
        Seed of the training sample and of k-means.
    threads : int, optional
        ``faiss.omp_set_num_threads`` value; default leaves FAISS's setting alone.
    progress : bool
        Progress while adding: bool or callable (:class:`mmal.utils.ProgressTask`).
    quantizer : {"auto", "flat", "hnsw"}
        Coarse quantiser. ``hnsw`` (an HNSW graph over the centroids, like FAISS
        ``IVF{nlist}_HNSW32``) makes k-means assignment and adding cost ~log(nlist)
        instead of nlist per vector in theory; ``auto`` = ``flat`` (on 200k x 384, 2 cores,
        ``hnsw`` built 3x slower because FAISS rebuilds the graph every k-means step).
    hnsw_m : int
        HNSW graph degree (default 32).
    spherical : bool
        Cosine only: search by inner product on unit rows with spherical k-means for the
        coarse quantiser (default True). ``False`` = L2 on the unit sphere with plain
        k-means (same ranking; more unbalanced lists).
    """

    def __init__(self, vectors, factory: str, *, metric: str = "cosine", nprobe: int | None = None,
                 target_recall: float = 0.95, tune_queries: int = 300, tune_k: int = 3, tune_z: float = 1.0,
                 k_factor: int = 10, rerank: bool = True, train_size: int | None = None,
                 train_iters: int = 10, add_block: int = 65536, seed: int = 0,
                 threads: int | None = None, progress: bool = False, quantizer: str = "auto",
                 hnsw_m: int = 32, spherical: bool = True):
        faiss = _faiss()
        self.vectors = check_vectors(vectors)
        self.metric = check_metric(metric)
        self.ntotal_input, self.dim = (int(s) for s in self.vectors.shape)
        m = _FACTORY.match(factory.replace(" ", ""))
        if m is None:
            raise ConfigError(
                f"unsupported FAISS backend '{factory}'; expected 'Flat', 'IVF<nlist>,Flat', "
                "'IVF<nlist>,PQ<m>' (e.g. 'IVF4096,PQ48') or 'IVF<nlist>,SQ8'"
            )
        self.backend = factory
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        self.add_block = int(add_block)
        self.k_factor = int(k_factor)
        self.seed = int(seed)
        n, d = self.ntotal_input, self.dim
        nlist = int(m.group(1) or m.group(2) or m.group(5) or 0)
        pq_m = int(m.group(3)) if m.group(3) else 0
        nbits = int(m.group(4)) if m.group(4) else 8
        self.is_pq = pq_m > 0
        self.is_sq8 = m.group(5) is not None
        self.rerank = bool(rerank) and (self.is_pq or self.is_sq8)
        if pq_m and d % pq_m:
            raise ConfigError(f"PQ{pq_m}: dimension {d} is not divisible by m={pq_m}")
        if nlist and nlist > n:
            raise ConfigError(f"IVF{nlist}: more lists than vectors ({n}); use a smaller nlist")
        # internal FAISS metric for cosine: inner product on unit rows with spherical k-means
        # (default), or L2 on the unit sphere (same ranking, plain k-means; its low-norm hub
        # centroids make lists ~3x unbalanced on the 1M benchmark, so more rows are scanned)
        self.spherical = bool(spherical) and self.metric == "cosine"
        self._internal_ip = self.metric == "ip" or self.spherical
        fmetric = faiss.METRIC_INNER_PRODUCT if self._internal_ip else faiss.METRIC_L2

        if nlist == 0:
            index = faiss.IndexFlatIP(d) if self._internal_ip else faiss.IndexFlatL2(d)
        else:
            if quantizer == "auto":
                quantizer = "flat"  # measured: faiss k-means with an HNSW assigner was 3x slower here
            if quantizer not in ("flat", "hnsw"):
                raise ConfigError(f"quantizer must be 'auto', 'flat' or 'hnsw', got {quantizer!r}")
            self.quantizer_kind = quantizer
            if quantizer == "hnsw":  # approximate coarse assignment: training/adding cost ~ log(nlist)
                quantizer = faiss.IndexHNSWFlat(d, int(hnsw_m), fmetric)
                quantizer.hnsw.efSearch = 64
            else:
                quantizer = faiss.IndexFlatIP(d) if self._internal_ip else faiss.IndexFlatL2(d)
            if pq_m:
                index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, nbits, fmetric)
            elif self.is_sq8:
                index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, fmetric)
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, fmetric)
            index.cp.niter = int(train_iters)
            index.cp.spherical = self.spherical
            index.cp.seed = self.seed
            index.cp.max_points_per_centroid = 10**9  # we already sampled; no FAISS re-sampling
            self._quantizer = quantizer  # keep alive
            default_train = max(40 * nlist, 40 * 2**nbits if pq_m else 0)
            n_train = min(n, int(train_size) if train_size else default_train)
            n_train = max(n_train, min(n, nlist))
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
            index.train(self._prep(self.vectors[sample]))
            release_pages(self.vectors)
            index.nprobe = int(nprobe) if nprobe else max(16, nlist // 64)
            index.nprobe = min(index.nprobe, nlist)
        self.nlist = nlist
        self.index = index
        from mmal.index.tuning import TruthAccumulator, pick_tune_rows

        if not 0.0 < float(target_recall) <= 1.0:
            raise ConfigError(f"target_recall must be in (0, 1], got {target_recall}")
        tune = nlist > 0 and nprobe is None and int(tune_queries) > 0 and n > 1
        tune_rows = pick_tune_rows(n, tune_queries, self.seed) if tune else np.zeros(0, np.int64)
        acc = TruthAccumulator(self._prep(self.vectors[tune_rows]), tune_rows, min(int(tune_k), n - 1),
                               self.metric) if tune else None
        self._add_all(progress, acc)
        self.ntotal = int(index.ntotal)
        self.tune_history: list = []
        self.train_iters, self.target_recall = int(train_iters), float(target_recall)
        self.train_size = int(n_train) if nlist else 0
        self.tune_queries = int(len(tune_rows))
        self.nprobe_source = ("given" if nprobe else "tuned" if acc is not None else
                              "default max(16, nlist // 64)") if nlist else None
        self.tune_list_rank_history: list = []
        if acc is not None:
            self.nprobe = self._tune(acc, tune_rows, float(target_recall), float(tune_z))

    def _tune(self, acc, tune_rows: np.ndarray, target: float, z: float) -> int:
        """nprobe for ``target`` recall on the held-out rows (:mod:`mmal.index.tuning`).

        One coarse search of the tuning rows and the lists of their true neighbours give the
        recall of every nprobe for IVF-Flat (:func:`tune_nprobe_by_list_rank`); quantised
        lists (SQ8, PQ) start from that nprobe and check by searching, step by step.
        """
        from mmal.index.tuning import NPROBE_STEPS, tune_nprobe, tune_nprobe_by_list_rank

        truth = acc.best_r  # [T, k]
        uniq, inv = np.unique(np.maximum(truth, 0), return_inverse=True)
        vecs = self._prep(self.vectors[uniq])  # the true neighbours' rows, as they were added
        release_pages(self.vectors)
        _, lists = self.index.quantizer.search(vecs, 1)  # [U, 1]: the list each was added to
        truth_lists = np.where(truth >= 0, lists[inv.reshape(truth.shape), 0], -1)
        max_np = min(self.nlist, max(NPROBE_STEPS))
        _, query_lists = self.index.quantizer.search(acc.q, max_np)  # [T, P] nearest lists first
        npb, self.tune_list_rank_history = tune_nprobe_by_list_rank(
            query_lists, truth, truth_lists, target_recall=target, nlist=self.nlist, z=z)
        if not (self.is_pq or self.is_sq8):  # IVF-Flat: list coverage is the search's recall
            self.tune_history = self.tune_list_rank_history
            return npb
        npb, self.tune_history = tune_nprobe(self, acc.q, tune_rows, truth, target_recall=target, nlist=self.nlist,
                                             steps=[s for s in NPROBE_STEPS if s >= npb] or [npb], z=z)
        return npb

    def _describe_backend(self) -> dict:
        out = {"nlist": self.nlist or None, "nprobe": self.nprobe, "nprobe_source": self.nprobe_source,
               "target_recall": self.target_recall if self.nprobe_source == "tuned" else None,
               "tune_history_(nprobe,recall,stderr)": [list(h) for h in self.tune_history],
               "tune_by_list_coverage_(nprobe,recall,stderr)": [list(h) for h in self.tune_list_rank_history],
               "rerank_k_factor": self.k_factor if self.rerank else None}
        if self.nlist:
            out.update(train_size=self.train_size, train_iters=self.train_iters, tune_queries=self.tune_queries,
                       spherical_kmeans=self.spherical)
        return out

    # ---- building ---------------------------------------------------------------------
    def _prep(self, block) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32)
        return normalize_rows(block) if self.metric == "cosine" else block

    def _add_all(self, progress: bool, acc=None):
        blocks = list(iter_blocks(self.ntotal_input, self.add_block))
        bar = ProgressTask(len(blocks), f"FAISS add ({self.backend})", progress)
        try:
            for a, b in blocks:
                blk = self._prep(self.vectors[a:b])
                self.index.add(blk)
                if acc is not None:  # exact neighbours of the tuning rows, same pass
                    acc.update(blk, a)
                release_pages(self.vectors)
                bar.advance()
        finally:
            bar.close()

    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.nlist else None

    @nprobe.setter
    def nprobe(self, value: int):
        if self.nlist:
            self.index.nprobe = int(min(value, self.nlist))

    # ---- search -----------------------------------------------------------------------
    def search(self, queries, k: int, *, query_block: int = 4096):
        """k nearest rows (see :meth:`Index.search`); PQ shortlists are re-ranked exactly."""
        queries, k = self._check_queries(queries, k)
        nq = queries.shape[0]
        out_s = np.empty((nq, k), dtype=np.float32)
        out_r = np.empty((nq, k), dtype=np.int64)
        kk = min(self.ntotal, k * self.k_factor) if self.rerank else k
        for a, b in iter_blocks(nq, query_block):
            q = self._prep(queries[a:b])  # [q, D]
            dist, rows = self.index.search(q, kk)  # [q, kk]
            if self.rerank:
                dist, rows = self._rerank(q, rows, k)
            else:
                dist, rows = self._to_metric(q, dist), rows.astype(np.int64)
                dist, rows = sort_topk(dist, rows, k, self.larger_is_closer)
            out_s[a:b], out_r[a:b] = dist, rows
        return out_s, out_r

    def _to_metric(self, q: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """FAISS internal distance -> public score (cosine similarity from unit-sphere L2)."""
        if self.metric == "cosine" and self.spherical:  # already a cosine similarity
            return np.where(np.isfinite(dist) & (dist > -1e30), dist, -np.inf).astype(np.float32)
        if self.metric == "cosine":
            valid = np.isfinite(dist) & (dist < 1e30)
            return np.where(valid, 1.0 - dist / 2.0, -np.inf).astype(np.float32)
        return dist.astype(np.float32)

    def _rerank(self, q: np.ndarray, rows: np.ndarray, k: int):
        """Exact scores for a shortlist ``rows [q, kk]`` read from the original vectors."""
        flat = rows.ravel()
        valid = flat >= 0
        uniq, inv = np.unique(np.where(valid, flat, 0), return_inverse=True)  # sorted: sequential memmap reads
        vecs = self._prep(self.vectors[uniq])  # [U, D]
        release_pages(self.vectors)
        gathered = vecs[inv.reshape(rows.shape)]  # [q, kk, D]
        if self.metric == "l2":
            diff = gathered - q[:, None, :]
            scores = np.einsum("qkd,qkd->qk", diff, diff)
        else:
            scores = np.einsum("qd,qkd->qk", q, gathered)  # [q, kk]
        scores = np.where(rows >= 0, scores, np.inf if self.metric == "l2" else -np.inf).astype(np.float32)
        return sort_topk(scores, rows.astype(np.int64), k, self.larger_is_closer)
