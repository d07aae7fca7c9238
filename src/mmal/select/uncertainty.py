"""Statistical uncertainty sampling (METHODS.md A; implements 000 eq. 8-10).

Scores are pure functions of the class probabilities ``p [N, C]``; higher score means
more uncertain and is selected first. Ranking ties are broken by pool row (stable).
"""

from __future__ import annotations

import numpy as np

from mmal.select.api import check_probs, empty_selection, reject_params, take_top
from mmal.select.registry import register

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


def _uncertainty_strategy(name: str, score_fn):
    def strategy(pool, budget, *, labeled_mask=None, rng=None, block_size: int = 1_000_000, **params):
        eps = params.pop("eps", None)
        reject_params(name, params)
        rows = np.flatnonzero(pool.selectable(labeled_mask))  # ascending pool rows
        if budget == 0 or len(rows) == 0:
            return empty_selection(name, {"n_selectable": int(len(rows))})
        scores = np.empty(len(rows), dtype=np.float64)
        for a in range(0, len(rows), block_size):  # memmap-friendly: one block of probs at a time
            p = check_probs(pool, rows[a:a + block_size], name)
            scores[a:a + block_size] = score_fn(p) if eps is None else score_fn(p, eps=eps)
        return take_top(pool, rows, scores, budget, name, info={"n_selectable": int(len(rows))})

    strategy.__name__ = name.replace("-", "_")
    strategy.__doc__ = (
        f"Strategy ``{name}``: top-``budget`` selectable items by :func:`{score_fn.__name__}`.\n\n"
        "Parameters: ``block_size`` (rows of probs read at once, default 1e6)"
        + (", ``eps`` (inside the log, default 1e-12)." if score_fn is entropy else ".")
    )
    return strategy


least_confidence_strategy = register("least-confidence")(_uncertainty_strategy("least-confidence", least_confidence))
margin_strategy = register("margin")(_uncertainty_strategy("margin", margin))
entropy_strategy = register("entropy")(_uncertainty_strategy("entropy", entropy))
