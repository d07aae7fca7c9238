"""Random sampling: the AL baseline (000 Table 1, "random")."""

from __future__ import annotations

import numpy as np

from mmal.pool import Selection
from mmal.select.api import empty_selection
from mmal.select.registry import register


@register("random", cold_start=True)
def random_strategy(pool, budget, *, labeled_mask=None, rng=None) -> Selection:
    """``min(budget, #selectable)`` selectable items uniformly without replacement.

    Uses ``rng`` (a ``numpy.random.Generator``; :func:`mmal.select.select` builds it from
    ``seed``). Scores are NaN (random sampling has none).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    rows = np.flatnonzero(pool.selectable(labeled_mask))
    if budget == 0 or len(rows) == 0:
        return empty_selection("random", {"n_selectable": int(len(rows))})
    take = rows[rng.choice(len(rows), size=min(budget, len(rows)), replace=False)]
    return Selection(ids=pool.ids[take], strategy="random", score=np.full(len(take), np.nan),
                     reason=None, info={"n_selectable": int(len(rows))})
