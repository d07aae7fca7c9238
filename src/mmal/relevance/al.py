"""Active-learning scores for the relevance task from the 4-level distribution (issue 11, item 6).

Pure functions over ``probs [N, 4]`` (levels 0..3, rows sum to 1) for the selection layer:

- :func:`level_entropy`: Shannon entropy of the level distribution (000 eq. 10 on 4 classes);
- :func:`level_variance`: variance of the level under the distribution, ``E[y^2] - E[y]^2``
  (ordinal uncertainty: mass on 0 and 3 is more uncertain than mass on 2 and 3);
- :func:`least_confidence`: ``1 - max_k p_k`` (000 eq. 8);
- :func:`lsb_seed_scores`: ``|E[y] - y|`` for labeled items, the LSB seed score of 000 eq. 11
  with the expected level ``E[y] = sum_k k p_k`` (003 eq. 9) as the prediction.

In ``mmal select`` / ``simulate`` a relevance pool's ``probs`` *is* the level distribution
(:mod:`mmal.relevance.learner`), so the registry's ``entropy`` is :func:`level_entropy`, and
LSB's seed score (:func:`mmal.select.lsb.badness`) is :func:`lsb_seed_scores`. This module
registers one more strategy, ``level-variance`` (top-B by :func:`level_variance`); importing
:mod:`mmal.select` registers it.
"""

from __future__ import annotations

import numpy as np

LEVELS = np.arange(4, dtype=np.float64)


def _check(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 4:
        raise ValueError(f"relevance probabilities must be [N, 4], got {p.shape}")
    return p


def expected_level(probs) -> np.ndarray:
    """``E[y] = p1 + 2 p2 + 3 p3`` (003 eq. 9) -> ``[N]``."""
    return _check(probs) @ LEVELS


def level_entropy(probs) -> np.ndarray:
    """``-sum_k p_k log p_k`` (natural log; 0 log 0 = 0) -> ``[N]``."""
    p = _check(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(1)


def level_variance(probs) -> np.ndarray:
    """``Var[y] = E[y^2] - E[y]^2`` under the level distribution -> ``[N]`` (max 2.25)."""
    p = _check(probs)
    m = p @ LEVELS
    return np.maximum(p @ LEVELS**2 - m**2, 0.0)


def least_confidence(probs) -> np.ndarray:
    """``1 - max_k p_k`` -> ``[N]``."""
    return 1.0 - _check(probs).max(1)


def lsb_seed_scores(probs, labels) -> np.ndarray:
    """``|E[y] - y|`` per labeled item (000 eq. 11 with the expected level) -> ``[N]``."""
    y = np.asarray(labels, dtype=np.float64)
    return np.abs(expected_level(probs) - y)


def _level_variance_strategy():
    from mmal.errors import ConfigError
    from mmal.select.registry import register
    from mmal.select.uncertainty import _BLOCK_DOC, _rank

    @register("level-variance", params={"block_size": _BLOCK_DOC})
    def level_variance_strategy(pool, budget, *, labeled_mask=None, rng=None, block_size: int = 1_000_000):
        """Top-``budget`` selectable items by the variance of the relevance level under the four-level
        distribution, ``E[y^2] - E[y]^2`` (:func:`level_variance`; an ordinal uncertainty: mass split
        between levels 0 and 3 scores 2.25, between 2 and 3 only 0.25, while their entropies are equal);
        ties: lower row. Needs a relevance pool (``probs [N, 4]``, levels 0..3)."""
        if pool.n_classes != 4:
            raise ConfigError(f"level-variance reads the four-level relevance distribution (probs [N, 4]); "
                              f"this pool has {pool.n_classes} classes")
        return _rank("level-variance", level_variance, pool, budget, labeled_mask, block_size)

    return level_variance_strategy


level_variance_strategy = _level_variance_strategy()
