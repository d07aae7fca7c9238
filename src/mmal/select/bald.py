"""BALD: mutual information between predictions and model parameters.

``score_i = H[mean_t p_ti] - mean_t H[p_ti]`` over ``T`` stochastic forward passes (MC
dropout, see :mod:`mmal.train.mc_dropout`).

References
----------
N. Houlsby, F. Huszár, Z. Ghahramani, M. Lengyel. Bayesian Active Learning for
Classification and Preference Learning. arXiv:1112.5745, 2011 (eq. 3).
Y. Gal, R. Islam, Z. Ghahramani. Deep Bayesian Active Learning with Image Data. ICML
2017 (MC-dropout estimate, §3).
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.select.registry import MissingNeedError, TopB, register
from mmal.pool import ScoredPool, Selection

DEFAULT_EPS = 1e-12


def _entropy(p: np.ndarray, eps: float) -> np.ndarray:
    """``-Σ_c p log(p + eps)`` over the last axis (natural log)."""
    return -np.sum(p * np.log(p + eps), axis=-1)


def bald_scores(mc_probs, *, eps: float = DEFAULT_EPS, block: int = 65536) -> np.ndarray:
    """Mutual information ``H[E_t p] - E_t H[p]`` per item (Houlsby et al. 2011, eq. 3).

    Parameters
    ----------
    mc_probs : float array [T, N, C]
        Class probabilities of ``T`` stochastic passes.
    eps : float
        Added inside the log (METHODS.md A convention), so ``0 log 0 = 0``.
    block : int
        Items per block (bounds the float64 temporaries to ``T·block·C``).

    Returns
    -------
    float64 array [N]
        In nats, ``>= 0`` up to ``eps``-sized error. Higher = selected first.
    """
    mc = mc_probs
    if mc.ndim != 3:
        raise ConfigError(f"BALD needs MC probabilities [T, N, C], got shape {mc.shape}")
    t, n, _ = mc.shape
    if t < 1:
        raise ConfigError("BALD needs at least one stochastic pass (T >= 1)")
    out = np.empty(n)
    for s in range(0, n, block):
        p = np.asarray(mc[:, s : s + block], dtype=np.float64)  # [T, R, C]
        mean_p = p.mean(axis=0)  # [T, R, C] -> [R, C]
        out[s : s + block] = _entropy(mean_p, eps) - _entropy(p, eps).mean(axis=0)  # [R]
    return out


@register("bald", params={"key": "pool.extras entry with the MC-dropout probabilities [T, N, C]",
                          "eps": "added inside the log, so 0 log 0 = 0"}, needs=("mc_samples",),
          top_b=TopB(lambda b, eps=DEFAULT_EPS: bald_scores(b, eps=eps), params=("eps",), source_param="key",
                     source_default="mc_probs", rows_axis=1))
def bald(
    pool: ScoredPool,
    budget: int,
    *,
    labeled_mask=None,
    rng: np.random.Generator | None = None,
    key: str = "mc_probs",
    eps: float = DEFAULT_EPS,
) -> Selection:
    """BALD strategy: top-``budget`` selectable items by mutual information.

    Parameters
    ----------
    pool : ScoredPool
        ``pool.extras[key]`` must hold MC-dropout probabilities ``[T, N, C]`` (note the
        leading ``T``; see :func:`mmal.train.mc_dropout.mc_dropout_probs`).
    budget : int
    labeled_mask : bool array [N], optional
        Labeled and ``split == "test"`` items are never selected.
    rng : numpy.random.Generator
        Unused (the ranking is deterministic; ties go to the lower row index); accepted
        for the common strategy signature.
    key : str
        Name of the extras entry.
    eps : float
        See :func:`bald_scores`.

    Returns
    -------
    Selection
        Ids in descending score order; ``score`` = mutual information (nats).
    """
    if key not in pool.extras:
        raise MissingNeedError("bald", "mc_samples", f"no pool.extras['{key}']")
    mc = pool.extras[key]
    if mc.ndim != 3 or mc.shape[1] != len(pool) or mc.shape[2] != pool.n_classes:
        raise ConfigError(
            f"pool.extras['{key}'] must be [T, N={len(pool)}, C={pool.n_classes}], got {mc.shape}"
        )
    if int(budget) < 0:
        raise ConfigError(f"budget must be >= 0, got {budget}")
    score = bald_scores(mc, eps=eps)  # [N]
    bad = ~np.isfinite(score)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ConfigError(f"BALD: non-finite scores for {int(bad.sum())} items (rows {rows}); check '{key}'")
    cand = np.flatnonzero(pool.selectable(labeled_mask))
    order = cand[np.argsort(-score[cand], kind="stable")][: int(budget)]
    return Selection(
        ids=pool.ids[order], strategy="bald", score=score[order], reason=None,
        info={"n_candidates": int(len(cand)), "n_passes": int(mc.shape[0])},
    )
