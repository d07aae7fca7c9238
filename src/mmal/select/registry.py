"""Strategy registry: ``@register("name")`` and lookup by name.

A strategy is ``fn(pool, budget, *, labeled_mask, rng, **params) -> Selection``.
"""

from __future__ import annotations

from typing import Callable

from mmal.errors import ConfigError

STRATEGIES: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        if name in STRATEGIES:
            raise ValueError(f"strategy '{name}' registered twice")
        STRATEGIES[name] = fn
        fn.strategy_name = name
        return fn

    return deco


def get_strategy(name: str) -> Callable:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown strategy '{name}'; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
