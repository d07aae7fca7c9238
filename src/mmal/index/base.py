"""Common pieces of the kNN backends: the :class:`Index` interface and block helpers.

Scores convention (all backends): for ``metric="cosine"`` and ``"ip"`` ``search`` returns
similarities (larger = closer, sorted descending); for ``"l2"`` squared L2 distances
(smaller = closer, sorted ascending). Ties are broken by the smaller row number.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError

METRICS = ("cosine", "ip", "l2")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'; expected one of {', '.join(METRICS)}")
    return metric


def check_vectors(vectors, what: str = "vectors") -> np.ndarray:
    """Validate a 2-D float array (memmaps are kept as they are, never copied)."""
    if not hasattr(vectors, "ndim"):
        vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array [N, D], got shape {vectors.shape}")
    if vectors.shape[1] == 0:
        raise ConfigError(f"{what} has dimension 0")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise ConfigError(f"{what} must be floating point, got dtype {vectors.dtype}")
    return vectors


def normalize_rows(block: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """L2-normalise rows of one in-RAM block (float32 copy). ``[B, D] -> [B, D]``."""
    block = np.asarray(block, dtype=np.float32)
    norms = np.linalg.norm(block, axis=1, keepdims=True)  # [B, 1]
    return block / np.maximum(norms, eps)


def release_pages(vectors) -> None:
    """Drop this process's mapped pages of a memmap (they stay in the OS page cache).

    Called after each block so that reading a 15 GB memmap does not count 15 GB of
    resident memory; a no-op for in-RAM arrays.
    """
    mm = getattr(vectors, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise"):
        import mmap as _mmap

        try:
            mm.madvise(_mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):  # pragma: no cover - platform specific
            pass


def iter_blocks(n: int, block_size: int):
    """Yield ``(start, stop)`` pairs covering ``range(n)`` in blocks."""
    for start in range(0, n, block_size):
        yield start, min(n, start + block_size)


def row_inv_norms(vectors, block_size: int = 65536, eps: float = 1e-12) -> np.ndarray:
    """``1 / ||x_i||`` for every row, computed block by block (memmap-friendly). ``[N]``."""
    out = np.empty(vectors.shape[0], dtype=np.float32)
    for a, b in iter_blocks(vectors.shape[0], block_size):
        blk = np.asarray(vectors[a:b], dtype=np.float32)
        out[a:b] = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", blk, blk)), eps)
    return out


def sort_topk(scores: np.ndarray, rows: np.ndarray, k: int, larger_is_closer: bool):
    """Keep the best ``k`` of each query row; order by score, then by smaller row id.

    ``scores, rows: [Q, M] -> [Q, k]`` (``M >= k``).
    """
    key = -scores if larger_is_closer else scores
    if scores.shape[1] > k:
        part = np.argpartition(key, k - 1, axis=1)[:, :k]  # [Q, M] -> [Q, k] (unordered)
        key = np.take_along_axis(key, part, axis=1)
        scores = np.take_along_axis(scores, part, axis=1)
        rows = np.take_along_axis(rows, part, axis=1)
    # lexsort: last key is primary -> (score key, then row id)
    order = np.lexsort((rows, key), axis=1) if key.size else np.zeros(key.shape, dtype=np.int64)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class Index:
    """A kNN index over ``ntotal`` vectors.

    Attributes
    ----------
    metric : {"cosine", "ip", "l2"}
    ntotal : int
        Number of indexed vectors; ``search`` returns row numbers in ``[0, ntotal)``.
    dim : int
    backend : str
        Name of the backend configuration (``"exact"`` or a FAISS factory string).
    """

    metric: str
    ntotal: int
    dim: int
    backend: str
    #: the :class:`mmal.index.plan.IndexPlan` that ``build_index(backend="auto")`` chose, else None
    plan = None

    def describe(self) -> dict:
        """The configuration in use and why: backend, sizes, backend options, the auto plan."""
        out = {"backend": self.backend, "metric": self.metric, "ntotal": int(self.ntotal), "dim": int(self.dim)}
        out.update(self._describe_backend())
        out["plan"] = self.plan.as_dict() if self.plan is not None else None
        return out

    def _describe_backend(self) -> dict:
        return {}

    @property
    def larger_is_closer(self) -> bool:
        return self.metric in ("cosine", "ip")

    def search(self, queries, k: int):
        """k nearest indexed rows of each query.

        Parameters
        ----------
        queries : float array [Q, D]
        k : int
            Neighbours per query; clamped to ``ntotal``.

        Returns
        -------
        scores : float32 [Q, k']
            Similarity (cosine/ip, descending) or squared L2 distance (ascending).
        rows : int64 [Q, k']
            Row numbers of the indexed vectors, ``k' = min(k, ntotal)``.
        """
        raise NotImplementedError

    def _check_queries(self, queries, k):
        queries = check_vectors(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ConfigError(f"queries have dimension {queries.shape[1]}, index has {self.dim}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        return queries, int(min(k, self.ntotal))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, metric={self.metric!r}, ntotal={self.ntotal}, dim={self.dim})"
