"""MMSSL: multimodal self-supervised pre-training with uni-modal prototypes (002 ch. 4.2.2).

Trains one projection head per modality on the frozen towers' pooled features of the
unlabeled pool, with

* the cross-modal InfoNCE of 002 eq. 4.1 (CLIP-style, symmetric, tau = 0.07), and
* the uni-modal prototypical loss of 002 eq. 4.2 with the concentration of eq. 4.3, as the
  PCL reference implements it (Li et al., ICLR 2021, ``run_kmeans`` / ``ProtoNCE``):
  k-means per modality on the normalised embeddings at the start of every epoch after a
  warm-up; phi_c = mean ||r - p_c|| / log(n_c + alpha); clusters of <= 1 point get the
  largest phi; clip to the 10th-90th percentile; rescale to mean tau; the logit of
  prototype c is divided by phi_c (per prototype, as PCL does; eq. 4.2 prints phi_i).

Loss (eq. 4.4): ``w_cross * L_cross + (1 - w_cross) * L_uni`` with ``w_cross = 1/2``. With
more than two modalities, L_cross is the mean of the pairwise eq. 4.1 terms and L_uni the
mean over modalities. ``prototypes=False`` trains with L_cross alone (Table 4.1 "w/o").

:func:`modality_gap` gives Table 4.1's numbers (eq. 4.5). The training routine is
:func:`mmal.train.mmssl.train_mmssl` (the project's one loop).

References
----------
M. Shen. Data-efficient multimodal learning (thesis, 002), ch. 4, eq. 4.1-4.5.
J. Li, P. Zhou, C. Xiong, S. Hoi. Prototypical Contrastive Learning of Unsupervised
Representations. ICLR 2021.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmal.errors import ConfigError


@dataclass
class MMSSLConfig:
    """Hyper-parameters of MMSSL; defaults follow 002 §4.3.3 where it states them.

    dim : shared embedding size (the thesis does not state it; 128).
    hidden : hidden width of each two-layer projection head (not stated; 512).
    tau : InfoNCE and prototype temperature (002: 0.07).
    prototypes : use the uni-modal prototype loss (False = cross-modal InfoNCE only).
    n_prototypes : prototypes per modality; ``None`` = ``max(2, round(proto_fraction * N))``
        (002 uses 500 / 1000 / 5000 for 22.6k / 45.7k / 181k items, i.e. about 2 %).
    alpha : concentration smoothing (002 eq. 4.3: 10).
    clip_percentiles : phi clipped to these percentiles (PCL: 10, 90).
    w_cross : weight of L_cross; L_uni gets ``1 - w_cross`` (002 eq. 4.4: 1/2).
    epochs, warmup_epochs : total epochs; prototypes are used from epoch ``warmup_epochs`` on
        (PCL warms up with InfoNCE only; the thesis does not state the number).
    batch_size : pairs per InfoNCE batch (002: 256).
    lr, weight_decay : AdamW (002 §4.3.3 uses AdamW; rates not stated).
    kmeans_iters : Lloyd iterations per k-means (PCL uses faiss with 20).
    kmeans_fit_sample : fit each epoch's k-means on a random sample of at most this many
        rows, then assign every row to the centres (``None`` = all rows). A pool of N rows
        with k = 2 % of N prototypes costs about 0.02 N² D per Lloyd iteration: 10^5 rows
        take seconds, 10^6 rows hours on 2 cores. PCL fits on all rows with faiss on GPUs.
        With the 2 % default, a 10^6-row pool gives 5 sample rows per prototype.
    """

    dim: int = 128
    hidden: int = 512
    tau: float = 0.07
    prototypes: bool = True
    n_prototypes: int | None = None
    proto_fraction: float = 0.02
    alpha: float = 10.0
    clip_percentiles: tuple = (10.0, 90.0)
    w_cross: float = 0.5
    epochs: int = 60
    warmup_epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kmeans_iters: int = 20
    kmeans_fit_sample: int | None = 100000
    seed: int = 0


class ProjectionHead(nn.Module):
    """Two-layer MLP from a tower's pooled feature to the shared space: ``[B, D_m] -> [B, dim]``."""

    def __init__(self, d_in: int, hidden: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


def cross_modal_infonce(za: torch.Tensor, zb: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE of 002 eq. 4.1 over a batch of K pairs; ``za, zb`` L2-normalised ``[K, C]``."""
    logits = za @ zb.T / tau  # [K, K]
    target = torch.arange(len(za), device=za.device)
    return 0.5 * F.cross_entropy(logits, target) + 0.5 * F.cross_entropy(logits.T, target)


def prototype_concentration(dist: np.ndarray, assign: np.ndarray, k: int, *, alpha: float = 10.0,
                            tau: float = 0.07, clip_percentiles=(10.0, 90.0),
                            degenerate_tol: float = 1e-3) -> np.ndarray:
    """Concentration phi per prototype (002 eq. 4.3, PCL reference).

    Parameters
    ----------
    dist : float [N]
        Euclidean distance ||r_i - p_{c_i}|| of each row to its own (unnormalised) centroid.
    assign : int [N]
        Cluster of each row.
    k : number of clusters.
    degenerate_tol : a cluster whose mean distance is at most this (its members are one
        point up to float rounding, e.g. duplicated titles) gives no spread estimate and is
        treated like a cluster of one point. PCL does not handle it; without the rule such a
        cluster gets phi = 0 (or ~1e-4 from rounding), and when 10 % or more of the clusters
        are like that the 10th-percentile clip keeps it, the logits ``cos / phi`` overflow
        and training turns NaN (seen on synthetic-video, 40 distinct titles for 644 clips).

    Returns
    -------
    phi : float64 [k]
        ``mean(dist in c) / log(n_c + alpha)`` for clusters with more than one point; the
        largest of those for clusters with <= 1 point (or degenerate); clipped to
        ``clip_percentiles``; then rescaled so that its mean is ``tau``.
    """
    dist = np.asarray(dist, dtype=np.float64)
    assign = np.asarray(assign, dtype=np.int64)
    counts = np.bincount(assign, minlength=k)  # [k]
    sums = np.bincount(assign, weights=dist, minlength=k)  # [k]
    phi = np.zeros(k)
    big = (counts > 1) & (sums > degenerate_tol * np.maximum(counts, 1))
    phi[big] = sums[big] / counts[big] / np.log(counts[big] + alpha)
    phi[~big] = phi[big].max() if big.any() else 1.0
    lo, hi = np.percentile(phi, clip_percentiles)
    phi = np.clip(phi, lo, hi)
    if phi.mean() <= 0:  # every cluster collapsed to a point: fall back to tau everywhere
        return np.full(k, float(tau))
    return tau * phi / phi.mean()


def prototype_loss(z: torch.Tensor, assign: torch.Tensor, protos: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Uni-modal prototypical loss of one modality (002 eq. 4.2, PCL ProtoNCE without sampling).

    ``z [K, C]`` normalised embeddings of a batch, ``assign [K]`` their clusters, ``protos
    [k, C]`` normalised prototypes, ``phi [k]``: logits ``cos(z_i, p_c) / phi_c`` and
    cross-entropy against the row's own cluster.
    """
    logits = (z @ protos.T) / phi[None, :]  # [K, k]
    return F.cross_entropy(logits, assign)


@dataclass
class MMSSLResult:
    """Trained heads, per-modality embeddings ``[N, dim]`` (L2-normalised), history, metrics."""

    heads: dict
    embeddings: dict
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (floored at 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _checked(features: dict) -> dict:
    """``{m: float32 [N, D_m]}`` after the shape, row-count and finiteness checks (not normalised)."""
    out = {}
    n = None
    for m, x in features.items():
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ConfigError(f"MMSSL: features of modality '{m}' must be [N, D], got {x.shape}")
        if n is not None and len(x) != n:
            raise ConfigError(f"MMSSL: modality '{m}' has {len(x)} rows, expected {n}")
        if not all(np.isfinite(x[s:s + 65536]).all() for s in range(0, len(x), 65536)):
            raise ConfigError(f"MMSSL: modality '{m}' has non-finite features")
        n = len(x)
        out[m] = x
    if len(out) < 2:
        raise ConfigError(f"MMSSL needs at least two modalities, got {sorted(out)}")
    return out


def _prepare(features: dict) -> dict:
    return {m: unit_rows(x) for m, x in _checked(features).items()}


@torch.no_grad()
def embed(heads: dict, features: dict, block: int = 65536) -> dict:
    """Per-modality embeddings ``[N, dim]`` (L2-normalised, float32) of the given heads.

    Inputs are L2-normalised ``block`` rows at a time (the same values as normalising the
    whole array, without a normalised copy of it: 6.7 GB for 1M rows of 384 + 1280 dims).
    """
    feats = _checked(features)
    out = {}
    for m, x in feats.items():
        heads[m].eval()
        out[m] = np.concatenate([heads[m](torch.from_numpy(unit_rows(x[s:s + block]))).numpy()
                                 for s in range(0, len(x), block)]).astype(np.float32)
    return out


def modality_gap(embeddings: dict) -> dict:
    """Table 4.1 numbers (002 eq. 4.5) of L2-normalised per-modality embeddings ``[N, C]``.

    ``S_uni[m] = E_i (1/N) sum_j cos(r_i^m, r_j^m) = ||mean r^m||^2``; ``S_cross[a|b] =
    mean r^a . mean r^b``; ``gap[a|b] = ||mean r^a - mean r^b||``. For more than two
    modalities every pair is reported and ``gap_mean`` / ``S_cross_mean`` average them.
    Rows are re-normalised first, so the identities above are exact.
    """
    mods = sorted(embeddings)
    mean = {}
    for m in mods:
        x = np.asarray(embeddings[m], dtype=np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        mean[m] = x.mean(0)
    out = {"S_uni": {m: float(mean[m] @ mean[m]) for m in mods}, "S_cross": {}, "gap": {}}
    for a, b in itertools.combinations(mods, 2):
        out["S_cross"][f"{a}|{b}"] = float(mean[a] @ mean[b])
        out["gap"][f"{a}|{b}"] = float(np.linalg.norm(mean[a] - mean[b]))
    if out["gap"]:
        out["gap_mean"] = float(np.mean(list(out["gap"].values())))
        out["S_cross_mean"] = float(np.mean(list(out["S_cross"].values())))
    return out


def paired_cosine(embeddings: dict, rows=None, *, block: int = 65536) -> float:
    """Mean cross-modal cosine of each item's own modalities, averaged over modality pairs.

    ``rows`` (int array) restricts to a subset (e.g. a cold-start selection). Needs all
    modalities in one shared space (same dimension), i.e. MMSSL embeddings.
    """
    mods = sorted(embeddings)
    dims = {np.asarray(embeddings[m]).shape[1] for m in mods}
    if len(dims) != 1:
        raise ConfigError("paired_cosine needs embeddings of one shared dimension (MMSSL), got dims "
                          + ", ".join(f"{m}={np.asarray(embeddings[m]).shape[1]}" for m in mods))
    n = len(embeddings[mods[0]]) if rows is None else len(rows)
    vals = []
    for a, b in itertools.combinations(mods, 2):
        cos = np.empty(n)
        for s in range(0, n, block):  # float64 copies of one block at a time
            sel = slice(s, s + block) if rows is None else rows[s:s + block]
            xa = np.asarray(embeddings[a][sel], dtype=np.float64)
            xb = np.asarray(embeddings[b][sel], dtype=np.float64)
            # cos = a.b / (|a| |b|): three row reductions, no normalised copies
            norms = np.sqrt(np.einsum("nd,nd->n", xa, xa) * np.einsum("nd,nd->n", xb, xb))
            cos[s:s + block] = np.einsum("nd,nd->n", xa, xb) / np.maximum(norms, 1e-24)
        vals.append(float(cos.mean()))
    return float(np.mean(vals)) if vals else math.nan
