"""The selection entry point :func:`select` and helpers shared by strategies.

Strategies are ``fn(pool, budget, *, labeled_mask, rng, <params>) -> Selection``,
registered with their parameters and needs (:mod:`mmal.select.registry`). :func:`select`
parses the spec (:mod:`mmal.select.spec`), validates budget, mask, seed and parameters
once, builds the ``rng`` from ``seed`` and runs one strategy or a mix
(``"entropy:0.8,lsb-lt:0.2"``, :mod:`mmal.select.mix`) through :func:`run_strategy`, which
checks every result (size, no labeled/test/duplicate ids).

Warnings. Whatever a selection did besides what was asked -- fewer items than the budget,
items drawn at random to fill up, a part of a mix refilled by another, a method run in a
reduced form -- is said in ``Selection.info["warnings"]``, a list of one-line strings
(:func:`add_warning`). :func:`run_strategy` adds the shortfall line for every strategy, so a
short batch is never silent; the CLI prints the lines to stderr and into the JSON
``warnings`` list, ``simulate`` records them per round.
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool, Selection
from mmal.select.registry import get_strategy


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


def add_warning(target, message: str) -> None:
    """Append ``message`` to ``info["warnings"]`` of a :class:`Selection` or of an info dict
    (once: the same line is not repeated)."""
    info = target.info if isinstance(target, Selection) else target
    lines = info.setdefault("warnings", [])
    if message not in lines:
        lines.append(str(message))


def selection_warnings(sel: Selection) -> list[str]:
    """The warning lines of a selection (``info["warnings"]``; ``[]`` when none)."""
    return [str(w) for w in ((sel.info or {}).get("warnings") or [])]


def empty_selection(name: str, info: dict | None = None) -> Selection:
    return Selection(ids=np.array([], dtype=str), strategy=np.array([], dtype=object), score=np.array([]),
                     reason=np.array([], dtype=object), info=dict(info or {}))


def select(spec: str, pool: ScoredPool, budget: int, *, labeled_mask=None, seed: int = 0,
           **params) -> Selection:
    """Select up to ``budget`` items from ``pool`` with a strategy or a mix of strategies.

    Parameters
    ----------
    spec : str
        A registered strategy name (``"entropy"``, ``"lsb-lt"``, ...) or a mix
        ``"name:share,name:share"`` (grammar: :mod:`mmal.select.spec`), e.g.
        ``"entropy:0.8,lsb-lt:0.2"``.
    pool : ScoredPool
    budget : int
        Number of items wanted (>= 0). The result has ``min(budget, #selectable)``
        items for the statistical/random/diversity strategies; LSB may return fewer (its
        ``info["shortfall"]``; a mix hands a shortfall on to its other parts). A result
        shorter than ``budget`` always carries a line in ``info["warnings"]``.
    labeled_mask : bool array [N], optional
        Items that already have a label (or cannot get one); never selected. Default:
        ``pool.labels >= 0`` when the pool has labels, else nothing. Test items
        (``pool.split == "test"``) are never selected either.
    seed : int
        Seed of the ``numpy.random.Generator`` handed to the strategy; same seed, same
        result.
    **params
        Strategy parameters (see ``get_strategy(name).params``). For a mix: per part
        ``**{"lsb-lt": {"k": 5}}``, dotted ``**{"lsb-lt.k": 5}``, or plain keys, which go
        to every part declaring them (:func:`mmal.select.spec.route_params`). An unknown
        parameter is a ConfigError naming the strategy and its allowed parameters.

    Returns
    -------
    Selection
        ``info["warnings"]`` (when present): one line per thing done besides what was asked
        (short, refilled, filled at random, run in a reduced form); see the module docstring.
    """
    from mmal.select.spec import is_mix, parse_spec, route_params

    if not isinstance(pool, ScoredPool):
        raise ConfigError(f"pool must be a ScoredPool, got {type(pool).__name__}")
    parts = parse_spec(spec)
    routed = route_params(parts, params)
    budget = check_budget(budget)
    mask = check_labeled_mask(pool, labeled_mask)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    if is_mix(spec):
        from mmal.select.mix import mix_select

        return mix_select(parts, pool, budget, labeled_mask=mask, rng=rng, **routed)
    name = parts[0][0]
    return run_strategy(name, pool, budget, mask, rng, routed[name])


def run_strategy(name: str, pool: ScoredPool, budget: int, mask: np.ndarray, rng, params: dict) -> Selection:
    """Run one registered strategy under the contract: parameters checked, result checked.

    Used by :func:`select`, by every part of a mix and by calling a registry entry.
    ``mask`` is the labeled mask (``None``: nothing labeled).
    """
    strategy = get_strategy(name)
    strategy.check_params(params)
    budget = check_budget(budget)
    sel = strategy.fn(pool, budget, labeled_mask=mask, rng=rng, **params)
    _check_result(sel, pool, mask, budget, name)
    if len(sel) < budget:
        add_warning(sel, shortfall_warning(name, sel, budget, pool, mask))
    return sel


def shortfall_warning(name: str, sel: Selection, budget: int, pool: ScoredPool, mask) -> str:
    """The line for a strategy that returned fewer than ``budget`` items: how many, and why
    (too few selectable items, or the strategy's own ``info["note"]``)."""
    n_sel = int(pool.selectable(mask).sum())
    why = f"only {n_sel} selectable items" if n_sel < budget else (sel.info or {}).get("note") or ""
    return (f"strategy '{name}' returned {len(sel)} of the {budget} items asked ({budget - len(sel)} short"
            + (f": {why}" if why else "") + ")")


def _check_result(sel: Selection, pool: ScoredPool, mask: np.ndarray, budget: int, name: str) -> None:
    """Guard the contract every strategy must keep (cheap; catches strategy bugs early)."""
    if not isinstance(sel, Selection):
        raise ConfigError(f"strategy '{name}' returned {type(sel).__name__}, not a Selection")
    if len(sel) > budget:
        raise ConfigError(f"strategy '{name}' returned {len(sel)} items for budget {budget}")
    if len(sel):
        blocked = pool.ids[~pool.selectable(mask)]  # labeled + test ids (usually the small side)
        if np.isin(sel.ids, blocked).any():
            raise ConfigError(f"strategy '{name}' selected a labeled or test item")
