"""Selection strategies over a :class:`ScoredPool` (DESIGN.md "select").

Entry point: :func:`select` (``select("entropy:0.8,lsb-lt:0.2", pool, budget, seed=0)``).
Spec grammar and the list parser for the CLI/scripts: :mod:`mmal.select.spec`
(:func:`parse_strategies`, :func:`needs_of`). Importing this package registers the
strategies of the modules below. ``ScoredPool`` and ``Selection`` live in :mod:`mmal.pool`
and are re-exported here.
"""

from mmal.pool import ScoredPool, Selection  # noqa: I001
from mmal.select.registry import NEEDS, STRATEGIES, Param, Strategy, get_strategy, register
from mmal.select import (  # noqa: F401  (register strategies)
    random_, uncertainty, lsb, badge, bmmal, coreset, bald, activeft, mmcsal, kmeans_centres, typiclust, probcover)
from mmal.select.api import run_strategy, select
from mmal.select.lookalike import lookalike_filter, lookalike_fit
from mmal.select.lsb import LSBExpansion, badness, lookalike_training_set, lsb_expand, seed_bad_cases
from mmal.select.mix import mix_select, parse_mix, split_budget
from mmal.select.spec import needs_of, parse_spec, parse_strategies, route_params, shares_note, spec_params
from mmal.select.uncertainty import entropy, least_confidence, level_variance, margin

__all__ = [
    "ScoredPool", "Selection", "select", "run_strategy", "register", "get_strategy", "STRATEGIES", "Strategy",
    "Param", "NEEDS", "parse_strategies", "parse_spec", "needs_of", "route_params", "spec_params", "shares_note",
    "least_confidence", "margin", "entropy", "level_variance",
    "seed_bad_cases", "badness", "lsb_expand", "LSBExpansion", "lookalike_fit", "lookalike_filter",
    "lookalike_training_set", "parse_mix", "split_budget", "mix_select",
]
