"""MMCSAL cold start (002 eq. 4.11, METHODS F): ActiveFT's objective plus cross-modal alignment.

The optimiser and the greedy pick are :func:`mmal.select.activeft.parametric_selection`.
"""

from __future__ import annotations

from mmal.pool import ScoredPool, Selection
from mmal.select.registry import register
from mmal.select.activeft import ONE_BLOCK_DOC, _parametric_strategy
from mmal.select.coldstart import FEATURES_DOC


@register("mmcsal", cold_start=True, needs=("shared_space",), params={
    "features": FEATURES_DOC, "tau": "temperature of the similarities (0.07)",
    "lambda_div": "weight of the diversity term (1.0)", "steps": "Adam steps (300)", "lr": "Adam learning rate (1e-3)",
    "batch_size": "candidates per step for the distribution term; None = all",
    "align": "'corrected' (default: -lambda_align A, raises the cross-modal similarity, the stated aim of eq. 4.11) "
             "or 'printed' (+lambda_align A, eq. 4.11 as printed; near-random picks on the project's benchmarks)",
    "lambda_align": "weight of the alignment term (1.0)", "one_block": ONE_BLOCK_DOC})
def mmcsal(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
           align: str = "corrected", tau: float = 0.07, lambda_div: float = 1.0, lambda_align: float = 1.0,
           steps: int = 300, lr: float = 1e-3, batch_size: int | None = 10000, one_block: str = "activeft") -> Selection:
    """MMCSAL (002 eq. 4.11): ActiveFT's gap and diversity + the cross-modal alignment term.

    ``L = eq. 4.7 + lambda_div * eq. 4.8 + sign * lambda_align * E_j log sum_k exp(cos(theta^a_j,
    theta^b_k) / tau)``, the alignment term averaged over modality pairs (a, b).

    ``align="corrected"`` (default) subtracts the alignment term (sign = -1): minimising the
    loss then *raises* the thetas' cross-modal similarity, which is what 002 §4.2.3 says the
    term is for. ``align="printed"`` adds it (sign = +1) exactly as eq. 4.11 prints it;
    minimising that *lowers* the cross-modal similarity, against the distribution term, and
    on the project's cold-start benchmarks (docs/results/cold_start.md, 5 seeds, Tux Paint
    and synthetic-video) 86-100 % of its thetas end on their random starting sample, so its
    picks are those of ``random`` (identical at three of the budgets); the corrected sign
    moves more thetas and is the only variant above random there. The printed variant stays
    a named option for reproducing the thesis as written.

    ``info["cross_cosine_selected"]`` is the picks' mean cross-modal cosine (MMSSL space), to
    compare with ``info["cross_cosine_candidates"]``. Needs MMSSL embeddings for two or more
    modalities; on one block (a pool with only an embedding) eq. 4.11 has no modality pair
    and ``one_block`` says what happens (default: ActiveFT on that block, with a warning).
    """
    return _parametric_strategy("mmcsal", pool, budget, labeled_mask, rng, features, "mmcsal", one_block=one_block,
                                align=align, tau=tau, lambda_div=lambda_div, lambda_align=lambda_align, steps=steps,
                                lr=lr, batch_size=batch_size)
