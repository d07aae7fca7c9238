"""Statistical uncertainty sampling (METHODS.md A; implements 000 eq. 8-10) and the ordinal level variance.

Scores are pure functions of the class probabilities ``p [N, C]``; higher score means
more uncertain and is selected first. Ranking ties are broken by pool row (stable).
On a relevance pool ``p`` is the four-level distribution (003), so ``entropy`` is the level
entropy; ``level-variance`` adds the uncertainty that knows the levels are ordered.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import Selection
from mmal.select.api import check_probs, empty_selection, take_top
from mmal.select.registry import TopB, register

EPS = 1e-12


def least_confidence(probs) -> np.ndarray:
    """``1 - max_c p_c`` (000 eq. 8). ``[N, C] -> [N]``."""
    p = np.asarray(probs, dtype=np.float64)
    return 1.0 - p.max(axis=1)


def margin(probs) -> np.ndarray:
    """``-(p_(1) - p_(2))``, the negated gap between the two largest probabilities (000 eq. 9).

    With a single class the margin is ``-p_(1)``. ``[N, C] -> [N]``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[1] == 1:
        return -p[:, 0]
    top2 = -np.partition(-p, 1, axis=1)[:, :2]  # [N, C] -> [N, 2], descending
    return -(top2[:, 0] - top2[:, 1])


def entropy(probs, eps: float = EPS) -> np.ndarray:
    """``-sum_c p_c log(p_c + eps)`` (000 eq. 10; ``eps`` inside the log). ``[N, C] -> [N]``."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log(p + eps)).sum(axis=1)


def level_variance(probs) -> np.ndarray:
    """``Var[y] = E[y^2] - E[y]^2`` under a distribution over ordered levels ``0..C-1`` ``[N, C] -> [N]``.

    An ordinal uncertainty: mass split between levels 0 and 3 scores 2.25, between 2 and 3
    only 0.25, while their entropies are equal.
    """
    p = np.asarray(probs, dtype=np.float64)
    levels = np.arange(p.shape[1], dtype=np.float64)
    m = p @ levels
    return np.maximum(p @ levels**2 - m**2, 0.0)


_BLOCK_DOC = "rows of probs read at once (memmap-friendly); does not change the result"


def _rank(name: str, score_fn, pool, budget, labeled_mask, block_size: int) -> Selection:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ConfigError(f"{name}: block_size must be a positive integer, got {block_size!r}")
    rows = np.flatnonzero(pool.selectable(labeled_mask))  # ascending pool rows
    if budget == 0 or len(rows) == 0:
        return empty_selection(name, {"n_selectable": int(len(rows))})
    scores = np.empty(len(rows), dtype=np.float64)
    for a in range(0, len(rows), block_size):  # one block of probs at a time
        scores[a:a + block_size] = score_fn(check_probs(pool, rows[a:a + block_size], name))
    return take_top(pool, rows, scores, budget, name, info={"n_selectable": int(len(rows))})


@register("least-confidence", params={"block_size": _BLOCK_DOC}, top_b=TopB(least_confidence))
def least_confidence_strategy(pool, budget, *, labeled_mask=None, rng=None, block_size: int = 1_000_000) -> Selection:
    """Top-``budget`` selectable items by :func:`least_confidence` (000 eq. 8); ties: lower row."""
    return _rank("least-confidence", least_confidence, pool, budget, labeled_mask, block_size)


@register("margin", params={"block_size": _BLOCK_DOC}, top_b=TopB(margin))
def margin_strategy(pool, budget, *, labeled_mask=None, rng=None, block_size: int = 1_000_000) -> Selection:
    """Top-``budget`` selectable items by :func:`margin` (000 eq. 9); ties: lower row."""
    return _rank("margin", margin, pool, budget, labeled_mask, block_size)


@register("entropy", params={"block_size": _BLOCK_DOC, "eps": "added inside the log (METHODS.md A), so 0 log 0 = 0"},
          top_b=TopB(entropy, params=("eps",)))
def entropy_strategy(pool, budget, *, labeled_mask=None, rng=None, block_size: int = 1_000_000,
                     eps: float = EPS) -> Selection:
    """Top-``budget`` selectable items by :func:`entropy` (000 eq. 10); ties: lower row."""
    return _rank("entropy", lambda p: entropy(p, eps=eps), pool, budget, labeled_mask, block_size)


@register("level-variance", params={"block_size": _BLOCK_DOC}, top_b=TopB(level_variance))
def level_variance_strategy(pool, budget, *, labeled_mask=None, rng=None, block_size: int = 1_000_000) -> Selection:
    """Top-``budget`` selectable items by :func:`level_variance` of the level distribution; ties: lower row.

    Needs ordered labels (a relevance pool, ``pool.ordered``).
    """
    if not pool.ordered:
        raise ConfigError("level-variance reads a distribution over ordered levels (the relevance task); "
                          "this pool's classes are unordered: use entropy, margin or least-confidence")
    return _rank("level-variance", level_variance, pool, budget, labeled_mask, block_size)
