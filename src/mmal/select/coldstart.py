"""Cold-start selection: strategies that work when nothing is labeled (002 ch. 4, METHODS F).

With no labels there is no model, so these strategies read only features: the raw frozen
tower features (``pool.modality[m]``), the MMSSL embeddings (``pool.extras["mmssl:<m>"]``,
see :mod:`mmal.models.mmssl`) or one embedding of the items (``pool.embedding``: a user's
own, as scikit-activeml's TypiClust and ProbCover take it, or a scored pool's), chosen by
the named parameter ``features`` (:data:`FEATURES`; ``"auto"`` = MMSSL when the pool has it,
else the raw per-modality features, else ``pool.embedding``). Every block is
L2-normalised (the embedding too: one block); the "concatenated multimodal
representation" of 002 §4.2.1 is ``concat_m(r^m) / sqrt(M)`` (unit norm, so its cosine is
the mean of the per-modality cosines). Build a multimodal pool with :func:`cold_pool`, a
plain one with ``ScoredPool(ids, probs, embedding)``.

This module holds what they share (features, candidates, the selection record, the k-means
fit); each strategy lives in its own module (all registered; all return exactly
``min(B, #selectable)`` unique ids):

* ``activeft`` (:mod:`mmal.select.activeft`) - ActiveFT (Xie et al., CVPR 2023; METHODS F), paper loss or the official
  code's loss (``official=True``);
* ``mm-activeft`` (:mod:`mmal.select.activeft`) - ActiveFT with the uni+cross-modal distribution gap of 002 eq. 4.9;
* ``mmcsal`` (:mod:`mmal.select.mmcsal`) - 002 eq. 4.11; ``align="corrected"`` (default; -lambda A, i.e.
  maximise the cross-modal similarity) or ``align="printed"`` (+lambda A, as printed);
* ``kmeans`` (:mod:`mmal.select.kmeans_centres`) - the item nearest each of B k-means centres (002 §4.3.2);
* ``typiclust`` (:mod:`mmal.select.typiclust`) - Hacohen et al., ICML 2022 (TPC_RP with given features);
* ``probcover`` (:mod:`mmal.select.probcover`) - Yehuda et al., NeurIPS 2022, delta by the purity rule;
* ``random`` and ``coreset`` (k-center greedy from a random item) are the existing
  strategies; on a :func:`cold_pool` ``coreset`` reads ``pool.embedding`` = the default
  concatenated features.

References
----------
Y. Xie et al. Active Finetuning: Exploiting Annotation Budget in the Pretraining-Finetuning
Paradigm. CVPR 2023.  G. Hacohen, A. Dekel, D. Weinshall. Active Learning on a Budget:
Opposite Strategies Suit High and Low Budgets. ICML 2022.  O. Yehuda, A. Dekel, G. Hacohen,
D. Weinshall. Active Learning Through a Covering Lens. NeurIPS 2022.  M. Shen, thesis (002)
ch. 4, eq. 4.6-4.11.
"""

from __future__ import annotations

import math

import numpy as np

from mmal.cluster import kmeans_sampled
from mmal.errors import ConfigError
from mmal.models.mmssl import paired_cosine, unit_rows
from mmal.pool import ScoredPool, Selection
from mmal.select.registry import MissingNeedError

MMSSL_PREFIX = "mmssl:"
#: values of the ``features`` parameter of every cold-start strategy
FEATURES = ("auto", "mmssl", "raw", "embedding")
#: the ``features`` parameter's doc, shared by the registrations
FEATURES_DOC = ("'auto' (MMSSL embeddings when the pool carries them, else the raw per-modality features, else "
                "pool.embedding), 'mmssl', 'raw' (pool.modality) or 'embedding' (pool.embedding as one block, "
                "e.g. an embedding of your own)")
#: the key of ``pool.embedding`` among the feature blocks of :func:`pool_features`
EMBEDDING_BLOCK = "embedding"


# ---------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------
def _normalise(x) -> np.ndarray:
    return unit_rows(np.asarray(x, dtype=np.float32))


def cold_pool(ids, raw: dict, mmssl: dict | None = None, *, n_classes: int = 2, split=None,
              labels=None) -> ScoredPool:
    """A :class:`ScoredPool` for cold start: uniform probs, no model.

    ``modality[m]`` = raw pooled tower features (L2-normalised); ``extras["mmssl:m"]`` =
    MMSSL embeddings when given; ``embedding`` = the concatenation ``concat_m(r^m)/sqrt(M)``
    of the MMSSL embeddings when given, else of the raw features (read by ``coreset``).
    """
    ids = np.asarray(ids).astype(str)
    n = len(ids)
    mod = {m: _normalise(x) for m, x in sorted(raw.items())}
    extras = {MMSSL_PREFIX + m: _normalise(x) for m, x in sorted((mmssl or {}).items())}
    default = {k[len(MMSSL_PREFIX):]: v for k, v in extras.items()} or mod
    return ScoredPool(ids=ids, probs=np.full((n, max(1, int(n_classes))), 1.0 / max(1, int(n_classes)), np.float32),
                      embedding=concat_features(default), modality=mod, split=split, labels=labels,
                      extras=extras)


def pool_features(pool: ScoredPool, features: str = "auto") -> tuple[dict, str]:
    """``(block -> L2-normalised [N, D_b], source)``, source ``"mmssl"``, ``"raw"`` or ``"embedding"``.

    ``"mmssl"``: one block per modality from ``pool.extras["mmssl:<m>"]``; ``"raw"``: one per
    modality from ``pool.modality``; ``"embedding"``: the single block
    :data:`EMBEDDING_BLOCK` from ``pool.embedding``. ``"auto"`` takes the first of these the
    pool has, in that order, so a pool with only an embedding selects on it.
    """
    mm = {k[len(MMSSL_PREFIX):]: v for k, v in pool.extras.items() if k.startswith(MMSSL_PREFIX)}
    if features == "auto":
        features = "mmssl" if mm else "raw" if pool.modality else "embedding"
        if features == "embedding" and pool.embedding is None:
            raise ConfigError("the pool has no features to select on: no MMSSL embeddings (pool.extras['mmssl:<m>']), "
                              "no per-modality features (pool.modality) and no pool.embedding")
    if features == "mmssl":
        if not mm:
            raise MissingNeedError("features='mmssl'", "shared_space", "or pass features='raw' or 'embedding'")
        chosen = mm
    elif features == "raw":
        if not pool.modality:
            raise ConfigError("features='raw' but the pool has no per-modality features (pool.modality); "
                              "features='embedding' selects on pool.embedding")
        chosen = dict(pool.modality)
    elif features == "embedding":
        if pool.embedding is None:
            raise ConfigError("features='embedding' but the pool has no embedding (pool.embedding)")
        chosen = {EMBEDDING_BLOCK: pool.embedding}
    else:
        raise ConfigError(f"features must be one of {', '.join(repr(f) for f in FEATURES)}, got {features!r}")
    return {m: _normalise(chosen[m]) for m in sorted(chosen)}, features


def concat_features(feats: dict) -> np.ndarray:
    """``concat_m(normalise(x_m)) / sqrt(M)``: ``{m: [N, D_m]} -> [N, sum D_m]`` (unit rows)."""
    mods = sorted(feats)
    return (np.concatenate([_normalise(feats[m]) for m in mods], axis=1) / math.sqrt(len(mods))).astype(np.float32)


def concat_rows(feats: dict, rows=None, *, chunk: int = 65536) -> np.ndarray:
    """``concat_features(feats)[rows]`` without materialising the whole concatenation.

    Same arithmetic, row by row (so the same bits): each block normalised, concatenated in
    modality order, divided by ``sqrt(M)``; filled ``chunk`` rows at a time.
    """
    mods = sorted(feats)
    n_all = len(feats[mods[0]])
    n = n_all if rows is None else len(rows)
    dims = [feats[m].shape[1] for m in mods]
    out = np.empty((n, sum(dims)), np.float32)
    root = math.sqrt(len(mods))
    for s in range(0, n, chunk):
        sel = slice(s, min(n, s + chunk)) if rows is None else np.asarray(rows[s:s + chunk])
        off = 0
        for m, d in zip(mods, dims):
            out[s:s + chunk, off:off + d] = _normalise(feats[m][sel]) / root
            off += d
    return out


def _shared_space(feats: dict, name: str) -> None:
    dims = {m: x.shape[1] for m, x in feats.items()}
    if len(feats) < 2 or len(set(dims.values())) != 1:
        raise MissingNeedError(name, "shared_space", f">= 2 modalities in one space (features='mmssl'); got dims {dims}")


def _cross_cosine_info(pool: ScoredPool, rows: np.ndarray, cand: np.ndarray) -> dict:
    """Mean cross-modal cosine of the picks and of all candidates, in the MMSSL space."""
    mm = {k[len(MMSSL_PREFIX):]: v for k, v in pool.extras.items() if k.startswith(MMSSL_PREFIX)}
    if len(mm) < 2 or len(rows) == 0:
        return {}
    return {"cross_cosine_selected": paired_cosine(mm, rows), "cross_cosine_candidates": paired_cosine(mm, cand)}


def _candidates(pool, budget, labeled_mask) -> tuple[np.ndarray, np.ndarray, int]:
    if isinstance(budget, bool) or int(budget) != budget or budget < 0:
        raise ConfigError(f"budget must be a non-negative integer, got {budget!r}")
    cand = np.flatnonzero(pool.selectable(labeled_mask))
    lab = np.zeros(0, dtype=np.int64) if labeled_mask is None else np.flatnonzero(np.asarray(labeled_mask, bool))
    return cand, lab, min(int(budget), len(cand))


def _selection(pool, name, rows, score, reason, info, cand) -> Selection:
    info = {"n_candidates": int(len(cand)), **info, **_cross_cosine_info(pool, rows, cand)}
    return Selection(ids=pool.ids[rows], strategy=name, score=np.asarray(score, dtype=np.float64),
                     reason=np.asarray(reason, dtype=object), info=info)


# ---------------------------------------------------------------------------------------
# k-means centres
# ---------------------------------------------------------------------------------------
def _fit_kmeans(x, k, rng, iters, fit_sample, assign_all: bool = True):
    """:func:`kmeans_sampled` with its seed and its sample drawn from ``rng``: ``(centres, assign, sqdist)``."""
    seed = int(rng.integers(2**31))
    return kmeans_sampled(x, k, iters=iters, seed=seed, fit_sample=fit_sample, sample_rng=rng,
                          assign_all=assign_all)
