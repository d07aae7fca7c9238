"""Shapley values of a few players, vectorised over items (002 eq. 3.9).

A *value function* maps a coalition — a tuple of player names, sorted — to one value per
item, ``[N]``. Results are ``phi [N, M]`` with columns in the order of ``players``.

References
----------
L. S. Shapley. A value for n-person games. Contributions to the Theory of Games 2, 1953.
S. Castro, D. Gómez, J. Tejada. Polynomial calculation of the Shapley value based on
sampling. Computers & Operations Research 36(5), 2009 (permutation sampling).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

from mmal.errors import ConfigError

ValueFn = Callable[[tuple], np.ndarray]


class _CachedValue:
    """Evaluate each coalition once; coalitions are keyed as sorted tuples."""

    def __init__(self, value: ValueFn, n: int | None = None):
        self.value, self.n, self.cache = value, n, {}

    def __call__(self, coalition) -> np.ndarray:
        key = tuple(sorted(coalition))
        if key not in self.cache:
            v = np.asarray(self.value(key), dtype=np.float64)
            if v.ndim != 1 or (self.n is not None and len(v) != self.n):
                raise ConfigError(
                    f"Shapley value function returned shape {v.shape} for coalition {key}; "
                    f"expected [N{'' if self.n is None else '=' + str(self.n)}]"
                )
            if self.n is None:
                self.n = len(v)
            self.cache[key] = v
        return self.cache[key]


def _check_players(players: Sequence[str]) -> list[str]:
    players = list(players)
    if not players:
        raise ConfigError("Shapley values need at least one player (modality)")
    if len(set(players)) != len(players):
        raise ConfigError(f"player names must be unique, got {players}")
    return players


def shapley_exact(value: ValueFn, players: Sequence[str]) -> np.ndarray:
    """Exact Shapley values by enumerating all coalitions (002 eq. 3.9).

    ``φ_m = Σ_{S ⊆ M∖{m}} |S|!(|M|-|S|-1)!/|M|! · [V(S ∪ {m}) - V(S)]``. Costs ``2^M``
    evaluations of ``value``; meant for ``M <= 4`` modalities.

    Parameters
    ----------
    value : callable(tuple[str, ...]) -> float array [N]
    players : sequence of str, length M

    Returns
    -------
    float64 array [N, M]
    """
    players = _check_players(players)
    v = _CachedValue(value)
    m_total = len(players)
    cols = []
    for m in players:
        others = [p for p in players if p != m]
        phi_m = 0.0
        for size in range(len(others) + 1):
            wt = math.factorial(size) * math.factorial(m_total - size - 1) / math.factorial(m_total)
            for s in itertools.combinations(others, size):
                phi_m = phi_m + wt * (v(s + (m,)) - v(s))  # [N]
        cols.append(np.broadcast_to(phi_m, (v.n,)))
    return np.stack(cols, axis=1)  # [N, M]


def shapley_mc(
    value: ValueFn,
    players: Sequence[str],
    *,
    n_permutations: int | None = 128,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Monte-Carlo Shapley values by permutation sampling (002 §3.2.4, last paragraph).

    For each permutation ``π`` of the players, the marginal gain of each player when it
    joins the players before it is credited to it; ``φ`` is the mean over permutations.
    Each permutation's gains telescope to ``V(all) - V(∅)``, so efficiency
    (``Σ_m φ_m = V(all) - V(∅)``) holds exactly for any set of permutations.

    Parameters
    ----------
    value : callable(tuple[str, ...]) -> float array [N]
    players : sequence of str, length M
    n_permutations : int or None
        Number of permutations drawn uniformly with replacement; the same permutations
        are used for every item (so each coalition is evaluated once for the whole pool).
        ``None`` enumerates all ``M!`` permutations, which gives the exact values.
    rng : numpy.random.Generator
        Needed when ``n_permutations`` is not None; ``None`` means ``default_rng(0)``.

    Returns
    -------
    float64 array [N, M]
    """
    players = _check_players(players)
    v = _CachedValue(value)
    if n_permutations is None:
        perms = list(itertools.permutations(range(len(players))))
    else:
        if int(n_permutations) < 1:
            raise ConfigError(f"n_permutations must be >= 1 or None, got {n_permutations}")
        rng = np.random.default_rng(0) if rng is None else rng
        perms = [tuple(rng.permutation(len(players))) for _ in range(int(n_permutations))]
    phi = None
    for perm in perms:
        prev = v(())
        members: tuple = ()
        if phi is None:
            phi = np.zeros((len(prev), len(players)))
        for k in perm:
            members = members + (players[k],)
            cur = v(members)
            phi[:, k] += cur - prev
            prev = cur
    return phi / len(perms)


def shapley_values(
    value: ValueFn,
    players: Sequence[str],
    *,
    exact_max_players: int = 4,
    n_permutations: int = 128,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, str]:
    """Exact Shapley values up to ``exact_max_players`` players, Monte Carlo above.

    Implements METHODS.md E ("exact Shapley over subsets up to M = 4, Monte Carlo
    permutations beyond").

    Returns
    -------
    phi : float64 array [N, M]
    method : {"exact", "mc"}
    """
    players = _check_players(players)
    if len(players) <= exact_max_players:
        return shapley_exact(value, players), "exact"
    return shapley_mc(value, players, n_permutations=n_permutations, rng=rng), "mc"
