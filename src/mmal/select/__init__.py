"""Selection strategies over a :class:`ScoredPool` (DESIGN.md "select").

Entry point: :func:`select` (``select("entropy:0.8,lsb-lt:0.2", pool, budget, seed=0)``).
Importing this package registers the strategies of the modules below.
"""

from mmal.select.types import ScoredPool, Selection  # noqa: I001
from mmal.select.registry import STRATEGIES, get_strategy, register
from mmal.select import random_, uncertainty, lsb, badge, bmmal, coreset, bald, coldstart  # noqa: F401  (register strategies)
from mmal.select.api import select
from mmal.select.lookalike import lookalike_filter, lookalike_fit
from mmal.select.lsb import LSBExpansion, badness, lsb_expand, seed_bad_cases
from mmal.select.mix import mix_select, parse_mix, split_budget
from mmal.select.uncertainty import entropy, least_confidence, margin

__all__ = [
    "ScoredPool", "Selection", "select", "register", "get_strategy", "STRATEGIES",
    "least_confidence", "margin", "entropy",
    "seed_bad_cases", "badness", "lsb_expand", "LSBExpansion", "lookalike_fit", "lookalike_filter",
    "parse_mix", "split_budget", "mix_select",
]
