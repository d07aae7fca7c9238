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
    "align": "'printed' (eq. 4.11 as printed) or 'corrected' (sign flipped)",
    "lambda_align": "weight of the alignment term (1.0)", "one_block": ONE_BLOCK_DOC})
def mmcsal(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
           align: str = "printed", tau: float = 0.07, lambda_div: float = 1.0, lambda_align: float = 1.0,
           steps: int = 300, lr: float = 1e-3, batch_size: int | None = 10000, one_block: str = "activeft") -> Selection:
    """MMCSAL (002 eq. 4.11): ActiveFT's gap and diversity + the cross-modal alignment term.

    ``align="printed"`` adds ``+lambda_align * A`` exactly as eq. 4.11 prints it (minimising
    it *lowers* the thetas' cross-modal similarity); ``align="corrected"`` subtracts it.
    ``info["cross_cosine_selected"]`` is the picks' mean cross-modal cosine (MMSSL space),
    to compare with ``info["cross_cosine_candidates"]``. Needs MMSSL embeddings for two or
    more modalities; on one block (a pool with only an embedding) eq. 4.11 has no modality
    pair and ``one_block`` says what happens (default: ActiveFT on that block, with a warning).
    """
    return _parametric_strategy("mmcsal", pool, budget, labeled_mask, rng, features, "mmcsal", one_block=one_block,
                                align=align, tau=tau, lambda_div=lambda_div, lambda_align=lambda_align, steps=steps,
                                lr=lr, batch_size=batch_size)
