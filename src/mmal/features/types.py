"""In-memory view of cached encoder outputs for one (encoder, column)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SequenceFeatures:
    """Pooled and per-token features of N items for one modality.

    Attributes
    ----------
    ids : str array [N]
    pooled : float array [N, d]  (zeros where ``present`` is False)
    offsets : int64 array [N + 1]; item i's tokens are ``seq[offsets[i]:offsets[i+1]]``
    seq : float array [sum_i T_i, d] (float16 on disk; memmap)
    present : bool array [N]; False = the item lacks this modality (masked, not an error)
    """

    ids: np.ndarray
    pooled: np.ndarray
    offsets: np.ndarray
    seq: np.ndarray
    present: np.ndarray

    def __post_init__(self):
        n = len(self.ids)
        assert self.pooled.shape[0] == n and self.offsets.shape == (n + 1,) and self.present.shape == (n,)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.pooled.shape[1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        """Tokens of item ``i``: [T_i, d] (T_i = 0 when absent)."""
        return self.seq[self.offsets[i] : self.offsets[i + 1]]

    def take(self, idx) -> "SequenceFeatures":
        """Subset by integer indices (copies the selected tokens)."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths()[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        seq = np.concatenate([self.sequence(i) for i in idx], axis=0) if len(idx) and offsets[-1] else np.zeros((0, self.dim), self.seq.dtype)
        return SequenceFeatures(self.ids[idx], np.asarray(self.pooled[idx]), offsets, seq, self.present[idx])

    @classmethod
    def from_list(cls, ids, seqs, dim: int, pooled=None) -> "SequenceFeatures":
        """Build from a list of [T_i, d] arrays (``None`` = absent). Pooled defaults to the token mean."""
        n = len(ids)
        present = np.array([s is not None and len(s) > 0 for s in seqs], dtype=bool)
        lens = np.array([len(s) if p else 0 for s, p in zip(seqs, present)], dtype=np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        parts = [np.asarray(s, dtype=np.float32) for s, p in zip(seqs, present) if p]
        seq = np.concatenate(parts, 0) if parts else np.zeros((0, dim), np.float32)
        if pooled is None:
            pooled = np.zeros((n, dim), np.float32)
            for i, (s, p) in enumerate(zip(seqs, present)):
                if p:
                    pooled[i] = np.asarray(s, np.float32).mean(0)
        return cls(np.asarray(ids).astype(str), np.asarray(pooled, np.float32), offsets, seq, present)
