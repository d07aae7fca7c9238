"""Graph smoothing of the probe's input over the unlabeled pool (a transductive feature step).

A linear probe fitted on a few labels sees each item alone. The pool it scores is
unlabeled but not unknown: items of one class sit near each other in the towers' space.
Smoothing each item's (L2-normalised, concatenated) embedding with its nearest
neighbours in the whole pool is one step of feature propagation over the k-nearest-
neighbour graph,

    x'_i = (1 - alpha) * x_i + alpha * (1 / k) * sum_{j in kNN(i)} x_j,

i.e. ``X' = (1 - alpha) X + alpha * A X`` with ``A`` the row-normalised kNN adjacency
without self-loops: the one-hop, personalised form of the propagation in SGC (Wu et al.
2019, eq. 8, ``S^K X`` with ``K = 1``) and of the label-spreading iteration of Zhou et
al. (2004, eq. 1) applied to features instead of labels. The probe is then fitted on the
smoothed rows of its labeled items and scores the smoothed rows of the pool. No label is
read; ``alpha = 0`` is the plain probe.

Choices the sources leave open, named parameters of :class:`~mmal.learners.linear.LinearProbe`:
``smooth`` (``alpha``; 0 = off; the ``auto`` learner cross-validates it) and ``smooth_k``
(``k`` = 10 neighbours, by cosine similarity over the items of the feature set passed to
``fit`` / ``score``, the item itself excluded).
"""

from __future__ import annotations

import numpy as np

#: neighbour tables kept for the most recent feature sets (auto's CV refits many probes on one)
_CACHE_SIZE = 2
_cache: list[tuple[tuple, list, "NeighbourTable"]] = []


class NeighbourTable:
    """The ``k`` nearest other rows of ``x [N, D]`` (cosine), computed lazily for the rows asked for."""

    def __init__(self, x: np.ndarray, k: int):
        from mmal.index import build_index

        self.x = np.ascontiguousarray(x, np.float32)
        self.k = int(min(k, len(self.x) - 1))
        self.rows = np.full((len(self.x), max(self.k, 0)), -1, np.int64)
        self.done = np.zeros(len(self.x), bool)
        self._index = build_index(self.x, metric="cosine") if self.k > 0 else None

    def neighbours(self, idx: np.ndarray) -> np.ndarray:
        """``[len(idx), k]`` neighbour rows of ``idx`` (the row itself never among them)."""
        idx = np.asarray(idx, np.int64)
        todo = np.unique(idx[~self.done[idx]])
        if len(todo) and self.k > 0:
            _, found = self._index.search(self.x[todo], self.k + 1)
            for r, row in enumerate(todo):
                f = found[r]
                f = f[(f != row) & (f >= 0)][: self.k]
                if len(f) < self.k:  # duplicates of the row may push it out of the first k + 1
                    f = np.concatenate([f, np.full(self.k - len(f), row)])
                self.rows[row] = f
            self.done[todo] = True
        return self.rows[idx]

    def smoothed(self, idx: np.ndarray, alpha: float) -> np.ndarray:
        """``(1 - alpha) x_i + alpha * mean_{j in kNN(i)} x_j`` for the rows ``idx`` -> ``[len(idx), D]``."""
        idx = np.asarray(idx, np.int64)
        if alpha == 0.0 or self.k == 0:
            return self.x[idx].copy()
        nb = self.neighbours(idx)
        return ((1.0 - alpha) * self.x[idx] + alpha * self.x[nb].mean(1)).astype(np.float32)


def neighbour_table(arrays: list, settings: tuple, build) -> NeighbourTable:
    """The cached table of the feature set made of ``arrays`` under ``settings``, else ``build()``.

    A feature set is known by the identity of its arrays; the cache holds them, so an
    identity cannot be reused by another array while its entry lives.
    """
    key = (tuple(id(a) for a in arrays), settings)
    for k, _, table in _cache:
        if k == key:
            return table
    table = build()
    _cache.insert(0, (key, list(arrays), table))
    del _cache[_CACHE_SIZE:]
    return table


__all__ = ["NeighbourTable", "neighbour_table"]
