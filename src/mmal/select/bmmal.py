"""BMMAL: balanced multimodal active learning (002 ch. 3, METHODS.md E).

1. Modality contribution by Shapley values (002 eq. 3.9–3.11). The value of a coalition
   ``S`` of modalities is ``V_i(S) = P_S[i, ŷ_i]``: the probability that the fused head
   gives the pseudo class ``ŷ_i = argmax pool.probs[i]`` when the features of the
   modalities outside ``S`` are zeroed. ``Φ_im = |φ_im| / Σ_m |φ_im|`` (0/0 -> ``1/M``).
2. Weights ``w_im = 1 - (max_m Φ_im - Φ_im)`` (eq. 3.13): in ``[0, 1]``, 1 for the
   dominant modality.
3. Gradient embedding with one block per modality (eq. 3.12/3.14)
   ``g_i = ⊕_m w_im (p_i - e_ŷi) ⊗ z_im`` and BADGE's k-means++ seeding on it, factorised
   as ``⟨g_i, g_j⟩ = ⟨a_i, a_j⟩ · Σ_m w_im w_jm ⟨z_im, z_jm⟩`` (never materialised).

Blocks: eq. 3.12-3.14 scale the gradient blocks of the *fused linear
classifier*, whose input is the concatenation of the per-modality features. Only a pool
with ``pool.fused_blocks`` True (the ``late-fusion`` learner: its last linear layer reads
``concat(pool.modality[m] for m in sorted(pool.modality))``) has such blocks; for any other
pool BMMAL refuses with a ConfigError instead of running an approximation under the same
name (a fusion transformer's per-modality token means are not inputs of its head).

Coalition probabilities come either from ``pool.extras["coalition:<names>"]`` ([N, C]
each; key = ``"coalition:" + "+".join(sorted(names))``; ``"coalition:"`` = no modality;
the full coalition falls back to ``pool.probs``) or from a callable
``value_fn(subset: tuple[str, ...]) -> probs [N, C]``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool, Selection
from mmal.pool import coalition_key as pool_coalition_key
from mmal.select.badge import (
    BLOCK_DOC, DEFAULT_BLOCK, METHOD_DOC, PROGRESS_DOC, ZERO_TOL_DOC, GradientSpace, kmeanspp_seed, note_random_fill,
    pseudo_label_residual,
)
from mmal.select.registry import MissingNeedError, register
from mmal.select.shapley import shapley_values

COALITION_PREFIX = "coalition:"


def coalition_key(subset) -> str:
    """``pool.extras`` key of a coalition: ``"coalition:"`` + :func:`mmal.pool.coalition_key`."""
    return COALITION_PREFIX + pool_coalition_key(subset)


def pool_coalition_probs(pool: ScoredPool, names) -> Callable[[tuple], np.ndarray]:
    """A ``value_fn`` that reads coalition probabilities from ``pool.extras``.

    The full coalition falls back to ``pool.probs`` when its key is absent.
    """
    full = tuple(sorted(names))

    def value_fn(subset: tuple) -> np.ndarray:
        key = coalition_key(subset)
        if key in pool.extras:
            return pool.extras[key]
        if tuple(sorted(subset)) == full:
            return pool.probs
        have = sorted(k for k in pool.extras if k.startswith(COALITION_PREFIX))
        raise MissingNeedError("bmmal", "coalitions", f"no pool.extras['{key}'] with only {list(subset) or 'no modality'} "
                               f"present; found {have}; or pass value_fn=")

    return value_fn


def modality_contributions(
    pool: ScoredPool,
    *,
    value_fn: Callable | None = None,
    modalities=None,
    exact_max_modalities: int = 4,
    n_permutations: int = 128,
    rng: np.random.Generator | None = None,
):
    """Per-item Shapley values and contributions of each modality (002 eq. 3.9–3.11).

    Parameters
    ----------
    pool : ScoredPool
    value_fn : callable(tuple[str, ...]) -> float array [N, C], optional
        Class probabilities of the fused head with only the named modalities present
        (the rest zeroed). Default: read ``pool.extras["coalition:..."]``.
    modalities : list of str, optional
        Players; default ``sorted(pool.modality)``.
    exact_max_modalities : int
        Exact Shapley up to this many modalities, Monte Carlo permutations above
        (METHODS.md E).
    n_permutations : int
        Permutations for the Monte-Carlo estimate.
    rng : numpy.random.Generator, optional
        For the Monte-Carlo permutations; ``None`` = ``default_rng(0)``.

    Returns
    -------
    phi : float64 array [N, M]
        Shapley values of ``V = p_ŷ`` (eq. 3.9).
    Phi : float64 array [N, M]
        ``|φ| / Σ|φ|`` (eq. 3.11); rows with ``Σ|φ| = 0`` get ``1/M``.
    names : list of str
        Modality order of the columns.
    """
    names = sorted(pool.modality) if modalities is None else list(modalities)
    if not names:
        raise ConfigError("BMMAL needs at least one modality (pool.modality is empty)")
    n = len(pool)
    yhat = np.argmax(np.asarray(pool.probs), axis=1)  # [N, C] -> [N]
    probs_fn = pool_coalition_probs(pool, names) if value_fn is None else value_fn

    def value(subset: tuple) -> np.ndarray:
        p = np.asarray(probs_fn(tuple(subset)))
        if p.shape != (n, pool.n_classes):
            raise ConfigError(
                f"coalition {list(subset)}: probabilities must be [N={n}, C={pool.n_classes}], got {p.shape}"
            )
        return np.take_along_axis(p, yhat[:, None], axis=1)[:, 0]  # [N, C] -> [N]

    phi, _ = shapley_values(
        value, names, exact_max_players=exact_max_modalities, n_permutations=n_permutations, rng=rng
    )
    Phi = contribution_share(phi)
    return phi, Phi, names


def contribution_share(phi) -> np.ndarray:
    """``Φ_m = |φ_m| / Σ_m |φ_m|`` (002 eq. 3.11); rows with ``Σ|φ| = 0`` get ``1/M``."""
    ab = np.abs(np.asarray(phi, dtype=np.float64))  # [N, M]
    tot = ab.sum(axis=1, keepdims=True)  # [N, 1]
    out = np.full_like(ab, 1.0 / ab.shape[1])
    np.divide(ab, tot, out=out, where=tot > 0)
    return out


def balance_weights(Phi) -> np.ndarray:
    """``w_m = 1 - (max_k Φ_k - Φ_m)`` (002 eq. 3.13); in ``[0, 1]``, dominant = 1."""
    Phi = np.asarray(Phi, dtype=np.float64)
    return 1.0 - (Phi.max(axis=1, keepdims=True) - Phi)  # [N, M]


def require_fused_blocks(pool: ScoredPool, name: str = "bmmal") -> list[str]:
    """Modality names (sorted) of a pool whose blocks are the fused last layer's input; else ConfigError."""
    if not pool.fused_blocks:
        raise MissingNeedError(name, "fused_blocks", "002 eq. 3.12-3.14 scale the blocks of the fused classifier's "
                               "last linear layer; this pool's learner has none")
    if not pool.modality:
        raise ConfigError(f"{name}: pool.fused_blocks is True but pool.modality is empty")
    return sorted(pool.modality)


@register("bmmal", params={
    "value_fn": "callable(subset) -> probs [N, C] of the fused head with only `subset` present; "
                "default: pool.extras['coalition:...']",
    "weights": "'shapley' (002 eq. 3.13, default) or 'ones' (every block weight 1: BADGE on the "
               "concatenated blocks; an ablation)",
    "exact_max_modalities": "exact Shapley up to this many modalities, Monte Carlo permutations above",
    "n_permutations": "permutations of the Monte-Carlo Shapley estimate",
    "block": BLOCK_DOC, "zero_tol": ZERO_TOL_DOC, "progress": PROGRESS_DOC, "method": METHOD_DOC,
}, needs=("coalitions", "unimodal", "fused_blocks"))
def bmmal(
    pool: ScoredPool,
    budget: int,
    *,
    labeled_mask=None,
    rng: np.random.Generator | None = None,
    value_fn: Callable | None = None,
    weights: str = "shapley",
    exact_max_modalities: int = 4,
    n_permutations: int = 128,
    block: int = DEFAULT_BLOCK,
    zero_tol: float = 1e-6,
    progress: bool = False,
    method: str = "exact",
) -> Selection:
    """BMMAL strategy (002 ch. 3, eq. 3.9-3.14; METHODS.md E).

    Parameters
    ----------
    pool : ScoredPool
        Needs ``fused_blocks`` True (``late-fusion`` learner), ``probs``, ``modality`` (the
        fused last layer's input blocks ``z_m``) and coalition probabilities
        (``extras["coalition:..."]``) unless ``value_fn`` is given or ``weights="ones"``.
    budget : int
    labeled_mask : bool array [N], optional
        Labeled and ``split == "test"`` items are never selected.
    rng : numpy.random.Generator
        ``None`` means ``default_rng(0)``.
    value_fn, exact_max_modalities, n_permutations :
        See :func:`modality_contributions`.
    weights : {"shapley", "ones"}
        ``"ones"`` skips the Shapley step: BADGE on ``concat(z_m)``.
    block, zero_tol, progress, method :
        See :func:`mmal.select.badge.kmeanspp_seed` (``method="rejection"``: same law, faster).

    Returns
    -------
    Selection
        Ids in pick order, ``score`` = scaled-gradient ``D²`` at pick time. ``info`` has
        ``mean_contribution`` (mean Φ per modality over the whole pool, cf. 002 Fig.
        3.1/3.2), ``mean_contribution_selected``, ``mean_weight`` and ``shapley``
        ("exact", "mc" or "none").
    """
    if weights not in ("shapley", "ones"):
        raise ConfigError(f"bmmal: weights must be 'shapley' or 'ones', got {weights!r}")
    names = require_fused_blocks(pool)
    rng = np.random.default_rng(0) if rng is None else rng
    if weights == "shapley":
        phi, Phi, names = modality_contributions(
            pool, value_fn=value_fn, modalities=names,
            exact_max_modalities=exact_max_modalities, n_permutations=n_permutations, rng=rng,
        )
        w = balance_weights(Phi)  # [N, M]
    else:
        Phi = np.full((len(pool), len(names)), 1.0 / len(names))
        w = np.ones((len(pool), len(names)))
    space = GradientSpace(pseudo_label_residual(pool.probs), [pool.modality[m] for m in names], weights=w)
    cand = np.flatnonzero(pool.selectable(labeled_mask))
    picks, score = kmeanspp_seed(space, budget, cand, rng, block=block, zero_tol=zero_tol, progress=progress,
                                 method=method)
    info = {
        "modalities": names,
        "weights": weights,
        "shapley": "none" if weights == "ones" else ("exact" if len(names) <= exact_max_modalities else "mc"),
        "mean_contribution": {m: float(Phi[:, k].mean()) for k, m in enumerate(names)},
        "mean_contribution_selected": {
            m: (float(Phi[picks, k].mean()) if len(picks) else float("nan")) for k, m in enumerate(names)
        },
        "mean_weight": {m: float(w[:, k].mean()) for k, m in enumerate(names)},
        "n_candidates": int(len(cand)),
        "method": method,
    }
    sel = Selection(ids=pool.ids[picks], strategy="bmmal", score=score, reason=None, info=info)
    note_random_fill(sel, "bmmal")
    return sel
