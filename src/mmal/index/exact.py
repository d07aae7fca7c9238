"""Exact (brute-force) kNN by blocked matrix products in numpy, or in torch on a CUDA GPU.

The full ``[Q, N]`` score matrix is never formed: the indexed vectors are read once, one
``base_block`` at a time (memmap-friendly), and multiplied against ``query_block``
queries at a time, keeping a running top-k per query. On a CUDA device (``device="auto"``
when one is present, or ``"cuda"``) each block product and its per-block top-k run on the
GPU (``torch.matmul`` + ``torch.topk``); the running merge stays on the CPU, so ties are
broken the same way (score, then row).
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.index.base import (
    Index, check_metric, check_vectors, iter_blocks, normalize_rows, release_pages, sort_topk,
)
from mmal.utils import ProgressTask


class ExactIndex(Index):
    """Brute-force kNN over ``vectors`` (numpy array or memmap, not copied).

    Parameters
    ----------
    vectors : float array [N, D]
    metric : {"cosine", "ip", "l2"}
        ``cosine`` L2-normalises both sides (block by block).
    base_block : int
        Indexed rows per block (default 32768).
    query_block : int
        Queries per block (default 1024). A score block is ``query_block x base_block``
        float32, 128 MiB with the defaults.
    progress : bool
        Progress over base blocks: bool or callable (:class:`mmal.utils.ProgressTask`).
    device : {"auto", "cpu", "cuda"}
        Where the block products run. ``auto`` = ``cuda`` when torch sees a CUDA device,
        else ``cpu`` (numpy/BLAS).
    """

    backend = "exact"

    def __init__(self, vectors, *, metric: str = "cosine", base_block: int = 32768,
                 query_block: int = 1024, progress: bool = False, device: str = "auto"):
        self.vectors = check_vectors(vectors)
        self.metric = check_metric(metric)
        self.ntotal, self.dim = (int(s) for s in self.vectors.shape)
        self.base_block = int(base_block)
        self.query_block = int(query_block)
        self.progress = progress
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"exact index: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if device != "cpu":
            try:
                import torch
                has_cuda = torch.cuda.is_available()
            except ImportError:  # pragma: no cover - torch is a dependency
                has_cuda = False
            if device == "cuda" and not has_cuda:
                raise ConfigError("exact index: device='cuda' but no CUDA device is available")
            device = "cuda" if has_cuda else "cpu"
        self.device = device

    def _base(self, a: int, b: int):
        blk = np.array(self.vectors[a:b], dtype=np.float32)  # [B, D] (a copy: pages can be released)
        release_pages(self.vectors)
        if self.metric == "cosine":
            blk = normalize_rows(blk)
        return blk

    def search(self, queries, k: int):
        queries, k = self._check_queries(queries, k)
        q = np.asarray(queries, dtype=np.float32)
        if self.metric == "cosine":
            q = normalize_rows(q)
        nq = q.shape[0]
        larger = self.larger_is_closer
        fill = -np.inf if larger else np.inf
        best_s = np.full((nq, k), fill, dtype=np.float32)  # running top-k [Q, k]
        best_r = np.full((nq, k), -1, dtype=np.int64)
        q_sq = np.einsum("ij,ij->i", q, q) if self.metric == "l2" else None  # [Q]

        blocks = list(iter_blocks(self.ntotal, self.base_block))
        it = blocks
        if self.device == "cuda":
            import torch

            q_dev = torch.from_numpy(q).to("cuda")  # [Q, D]
            q_sq_dev = None if q_sq is None else torch.from_numpy(q_sq).to("cuda")
        bar = ProgressTask(len(blocks), "exact kNN", self.progress)
        try:
            for a, b in it:
                base = self._base(a, b)  # [B, D]
                b_sq = np.einsum("ij,ij->i", base, base) if self.metric == "l2" else None  # [B]
                base_rows = np.arange(a, b, dtype=np.int64)
                if self.device == "cuda":
                    base_dev = torch.from_numpy(base).to("cuda")  # [B, D]
                    b_sq_dev = None if b_sq is None else torch.from_numpy(b_sq).to("cuda")
                for qa, qb in iter_blocks(nq, self.query_block):
                    kk = min(k, b - a)
                    if self.device == "cuda":
                        sd = q_dev[qa:qb] @ base_dev.T  # [q, B] on the GPU
                        if self.metric == "l2":
                            sd = torch.clamp(q_sq_dev[qa:qb, None] - 2.0 * sd + b_sq_dev[None, :], min=0.0)
                        vals, idx = torch.topk(sd, kk, dim=1, largest=larger)  # [q, kk]
                        cand_s = np.concatenate([best_s[qa:qb], vals.cpu().numpy()], axis=1)
                        cand_r = np.concatenate([best_r[qa:qb], a + idx.cpu().numpy().astype(np.int64)], axis=1)
                        best_s[qa:qb], best_r[qa:qb] = sort_topk(cand_s, cand_r, k, larger)
                        continue
                    s = q[qa:qb] @ base.T  # [q, D] x [D, B] -> [q, B]
                    if self.metric == "l2":
                        s = np.maximum(q_sq[qa:qb, None] - 2.0 * s + b_sq[None, :], 0.0)
                    key = -s if larger else s
                    part = np.argpartition(key, kk - 1, axis=1)[:, :kk] if (b - a) > kk else np.broadcast_to(np.arange(b - a), (qb - qa, b - a))
                    cand_s = np.concatenate([best_s[qa:qb], np.take_along_axis(s, part, axis=1)], axis=1)
                    cand_r = np.concatenate([best_r[qa:qb], base_rows[part]], axis=1)
                    # unfilled slots (row -1) sort last because their score is -inf/+inf
                    best_s[qa:qb], best_r[qa:qb] = sort_topk(cand_s, cand_r, k, larger)
                bar.advance()
        finally:
            bar.close()
        return best_s, best_r
