"""MMSSL training (002 ch. 4.2.2, eq. 4.4) on the project's one loop (:func:`~mmal.train.engine.train_epochs`).

The model pieces (projection heads, InfoNCE, the prototype loss and concentration, k-means)
are in :mod:`mmal.models.mmssl`; this module only says how a batch becomes a loss and
refits the prototypes at the start of each epoch after the warm-up.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from mmal.errors import ConfigError
from mmal.cluster import kmeans_sampled
from mmal.models.mmssl import (MMSSLConfig, MMSSLResult, ProjectionHead, _prepare, cross_modal_infonce, embed,
                               modality_gap, prototype_concentration, prototype_loss)
from mmal.train.config import TrainConfig
from mmal.train.engine import seeded, train_epochs


def train_mmssl(features: dict, config: MMSSLConfig | None = None, *, log=None) -> MMSSLResult:
    """Train MMSSL (002 eq. 4.4) on pooled tower features; pure apart from ``log``.

    Parameters
    ----------
    features : dict modality -> float array [N, D_m]
        Pooled frozen-tower features of the same N unlabeled items (row-aligned).
    config : MMSSLConfig (its ``lr``, ``weight_decay``, ``epochs``, ``batch_size`` and ``seed``
        go to the loop's :class:`TrainConfig`; gradient clipping is TrainConfig's default).
    log : callable(str), optional

    Returns
    -------
    MMSSLResult
        ``embeddings[m]`` is ``[N, config.dim]`` float32; ``history`` one dict per epoch
        (``loss``, ``cross``, ``uni``); ``metrics`` = :func:`modality_gap` of the result.
        The last partial batch of an epoch is skipped (InfoNCE over a handful of pairs is noise).
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
    xt = {m: torch.from_numpy(feats[m]) for m in mods}
    pairs = list(itertools.combinations(mods, 2))
    bs = min(cfg.batch_size, n)
    tc = TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=bs, patience=None,
                     seed=cfg.seed)
    protos: dict = {}
    state = {"use_proto": False}

    with seeded(cfg.seed):
        heads = {m: ProjectionHead(feats[m].shape[1], cfg.hidden, cfg.dim) for m in mods}

        def refit_prototypes(epoch):
            state["use_proto"] = cfg.prototypes and epoch >= cfg.warmup_epochs
            protos.clear()
            if not state["use_proto"]:
                return
            cur = embed(heads, feats)  # k-means per modality on the current normalised embeddings
            for j, m in enumerate(mods):
                fit = cfg.kmeans_fit_sample if (cfg.kmeans_fit_sample or 0) >= k else None  # >= k rows to fit
                cen, assign, d2 = kmeans_sampled(cur[m], k, iters=cfg.kmeans_iters,
                                                 seed=cfg.seed * 1000 + epoch * 10 + j, fit_sample=fit)
                phi = prototype_concentration(np.sqrt(d2), assign, k, alpha=cfg.alpha, tau=cfg.tau,
                                              clip_percentiles=cfg.clip_percentiles)
                protos[m] = (torch.from_numpy(assign), F.normalize(torch.from_numpy(cen), dim=1),
                             torch.from_numpy(phi.astype(np.float32)))

        def batch_loss(idx):
            if len(idx) < bs:
                return None  # the last partial batch
            idx = torch.from_numpy(idx)
            z = {m: heads[m](xt[m][idx]) for m in mods}
            l_cross = torch.stack([cross_modal_infonce(z[a], z[b], cfg.tau) for a, b in pairs]).mean()
            if not state["use_proto"]:
                return {"cross": l_cross}
            l_uni = torch.stack([prototype_loss(z[m], protos[m][0][idx], protos[m][1], protos[m][2])
                                 for m in mods]).mean()
            return {"cross": cfg.w_cross * l_cross, "uni": (1.0 - cfg.w_cross) * l_uni}

        def epoch_log(line):
            if log is not None:
                log("[mmssl] " + line)

        hist = train_epochs(heads, [{"params": [p for h in heads.values() for p in h.parameters()]}], np.arange(n),
                            batch_loss, tc, on_epoch_start=refit_prototypes, desc="mmssl",
                            log=epoch_log if log is not None else None)
    history = []
    for e in hist["epochs"]:
        parts = e.get("losses", {})
        w = cfg.w_cross if "uni" in parts else 1.0
        history.append({"epoch": e["epoch"], "prototypes": "uni" in parts, "loss": e["train_loss"],
                        "cross": parts.get("cross", float("nan")) / w,
                        "uni": parts.get("uni", 0.0) / max(1.0 - cfg.w_cross, 1e-12) if "uni" in parts else 0.0})
    emb = embed(heads, feats)
    conf = asdict(cfg)
    conf["n_prototypes"] = k
    return MMSSLResult(heads=heads, embeddings=emb, history=history, metrics=modality_gap(emb),
                       config=conf, seconds=time.perf_counter() - t0)


__all__ = ["train_mmssl"]
