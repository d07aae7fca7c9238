"""Batches from the feature cache: ``{modality: SequenceFeatures}`` -> padded tensors."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from mmal.errors import ConfigError
from mmal.features.types import SequenceFeatures


def check_features(features: Mapping[str, SequenceFeatures]) -> int:
    """Validate that all modalities are aligned to the same items; return N.

    Raises
    ------
    ConfigError
        No modality, or modalities with different item counts or different ids.
    """
    if not features:
        raise ConfigError("features is empty: expected {modality: SequenceFeatures} with at least one modality")
    names = sorted(features)
    ref = features[names[0]]
    for m in names[1:]:
        f = features[m]
        if len(f) != len(ref):
            raise ConfigError(f"features['{m}'] has {len(f)} items but features['{names[0]}'] has {len(ref)}; expected aligned items")
        if not np.array_equal(np.asarray(f.ids), np.asarray(ref.ids)):
            bad = int(np.flatnonzero(np.asarray(f.ids) != np.asarray(ref.ids))[0])
            raise ConfigError(
                f"features['{m}'] item {bad} has id '{f.ids[bad]}' but features['{names[0]}'] has '{ref.ids[bad]}'; expected the same item order"
            )
    return len(ref)


def _pool_rows(seq: np.ndarray, max_tokens: int | None) -> np.ndarray:
    """Average ``[L, d]`` into ``max_tokens`` contiguous bins (token j -> bin floor(j*M/L))."""
    L = len(seq)
    if max_tokens is None or L <= max_tokens:
        return seq
    starts = (np.arange(max_tokens) * L + max_tokens - 1) // max_tokens  # first j with floor(j*M/L) = k
    sums = np.add.reduceat(seq.astype(np.float64), starts, axis=0)
    counts = np.diff(np.append(starts, L))
    return sums / counts[:, None]


def collate(
    features: Mapping[str, SequenceFeatures],
    idx: Sequence[int] | np.ndarray,
    *,
    max_tokens: Mapping[str, int | None] | None = None,
    drop: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Padded batch of items ``idx``.

    Parameters
    ----------
    features : {modality: SequenceFeatures}, aligned to the same items.
    idx : item indices [B].
    max_tokens : optional ``{modality: M}``; rows longer than M are mean-pooled into M
        contiguous bins here already (same rule as ``reduce_tokens(how="pool")``), which saves
        memory for long videos. ``None`` (default) = no reduction (the model reduces).
    drop : modalities to mask out entirely (as if every item lacked them); used for the
        coalition value function of BMMAL.
    dtype, device : of the returned tensors (cached float16 is cast to ``dtype``).

    Returns
    -------
    dict ``{m: (x [B, T, d], mask [B, T] bool)}``, True = real token, real tokens first;
    ``T = max(1, longest row)`` so a batch where nobody has ``m`` is still well-formed.
    """
    idx = np.asarray(idx, dtype=np.int64)
    B = len(idx)
    out = {}
    for m in sorted(features):
        f = features[m]
        lim = None if max_tokens is None else max_tokens.get(m)
        rows = []
        for i in idx:
            if m in drop or not f.present[i]:
                rows.append(None)
                continue
            r = np.asarray(f.sequence(int(i)))
            rows.append(_pool_rows(r, lim) if lim is not None else r)
        T = max([1] + [len(r) for r in rows if r is not None])
        x = np.zeros((B, T, f.dim), dtype=np.float32)
        mask = np.zeros((B, T), dtype=bool)
        for b, r in enumerate(rows):
            if r is not None and len(r):
                x[b, : len(r)] = r
                mask[b, : len(r)] = True
        out[m] = (torch.from_numpy(x).to(device=device, dtype=dtype), torch.from_numpy(mask).to(device))
    return out
