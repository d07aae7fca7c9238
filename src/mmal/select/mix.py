"""Mixes of strategies: ``"entropy:0.8,lsb-lt:0.2"`` (METHODS.md B step 5; 000 §3.1).

The paper mixes statistical AL with LSB-LT in one round's budget (e.g. 130k stat + 30k
LSB-LT). A mix string names parts and their shares, in the spirit of FAISS
``index_factory``.

Semantics
---------
* The budget is split exactly by largest-remainder rounding of ``budget * share / sum``
  (ties in the remainder go to the earlier part), so the quotas sum to ``budget``.
* Parts run in the written order. Each part sees the ids already taken by earlier parts
  as non-selectable (in a shallow copy of the pool they are marked ``split="test"``), so
  the mix never returns an id twice.
* Shortfall: if a part returns fewer than asked, the missing count is added to the next
  part's request; whatever is still missing after the last part is offered once more to
  the parts in order (first to last), each asked only for the remaining shortfall. What
  cannot be filled is reported in ``info["shortfall"]``, never padded otherwise.
* Nothing of this is silent: ``info["warnings"]`` (:func:`mmal.select.api.add_warning`)
  holds every part's own warnings (e.g. its shortfall; each line names its strategy), one
  line per part that took items another part could not fill, and one line for a shortfall
  that remains. No ``warnings`` key: every part selected its quota and said nothing.
* Every part runs through the one strategy contract (:func:`mmal.select.api.run_strategy`):
  its parameters are checked and its result is checked (size, no labeled/test/taken id).
* Shares are normalised by their sum (``entropy:3,lsb-lt:1`` = 0.75 / 0.25); ``info["shares"]``
  records the normalised shares.
* Each part gets its own ``numpy.random.Generator`` drawn from the mix's ``rng`` in a
  fixed order, so the same seed gives the same mix.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool, Selection
from mmal.select.api import add_warning, check_budget, check_labeled_mask, run_strategy
from mmal.select.spec import route_params


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """``"entropy:0.8,lsb-lt:0.2"`` -> ``[("entropy", 0.8), ("lsb-lt", 0.2)]``.

    :func:`mmal.select.spec.parse_spec` restricted to mixes (every part has a share).
    Shares must be positive finite numbers (normalised by their sum); every name must be a
    registered strategy.
    """
    from mmal.select.spec import parse_spec

    if ":" not in spec:
        raise ConfigError(f"mix '{spec.strip()}': parts must be 'strategy:share', e.g. 'entropy:0.8'")
    return parse_spec(spec)


def split_budget(budget: int, shares) -> list[int]:
    """Largest-remainder apportionment of ``budget`` by ``shares``; sums exactly to ``budget``."""
    budget = check_budget(budget)
    w = np.asarray(shares, dtype=np.float64)
    exact = budget * w / w.sum()  # [P]
    quota = np.floor(exact).astype(np.int64)
    rest = budget - int(quota.sum())
    frac = exact - quota
    for i in np.argsort(-frac, kind="stable")[:rest]:  # earlier part wins ties
        quota[i] += 1
    return quota.tolist()


def _without(pool: ScoredPool, taken: np.ndarray) -> ScoredPool:
    """Shallow copy of ``pool`` whose ``taken`` rows are non-selectable (marked test)."""
    split = np.full(len(pool), "pool", dtype="U8") if pool.split is None else pool.split.astype("U8")
    split[taken] = "test"
    return dataclasses.replace(pool, split=split)


def mix_select(parts, pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, **params) -> Selection:
    """Run a mix of strategies (see module docstring for the exact semantics).

    Parameters
    ----------
    parts : list of (name, share)
        From :func:`parse_mix`.
    pool, budget, labeled_mask, rng :
        As for a strategy.
    **params
        As for :func:`mmal.select.select` (routed by :func:`mmal.select.spec.route_params`);
        every part runs through :func:`mmal.select.api.run_strategy` (parameter and result
        checks of the one strategy contract).

    Returns
    -------
    Selection
        ``strategy`` names the part per id; ``info`` has ``quotas``, ``parts`` (per call:
        name, asked, quota -- its own share of the budget, 0 for a second chance -- got,
        info), ``shortfall`` and ``warnings``.
    """
    routed = route_params(parts, params)
    mask = check_labeled_mask(pool, labeled_mask)
    budget = check_budget(budget)
    rng = np.random.default_rng(0) if rng is None else rng
    quotas = split_budget(budget, [w for _, w in parts])
    child_seeds = rng.integers(0, 2**63 - 1, size=2 * len(parts))  # fixed draw order -> deterministic
    id_to_row = None
    taken = np.zeros(len(pool), dtype=bool)
    pieces, calls = [], []

    def run(i: int, want: int, seed, quota: int) -> int:
        nonlocal id_to_row
        name = parts[i][0]
        sub = _without(pool, taken)
        sel = run_strategy(name, sub, want, mask, np.random.default_rng(seed), routed[name])
        if id_to_row is None:
            id_to_row = {s: r for r, s in enumerate(pool.ids.tolist())}
        rows = np.fromiter((id_to_row[s] for s in sel.ids.tolist()), dtype=np.int64, count=len(sel))
        if taken[rows].any():
            raise ConfigError(f"mix part '{name}' returned an id already taken by an earlier part")
        taken[rows] = True
        pieces.append((name, sel))
        calls.append({"strategy": name, "asked": int(want), "quota": int(quota), "got": int(len(sel)), "info": sel.info})
        return len(sel)

    carry = 0
    for i, q in enumerate(quotas):
        want = q + carry
        carry = want - (run(i, want, child_seeds[i], q) if want > 0 else 0)
    for i in range(len(parts)):  # second chance for the shortfall, first part first
        if carry <= 0:
            break
        carry -= run(i, carry, child_seeds[len(parts) + i], 0)

    ids = np.concatenate([s.ids for _, s in pieces]) if pieces else np.array([], dtype=str)
    strat = np.concatenate([np.full(len(s), n, dtype=object) for n, s in pieces]) if pieces else np.array([], dtype=object)
    score = np.concatenate([s.score for _, s in pieces]) if pieces else np.array([])
    reason = np.concatenate([s.reason for _, s in pieces]) if pieces else np.array([], dtype=object)
    total = sum(w for _, w in parts)
    info = {"mix": ",".join(f"{n}:{w:g}" for n, w in parts), "shares": {n: w / total for n, w in parts},
            "shares_sum": total,
            "quotas": quotas, "parts": calls,
            "shortfall": int(max(carry, 0))}
    _mix_warnings(info, calls, budget)
    return Selection(ids=ids, strategy=strat, score=score, reason=reason, info=info)


def _mix_warnings(info: dict, calls: list, budget: int) -> None:
    """``info["warnings"]``: each part's own lines, who filled what another part left, the rest."""
    for c in calls:
        for w in c["info"].get("warnings") or []:
            add_warning(info, w)  # each line names its strategy
    for c in calls:
        filled = max(0, c["got"] - c["quota"])  # items beyond its own quota that this call selected
        if filled > 0:
            add_warning(info, f"mix part '{c['strategy']}' selected {filled} item{'s' if filled != 1 else ''} "
                              f"that other parts could not fill (beyond its quota)")
    if info["shortfall"]:
        add_warning(info, f"mix '{info['mix']}' selected {budget - info['shortfall']} of the {budget} items asked "
                          f"({info['shortfall']} short after every part had a second chance)")

