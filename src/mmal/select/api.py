"""The selection entry point :func:`select` and helpers shared by strategies.

Strategies are ``fn(pool, budget, *, labeled_mask, rng, **params) -> Selection``,
registered by name (:mod:`mmal.select.registry`). :func:`select` validates the inputs
once, builds the ``rng`` from ``seed`` and dispatches either to one strategy or to a mix
(``"entropy:0.8,lsb-lt:0.2"``, see :mod:`mmal.select.mix`).
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.select.registry import get_strategy
from mmal.select.types import ScoredPool, Selection


def check_budget(budget) -> int:
    """``budget`` must be a non-negative integer (``bool`` is rejected)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ConfigError(f"budget must be a non-negative integer, got {budget!r}")
    return int(budget)


def check_labeled_mask(pool: ScoredPool, labeled_mask) -> np.ndarray:
    """Boolean ``[N]``; ``None`` means "rows with a known label" (``labels >= 0``), else none."""
    n = len(pool)
    if labeled_mask is None:
        if pool.labels is not None:
            return np.asarray(pool.labels) >= 0
        return np.zeros(n, dtype=bool)
    mask = np.asarray(labeled_mask)
    if mask.shape != (n,):
        raise ConfigError(f"labeled_mask must have shape [{n}], got {mask.shape}")
    if mask.dtype != bool:
        if not np.isin(mask, [0, 1]).all():
            raise ConfigError("labeled_mask must be boolean (or 0/1)")
        mask = mask.astype(bool)
    return mask


def check_probs(pool: ScoredPool, rows: np.ndarray, what: str) -> np.ndarray:
    """Probabilities of ``rows`` as float64 ``[R, C]``; non-finite or negative values raise.

    Like baal, bad scores are reported (how many rows, the first few ids), never sorted.
    """
    p = np.asarray(pool.probs[rows], dtype=np.float64)  # [R, C]
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        first = ", ".join(pool.ids[rows[bad][:3]])
        raise ConfigError(f"{what}: {int(bad.sum())} of {len(rows)} selectable rows have non-finite probs (e.g. ids {first})")
    neg = (p < 0).any(axis=1)
    if neg.any():
        first = ", ".join(pool.ids[rows[neg][:3]])
        raise ConfigError(f"{what}: {int(neg.sum())} rows have negative probs (e.g. ids {first}); expected probabilities")
    return p


def reject_params(name: str, params: dict) -> None:
    if params:
        raise ConfigError(f"strategy '{name}' got unknown parameters: {', '.join(sorted(params))}")


def rank_desc(scores: np.ndarray) -> np.ndarray:
    """Order of ``scores`` from highest to lowest; ties keep the smaller position first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def take_top(pool: ScoredPool, rows: np.ndarray, scores: np.ndarray, budget: int, name: str,
             reason=None, info: dict | None = None) -> Selection:
    """Selection of the ``budget`` highest-scoring ``rows`` (ties: lower row first).

    ``rows`` must be sorted ascending so that the stable tie-break is by pool row.
    """
    order = rank_desc(scores)[:budget]
    reason_arr = None if reason is None else np.asarray(reason, dtype=object)[order]
    return Selection(ids=pool.ids[rows[order]], strategy=name, score=np.asarray(scores, dtype=np.float64)[order],
                     reason=reason_arr, info=dict(info or {}))


def empty_selection(name: str, info: dict | None = None) -> Selection:
    return Selection(ids=np.array([], dtype=str), strategy=np.array([], dtype=object), score=np.array([]),
                     reason=np.array([], dtype=object), info=dict(info or {}))


def select(spec: str, pool: ScoredPool, budget: int, *, labeled_mask=None, seed: int = 0,
           **params) -> Selection:
    """Select up to ``budget`` items from ``pool`` with a strategy or a mix of strategies.

    Parameters
    ----------
    spec : str
        A registered strategy name (``"entropy"``, ``"lsb-lt"``, ...) or a mix string
        ``"name:share,name:share"`` (FAISS ``index_factory`` style), e.g.
        ``"entropy:0.8,lsb-lt:0.2"``.
    pool : ScoredPool
    budget : int
        Number of items wanted (>= 0). The result has ``min(budget, #selectable)``
        items for the statistical/random strategies; LSB may return fewer (see
        ``Selection.info``).
    labeled_mask : bool array [N], optional
        Items that already have a label; never selected. Default: ``pool.labels >= 0``
        when the pool has labels, else nothing. Test items (``pool.split == "test"``)
        are never selected either.
    seed : int
        Seed of the ``numpy.random.Generator`` handed to the strategy; same seed, same
        result.
    **params
        For a single strategy: its parameters. For a mix: one dict per part, keyed by the
        part's strategy name, e.g. ``select("entropy:0.5,lsb-lt:0.5", ..., **{"lsb-lt": {"k": 5}})``.

    Returns
    -------
    Selection
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"strategy spec must be a non-empty string, got {spec!r}")
    if not isinstance(pool, ScoredPool):
        raise ConfigError(f"pool must be a ScoredPool, got {type(pool).__name__}")
    budget = check_budget(budget)
    mask = check_labeled_mask(pool, labeled_mask)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    spec = spec.strip()
    if ":" in spec or "," in spec:
        from mmal.select.mix import mix_select, parse_mix

        return mix_select(parse_mix(spec), pool, budget, labeled_mask=mask, rng=rng, **params)
    fn = get_strategy(spec)
    sel = fn(pool, budget, labeled_mask=mask, rng=rng, **params)
    _check_result(sel, pool, mask, budget, spec)
    return sel


def _check_result(sel: Selection, pool: ScoredPool, mask: np.ndarray, budget: int, name: str) -> None:
    """Guard the contract every strategy must keep (cheap; catches strategy bugs early)."""
    if len(sel) > budget:
        raise ConfigError(f"strategy '{name}' returned {len(sel)} items for budget {budget}")
    if len(sel):
        blocked = pool.ids[~pool.selectable(mask)]  # labeled + test ids (usually the small side)
        if np.isin(sel.ids, blocked).any():
            raise ConfigError(f"strategy '{name}' selected a labeled or test item")
