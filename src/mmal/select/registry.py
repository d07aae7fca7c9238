"""Strategy registry: one contract per strategy.

A strategy is a function ``fn(pool, budget, *, labeled_mask, rng, <param>=<default>, ...)
-> Selection`` registered with :func:`register`. Its registry entry, a :class:`Strategy`,
holds

* ``fn`` -- the function;
* ``params`` -- every keyword parameter besides ``labeled_mask``/``rng``, with its default
  (read from the signature) and its documentation (given to :func:`register`; registering
  fails when a parameter has no doc or a doc names no parameter);
* ``needs`` -- what it needs from the scored pool (:data:`NEEDS`), so that ``simulate`` and
  the workspace round know what to compute without hard-coding strategy names;
* ``cold_start`` -- it runs without labels and without a model (``mmal select`` on a
  workspace with no labels accepts only these);
* ``reason`` -- what ``Selection.reason`` holds: ``"seed"`` when it is the id of the labeled
  item the pick was found from (LSB; the review page shows that item beside the pick);
* ``top_b`` -- for a strategy that ranks items by a per-item score, the score function and
  its input (:class:`TopB`), so the Ray engine can rank shard by shard;
* ``knn_index`` -- it takes an ``index`` parameter that may be a prebuilt
  :class:`mmal.index.Index` (the Ray engine hands it a sharded one).

Nothing outside the registry lists strategy names for these facts.

Calling an entry (``get_strategy("badge")(pool, 5, labeled_mask=m, rng=r, block=64)``)
runs it under the same contract as :func:`mmal.select.select`: budget and parameters are
checked first (an unknown parameter is a :class:`~mmal.errors.ConfigError` naming the
strategy and its allowed parameters) and the result afterwards.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from mmal.errors import ConfigError

#: what a strategy may need from the pool (or from training), and who provides it
NEEDS: dict[str, str] = {
    "embedding": "pool.embedding, the fused CLS state (always written by scoring)",
    "labels": "pool.labels, the known labels (seed bad cases, lookalike model)",
    "coalitions": "pool.extras['coalition:...'], fused-head probabilities with modalities zeroed "
                  "(score with coalitions; `mmal score --coalitions`)",
    "mc_samples": "pool.extras['mc_probs'] [T, N, C], MC-dropout passes (score with mc_samples > 0)",
    "unimodal": "a classification head per modality, trained with the fused one (heads='fused+unimodal')",
    "at_selection": "pool.extras['at_selection_probs'] [N, C], each labeled item's probabilities when it was "
                    "selected (out-of-sample seed bad cases; simulate and `mmal score` fill it)",
    "fused_blocks": "pool.fused_blocks: pool.modality are the input blocks of the fused last layer "
                    "(the late-fusion learner)",
    "shared_space": "per-modality embeddings in one space, pool.extras['mmssl:<m>'] (a stored MMSSL "
                    "pre-training; `mmal pretrain DIR`)",
}

#: a need in a user's words (the error line; :data:`NEEDS` says where it lives in the pool)
NEED_WHAT: dict[str, str] = {
    "embedding": "the model's item embedding",
    "labels": "labeled items",
    "coalitions": "the model's probabilities with modalities left out (BMMAL's value function, coalitions)",
    "mc_samples": "MC-dropout passes of the model",
    "unimodal": "a head per modality",
    "at_selection": "each labeled item's probabilities when it was selected",
    "fused_blocks": "the input blocks of the fused classifier's last layer (002 eq. 3.12-3.14; the late-fusion learner)",
    "shared_space": "per-modality embeddings in one shared space (MMSSL)",
}

#: what to do when a need is missing: the flag or command that provides it (the CLI prints it)
NEED_FIXES: dict[str, str] = {
    "coalitions": "score with coalitions: `mmal score {ws} --coalitions` (a learner with exact blocks: late-fusion or linear)",
    "mc_samples": "score with MC-dropout passes: `mmal score {ws} --mc-samples 20` (a learner with dropout)",
    "unimodal": "train unimodal heads: `mmal train {ws} --heads fused+unimodal`",
    "fused_blocks": "train a learner whose modality blocks feed its last layer: `mmal train {ws} --learner late-fusion`, "
                    "then `mmal score {ws} --coalitions`",
    "shared_space": "pre-train MMSSL first: `mmal pretrain {ws}`",
    "labels": "label some items first: `mmal label {ws} FILE`",
    "at_selection": "score the round's pool: `mmal score {ws}`",
    "embedding": "score the round's pool: `mmal score {ws}`",
}

#: keyword arguments every strategy receives from :func:`mmal.select.select` (not parameters)
RESERVED = ("labeled_mask", "rng")


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its default (from the function signature) and its doc."""

    default: Any
    doc: str


@dataclass(frozen=True)
class TopB:
    """How a strategy scores items one by one (for sharded ranking).

    ``score(block, **params) -> [R]`` over the rows' input block; the input is ``pool.probs``
    (rows on axis 0) or, when ``source_param`` is set, ``pool.extras[params[source_param]]``
    with rows on ``rows_axis``. ``params`` are the strategy parameters ``score`` takes.
    """

    score: Callable
    params: tuple = ()
    source_param: str | None = None
    source_default: str | None = None
    rows_axis: int = 0


@dataclass
class Strategy:
    """Registry entry of one strategy (see the module docstring)."""

    name: str
    fn: Callable
    params: dict[str, Param] = field(default_factory=dict)
    needs: frozenset = frozenset()
    cold_start: bool = False
    reason: str = ""
    top_b: TopB | None = None
    knn_index: bool = False

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""

    def check_params(self, params: dict) -> None:
        """ConfigError for any key of ``params`` that is not a parameter of this strategy."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "none"
            raise ConfigError(
                f"strategy '{self.name}' got unknown parameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; allowed: {allowed}"
            )

    def __call__(self, pool, budget, *, labeled_mask=None, rng=None, **params):
        """Run under the contract (:func:`mmal.select.api.run_strategy`): params and result checked."""
        from mmal.select.api import run_strategy

        return run_strategy(self.name, pool, budget, labeled_mask, rng, params)

    def describe(self) -> str:
        """Human-readable parameter list (for ``--help`` texts and docs)."""
        lines = [f"{self.name}  (needs: {', '.join(sorted(self.needs)) or 'probs only'})"]
        for p, spec in sorted(self.params.items()):
            lines.append(f"  {p} = {spec.default!r}: {spec.doc}")
        return "\n".join(lines)


STRATEGIES: dict[str, Strategy] = {}


def register(name: str, *, params: dict[str, str] | None = None, needs=(), cold_start: bool = False, reason: str = "",
             top_b: TopB | None = None, knn_index: bool = False):
    """Decorator registering ``fn`` as strategy ``name``.

    Parameters
    ----------
    name : str
        Strategy name used in specs (``"entropy"``, ``"lsb-lt"``).
    params : dict name -> doc
        Documentation of every keyword parameter of ``fn`` other than ``labeled_mask`` and
        ``rng``; the defaults come from the signature (a parameter needs one).
    needs : iterable of str
        Keys of :data:`NEEDS`.
    cold_start, reason, top_b, knn_index :
        The facts of the module docstring.
    """
    docs = dict(params or {})
    needs = frozenset(needs)
    bad = needs - set(NEEDS)
    if bad:
        raise ValueError(f"strategy '{name}': unknown needs {sorted(bad)}; known: {sorted(NEEDS)}")

    def deco(fn):
        if name in STRATEGIES:
            raise ValueError(f"strategy '{name}' registered twice")
        sig = inspect.signature(fn)
        kw = {p.name: p for p in sig.parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in RESERVED}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            raise ValueError(f"strategy '{name}': declare parameters explicitly, not **kwargs")
        missing_doc = sorted(set(kw) - set(docs))
        extra_doc = sorted(set(docs) - set(kw))
        no_default = sorted(p for p, v in kw.items() if v.default is inspect.Parameter.empty)
        if missing_doc or extra_doc or no_default:
            raise ValueError(f"strategy '{name}': undocumented {missing_doc}, documented but absent {extra_doc}, "
                             f"without default {no_default}")
        entry = Strategy(name, fn, {p: Param(v.default, docs[p]) for p, v in kw.items()}, needs, bool(cold_start),
                         str(reason), top_b, bool(knn_index))
        STRATEGIES[name] = entry
        fn.strategy_name = name
        return fn

    return deco


class MissingNeedError(ConfigError):
    """A strategy needs something the scored pool does not carry (:data:`NEEDS`).

    ``need`` names it; :data:`NEED_FIXES` says what provides it (the CLI prints that, with the
    workspace filled in), so callers never match error texts.
    """

    def __init__(self, strategy: str, need: str, detail: str = ""):
        self.strategy, self.need, self.detail = strategy, need, detail
        super().__init__(self.message("DIR", detail=True))

    def fix(self, ws) -> str:
        return NEED_FIXES.get(self.need, "").format(ws=ws)

    def message(self, ws, detail: bool = False) -> str:
        """The error line with the workspace's path in the fixing command (the command line's
        form); ``detail`` adds what exactly is missing (the Python exception's form)."""
        fix = self.fix(ws)
        what = NEED_WHAT.get(self.need, self.need) + (f" ({self.detail})" if detail and self.detail else "")
        return f"strategy '{self.strategy}' needs {what}" + (f"; {fix}" if fix else "")


def cold_start_strategies() -> list[str]:
    """Names of the strategies that need no labels and no model."""
    return sorted(n for n, s in STRATEGIES.items() if s.cold_start)


def reason_is_seed(strategy: str) -> bool:
    """True when a selected row's ``reason`` names the seed item it was found from (``reason="seed"``:
    LSB's kNN broadening); ``strategy`` is the row's strategy name (a mix records its parts)."""
    entry = STRATEGIES.get(str(strategy))
    return bool(entry is not None and entry.reason == "seed")


def get_strategy(name: str) -> Strategy:
    """The registry entry of ``name`` (callable like the strategy function, with checks)."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown strategy '{name}'; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
