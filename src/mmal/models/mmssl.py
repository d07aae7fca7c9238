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

:func:`modality_gap` gives Table 4.1's numbers (eq. 4.5).

References
----------
M. Shen. Data-efficient multimodal learning (thesis, 002), ch. 4, eq. 4.1-4.5.
J. Li, P. Zhou, C. Xiong, S. Hoi. Prototypical Contrastive Learning of Unsupervised
Representations. ICLR 2021.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field

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


def kmeans(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0, init: str = "k-means++", block: int = 65536):
    """Lloyd k-means (squared Euclidean), k-means++ seeding (or ``init="random"`` rows).

    Returns ``(centroids [k, D] float32, assign [N] int64, sqdist [N] float64)``; an empty
    cluster is re-seeded with the row farthest from its centre. Deterministic by ``seed``.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= k <= n:
        raise ConfigError(f"k-means: k must lie in [1, N={n}], got {k}")
    rng = np.random.default_rng(seed)
    if init == "random":
        c = x[np.sort(rng.choice(n, size=k, replace=False))].copy()
    elif init == "k-means++":
        xsq0 = np.einsum("nd,nd->n", x, x).astype(np.float64)
        first = int(rng.integers(n))
        c = np.empty((k, x.shape[1]), np.float32)
        c[0] = x[first]
        d2 = np.maximum(xsq0 - 2.0 * (x @ c[0]) + float(c[0] @ c[0]), 0.0)
        cum = np.empty(n)
        dj = np.empty(n)
        for j in range(1, k):
            tot = d2.sum()
            if tot <= 0:
                nxt = int(rng.integers(n))
            else:
                np.cumsum(d2, out=cum)
                nxt = min(int(np.searchsorted(cum, rng.random() * tot)), n - 1)
            c[j] = x[nxt]
            # the same arithmetic as max(|x|^2 - 2 x.c + |c|^2, 0), without temporaries
            dots = x @ c[j]
            dots *= 2.0  # exact
            np.subtract(xsq0, dots, out=dj)
            dj += float(c[j] @ c[j])
            np.maximum(dj, 0.0, out=dj)
            np.minimum(d2, dj, out=d2)
    else:
        raise ConfigError(f"k-means init must be 'k-means++' or 'random', got {init!r}")
    xsq = np.einsum("nd,nd->n", x, x)
    assign = np.zeros(n, dtype=np.int64)
    d2 = np.zeros(n)
    x64 = torch.from_numpy(x).double() if iters > 1 else None  # for the centroid sums, converted once
    for it in range(max(1, iters)):
        assign_to_centres(x, c, xsq, block=block, out=(assign, d2))
        if it == iters - 1:
            break
        counts = np.bincount(assign, minlength=k)
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(
            0, torch.from_numpy(assign), x64).numpy()  # [k, D]
        new = c.copy()
        nz = counts > 0
        new[nz] = (sums[nz] / counts[nz, None]).astype(np.float32)
        for j in np.flatnonzero(~nz):  # empty cluster: take the worst-fit row
            far = int(np.argmax(d2))
            new[j] = x[far]
            d2[far] = 0.0
        c = new
    return c, assign, d2


def assign_to_centres(x: np.ndarray, centres: np.ndarray, xsq=None, *, block: int = 65536,
                      max_block_elements: int = 2**26, out=None):
    """Lloyd's assignment step: each row's nearest centre in squared Euclidean distance.

    ``dd = (|x|^2 + |c|^2) - 2 x.c``, evaluated in that order, ``block`` rows at a time,
    fewer when ``block x k`` would exceed ``max_block_elements`` (256 MB of float32 per
    temporary; k = 20,000 prototypes would otherwise need 5 GB per block).
    Returns ``(assign [N] int64, d2 [N] float64)`` (``d2`` clipped at 0), written into
    ``out`` when given. ``xsq``: the rows' squared norms, if already known.
    """
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centres, dtype=np.float32)
    n = len(x)
    block = max(1, min(int(block), int(max_block_elements) // max(1, len(c))))
    xsq = np.einsum("nd,nd->n", x, x) if xsq is None else xsq
    assign, d2 = out if out is not None else (np.empty(n, dtype=np.int64), np.empty(n))
    csq = np.einsum("kd,kd->k", c, c)
    for s in range(0, n, block):
        dots = x[s:s + block] @ c.T  # [R, k]
        dots *= 2.0  # exact
        dd = xsq[s:s + block, None] + csq[None, :]
        dd -= dots
        a = dd.argmin(1)
        assign[s:s + block] = a
        d2[s:s + block] = np.maximum(np.take_along_axis(dd, a[:, None], 1)[:, 0], 0.0)
    return assign, d2


def kmeans_sampled(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0, fit_sample: int | None = None,
                   sample_rng: np.random.Generator | None = None, assign_all: bool = True):
    """:func:`kmeans` on all rows, or fitted on a uniform random sample of ``fit_sample`` rows.

    With more than ``fit_sample`` rows the sample is drawn with ``sample_rng`` (default
    ``default_rng(seed)``), :func:`kmeans` runs on it, and every row is then assigned to the
    fitted centres (one Lloyd assignment step, :func:`assign_to_centres`);
    ``assign_all=False`` skips that pass and returns ``None`` for both. Returns
    ``(centroids, assign [N], sqdist [N])``. Used by MMSSL's prototypes and the cold-start
    strategies.
    """
    n = len(x)
    if fit_sample is None or n <= int(fit_sample):
        return kmeans(x, k, iters=iters, seed=seed)
    rng = np.random.default_rng(seed) if sample_rng is None else sample_rng
    sub = np.sort(rng.choice(n, size=int(fit_sample), replace=False))
    cen, _, _ = kmeans(np.asarray(x, np.float32)[sub], k, iters=iters, seed=seed)
    if not assign_all:
        return cen, None, None
    return (cen, *assign_to_centres(x, cen))


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


def train_mmssl(features: dict, config: MMSSLConfig | None = None, *, log=None) -> MMSSLResult:
    """Train MMSSL (002 eq. 4.4) on pooled tower features; pure apart from ``log``.

    Parameters
    ----------
    features : dict modality -> float array [N, D_m]
        Pooled frozen-tower features of the same N unlabeled items (row-aligned).
    config : MMSSLConfig
    log : callable(str), optional

    Returns
    -------
    MMSSLResult
        ``embeddings[m]`` is ``[N, config.dim]`` float32; ``history`` one dict per epoch
        (``loss``, ``cross``, ``uni``); ``metrics`` = :func:`modality_gap` of the result.
    """
    cfg = config or MMSSLConfig()
    feats = _prepare(features)
    mods = sorted(feats)
    n = len(feats[mods[0]])
    if n < 2:
        raise ConfigError(f"MMSSL needs at least 2 items, got {n}")
    k = cfg.n_prototypes or max(2, int(round(cfg.proto_fraction * n)))
    k = min(k, n)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    heads = {m: ProjectionHead(feats[m].shape[1], cfg.hidden, cfg.dim) for m in mods}
    params = [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt = {m: torch.from_numpy(feats[m]) for m in mods}
    pairs = list(itertools.combinations(mods, 2))
    history = []
    bs = min(cfg.batch_size, n)
    for epoch in range(cfg.epochs):
        use_proto = cfg.prototypes and epoch >= cfg.warmup_epochs
        protos = {}
        if use_proto:  # k-means per modality on the current normalised embeddings
            cur = embed(heads, feats)
            for j, m in enumerate(mods):
                fit = cfg.kmeans_fit_sample if (cfg.kmeans_fit_sample or 0) >= k else None  # >= k rows to fit
                cen, assign, d2 = kmeans_sampled(cur[m], k, iters=cfg.kmeans_iters,
                                                 seed=cfg.seed * 1000 + epoch * 10 + j, fit_sample=fit)
                phi = prototype_concentration(np.sqrt(d2), assign, k, alpha=cfg.alpha, tau=cfg.tau,
                                              clip_percentiles=cfg.clip_percentiles)
                protos[m] = (torch.from_numpy(assign), F.normalize(torch.from_numpy(cen), dim=1),
                             torch.from_numpy(phi.astype(np.float32)))
        for h in heads.values():
            h.train()
        order = rng.permutation(n)
        tot = {"loss": 0.0, "cross": 0.0, "uni": 0.0}
        nb = 0
        for s in range(0, n - bs + 1 if n >= bs else 1, bs):  # drop the last partial batch
            idx = torch.from_numpy(order[s:s + bs])
            z = {m: heads[m](xt[m][idx]) for m in mods}
            l_cross = torch.stack([cross_modal_infonce(z[a], z[b], cfg.tau) for a, b in pairs]).mean()
            if use_proto:
                l_uni = torch.stack([prototype_loss(z[m], protos[m][0][idx], protos[m][1], protos[m][2])
                                     for m in mods]).mean()
                loss = cfg.w_cross * l_cross + (1.0 - cfg.w_cross) * l_uni
            else:
                l_uni = torch.zeros(())
                loss = l_cross
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot["loss"] += loss.item()
            tot["cross"] += l_cross.item()
            tot["uni"] += l_uni.item()
            nb += 1
        rec = {"epoch": epoch, "prototypes": bool(use_proto), **{key: v / max(nb, 1) for key, v in tot.items()}}
        history.append(rec)
        if not math.isfinite(rec["loss"]):  # never hand NaN embeddings to a selection
            raise ConfigError(f"MMSSL: the loss became non-finite at epoch {epoch} (cross {rec['cross']}, "
                              f"uni {rec['uni']}); try a lower lr or prototypes=False")
        if log is not None and (epoch % 10 == 0 or epoch == cfg.epochs - 1):
            log(f"[mmssl] epoch {epoch} loss {rec['loss']:.4f} cross {rec['cross']:.4f} uni {rec['uni']:.4f}")
    emb = embed(heads, feats)
    conf = asdict(cfg)
    conf["n_prototypes"] = k
    return MMSSLResult(heads=heads, embeddings=emb, history=history, metrics=modality_gap(emb),
                       config=conf, seconds=time.perf_counter() - t0)


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
