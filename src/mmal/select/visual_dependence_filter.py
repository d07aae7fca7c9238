"""Data filtering by visual dependence (002 §5.4.5, Table 5.3; METHODS H): plain functions.

Rank training pairs by their total visual dependence ``sum_t d(y_t)`` (eq. 5.1, evaluated
by a model fine-tuned on them, noise step 900) and remove the lowest or highest fraction,
or a random fraction as the control. Not registered as a pool strategy: it ranks
(image, caption) training pairs, not unlabeled items.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError

FILTER_RULES = ("lowest", "highest", "random")


def sequence_dependence(d: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``sum_t d(y_t)`` per sample (002 §5.4.5): ``d``, ``mask`` ``[N, L]`` -> ``[N]``.

    Sums over the real target tokens (``mask``; the EOS token included, padding excluded).
    """
    d, mask = np.asarray(d, np.float64), np.asarray(mask, bool)
    if d.shape != mask.shape:
        raise ConfigError(f"d {d.shape} and mask {mask.shape} must have the same [N, L] shape")
    return (d * mask).sum(1)


def filter_by_visual_dependence(scores: np.ndarray, rule: str, fraction: float, *,
                                rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of the training pairs KEPT after removing ``fraction`` of them (sorted ``[N - k]``).

    Parameters
    ----------
    scores : ``[N]`` total visual dependence per pair (:func:`sequence_dependence`).
    rule : ``"lowest"`` removes the ``k`` lowest scores, ``"highest"`` the ``k`` highest,
        ``"random"`` ``k`` pairs drawn uniformly by ``rng`` (Table 5.3's control).
    fraction : share removed, ``k = round(fraction * N)`` (thesis: 0.1 and 0.2).
    rng : needed for ``"random"``.

    Ties are broken by index (a stable sort), so the result is deterministic. Non-finite
    scores raise with their count and first positions.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    if rule not in FILTER_RULES:
        raise ConfigError(f"filter rule = {rule!r}: expected one of {FILTER_RULES}")
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"filter fraction = {fraction}: expected 0 <= fraction < 1")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ConfigError(f"{len(bad)} non-finite visual-dependence scores (first at positions {bad[:5].tolist()})")
    n = len(scores)
    k = int(round(fraction * n))
    if rule == "random":
        if rng is None:
            raise ConfigError("filter rule 'random' needs an rng (numpy Generator)")
        drop = rng.choice(n, size=k, replace=False)
    else:
        order = np.argsort(scores if rule == "lowest" else -scores, kind="stable")
        drop = order[:k]
    keep = np.ones(n, bool)
    keep[drop] = False
    return np.flatnonzero(keep)


__all__ = ["sequence_dependence", "filter_by_visual_dependence", "FILTER_RULES"]
