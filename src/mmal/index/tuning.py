"""nprobe tuning for IVF indexes: exact truth of held-out rows, recall, the tuner.

``tune_queries`` indexed rows are taken as held-out queries; their exact top-``tune_k``
neighbours (excluding themselves) are accumulated while the index streams its vectors once
(:class:`TruthAccumulator`), and nprobe grows along ``NPROBE_STEPS`` until recall@``tune_k``
on them minus ``tune_z`` standard errors reaches ``target_recall`` (:func:`tune_nprobe`).
Used by :class:`mmal.index.FaissIndex` (moved here from the removed ``IVF*,BLAS*`` index).
"""

from __future__ import annotations

import numpy as np

from mmal.index.base import sort_topk

#: nprobe values tried by the tuner (about 1.25-1.5x apart; capped at nlist)
NPROBE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192,
                256, 320, 384, 512, 640, 768, 1024)


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
        """Merge one prepared block of rows ``[start, start + len(block))``.

        The block's top-``k + 1`` per query comes from FAISS's exhaustive ``knn`` (BLAS +
        a C++ heap, threaded); the query's own row is then dropped, so ``k`` remain.
        """
        import faiss

        block = np.ascontiguousarray(block, dtype=np.float32)
        kk = min(self.k + 1, block.shape[0])
        fmetric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        s, part = faiss.knn(self.q, block, kk, metric=fmetric)  # [T, kk] scores, block-local rows
        rows = np.where(part >= 0, part + start, -1).astype(np.int64)
        fill = -np.inf if self.larger else np.inf
        s = np.where((rows == self.self_rows[:, None]) | (rows < 0), fill, s).astype(np.float32)  # not its own neighbour
        cand_s = np.concatenate([self.best_s, s], axis=1)
        cand_r = np.concatenate([self.best_r, np.where(np.isfinite(s), rows, -1)], axis=1)
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
