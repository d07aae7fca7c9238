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
        """Merge one prepared block of rows ``[start, start + len(block))``."""
        s = self.q @ block.T  # [T, D] x [D, B] -> [T, B]
        if self.metric == "l2":
            s = np.maximum(self.q_sq[:, None] - 2.0 * s + np.einsum("ij,ij->i", block, block)[None, :], 0.0)
        rows = np.arange(start, start + block.shape[0], dtype=np.int64)
        own = (self.self_rows >= start) & (self.self_rows < start + block.shape[0])
        if own.any():  # a query is not its own neighbour
            s[np.flatnonzero(own), self.self_rows[own] - start] = -np.inf if self.larger else np.inf
        key = -s if self.larger else s  # smaller key = closer
        thr = -self.best_s[:, -1] if self.larger else self.best_s[:, -1]  # key of the current k-th, inf if unfilled
        if np.all(np.isfinite(thr)):  # running top-k full: only scores strictly better can enter
            self._merge_better(s, key, thr, rows)
            return
        head = min(block.shape[0], max(4 * self.k, 1024))  # fill the top-k from the first columns, then filter
        kk = min(self.k, head)
        part = np.argpartition(key[:, :head], kk - 1, axis=1)[:, :kk] if head > kk else \
            np.broadcast_to(np.arange(head), (len(self.q), head))
        cand_s = np.concatenate([self.best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_r = np.concatenate([self.best_r, rows[part]], axis=1)
        self.best_s, self.best_r = sort_topk(cand_s, cand_r, self.k, self.larger)
        if head < block.shape[0]:
            thr = -self.best_s[:, -1] if self.larger else self.best_s[:, -1]
            if np.all(np.isfinite(thr)):
                self._merge_better(s[:, head:], key[:, head:], thr, rows[head:])
            else:  # pragma: no cover - fewer than k finite scores in the head (k > head rows)
                self.best_s, self.best_r = sort_topk(np.concatenate([self.best_s, s[:, head:]], axis=1),
                                                     np.concatenate([self.best_r, np.broadcast_to(
                                                         rows[head:], (len(self.q), len(rows) - head))], axis=1),
                                                     self.k, self.larger)

    def _merge_better(self, s, key, thr, rows):
        """Merge only the block entries closer than each query's current k-th (later rows lose ties).

        After the first block almost every score fails this test, so the top-k selection runs
        over a few candidates instead of the whole ``[T, B]`` block.
        """
        qi, cj = np.nonzero(key < thr[:, None])  # [M], [M]
        if len(qi) == 0:
            return
        t, k = self.best_s.shape
        all_q = np.concatenate([np.repeat(np.arange(t), k), qi])
        all_s = np.concatenate([self.best_s.ravel(), s[qi, cj].astype(np.float32)])
        all_r = np.concatenate([self.best_r.ravel(), rows[cj]])
        order = np.lexsort((all_r, -all_s if self.larger else all_s, all_q))  # query, then score, then row
        starts = np.concatenate([[0], np.cumsum(np.bincount(all_q, minlength=t))[:-1]])
        take = order[starts[:, None] + np.arange(k)]  # [T, k]: the k best of every query
        self.best_s, self.best_r = all_s[take], all_r[take]


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


def list_rank_recall(query_lists: np.ndarray, truth: np.ndarray, truth_lists: np.ndarray, nprobes) -> list:
    """Recall@k of an IVF search at every ``nprobe``, from which lists the true neighbours live in.

    ``query_lists [T, P]``: each tuning query's lists, nearest first (the coarse quantizer's
    order, which IVF search probes); ``truth [T, k]`` the exact neighbours (``-1`` = none) and
    ``truth_lists [T, k]`` the list each was added to. With exhaustive scanning inside the
    probed lists (IVF-Flat), a true top-k neighbour is returned exactly when its list is among
    the first ``nprobe`` -- so one coarse search gives the recall of every nprobe. Returns
    ``[(nprobe, recall, stderr), ...]`` (stderr over the queries).
    """
    p = query_lists.shape[1]
    match = query_lists[:, None, :] == truth_lists[:, :, None]  # [T, k, P]
    rank = np.where(match.any(axis=2), match.argmax(axis=2), p)  # [T, k]; p = beyond the lists looked at
    valid = truth >= 0
    n_true = valid.sum(axis=1)
    keep = n_true > 0
    out = []
    for npb in nprobes:
        hits = ((rank < npb) & valid).sum(axis=1)[keep] / n_true[keep]  # [T']
        mean = float(hits.mean()) if len(hits) else 1.0
        se = float(hits.std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0
        out.append((int(npb), round(mean, 4), round(se, 4)))
    return out


def tune_nprobe_by_list_rank(query_lists: np.ndarray, truth: np.ndarray, truth_lists: np.ndarray, *,
                             target_recall: float, nlist: int, steps=NPROBE_STEPS, z: float = 1.0) -> tuple[int, list]:
    """Smallest nprobe in ``steps`` whose list-coverage recall (:func:`list_rank_recall`) reaches the target.

    Same rule as :func:`tune_nprobe` (``recall - z * stderr >= target_recall``), without an
    index search per step. Exact for IVF-Flat; for quantised lists (SQ8, PQ) it is an upper
    bound of the recall, so their tuner starts from the nprobe found here and checks by search.
    Returns ``(nprobe, history)``; ``nprobe = nlist`` if no step reaches the target.
    """
    cands = sorted({min(int(s), nlist) for s in steps} | {nlist})
    hist = list_rank_recall(query_lists, truth, truth_lists, cands)
    for i, (npb, rec, se) in enumerate(hist):
        if rec - z * se >= target_recall or rec >= 1.0:
            return int(npb), hist[:i + 1]
    return int(nlist), hist
