"""The one parser of strategy specs, for :func:`mmal.select.select`, the CLI, ``simulate`` and scripts.

Grammar
-------
::

    strategies := spec ( "|" spec )*        several runs, in the written order
    spec       := name                       one strategy, e.g. "entropy"
                | part ( "," part )*         one mix, e.g. "entropy:0.8,lsb-lt:0.2"
    part       := name ":" share             share: a positive finite number

* **A comma joins the parts of one mix.** Every part of a mix carries a share; shares are
  normalised by their sum, so ``entropy:3,lsb-lt:1`` is the same mix as
  ``entropy:0.75,lsb-lt:0.25`` (the budget is split 3 : 1; :func:`mmal.select.mix.mix_select`
  records the normalised shares in ``info["shares"]``). Nothing is said about shares that
  do not sum to 1 because nothing is ambiguous about them.
* **A bar separates runs.** ``random|entropy|entropy:0.8,lsb-lt:0.2`` is three runs.
* For compatibility a comma list of bare names with no share at all (``random,entropy``)
  is a list of runs, since no reading as a mix exists. A comma list where some parts have
  a share and others do not (``entropy:0.8,lsb-lt``) is refused as ambiguous, as are ``;``
  (an older CLI used it inside mixes), empty parts, a strategy twice in one mix and the
  same run twice.

Parameters of a mix (:func:`route_params`): ``{part_name: {...}}``, ``"part.param"`` keys,
or plain keys, which go to every part of the spec that declares that parameter.
"""

from __future__ import annotations

import math

from mmal.errors import ConfigError
from mmal.select.registry import get_strategy

LIST_SEP = "|"
PART_SEP = ","


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """One spec -> ``[(name, share), ...]``; a single strategy gives ``[(name, 1.0)]``.

    Raises ConfigError (naming the spec) for unknown strategies, bad shares, a missing
    share inside a mix, duplicate parts, ``|`` or ``;``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"strategy spec must be a non-empty string, got {spec!r}")
    text = spec.strip()
    for bad, why in ((";", "use ',' between the parts of a mix and '|' between runs"),
                     (LIST_SEP, "one spec is one run; split a list with mmal.select.parse_strategies")):
        if bad in text:
            raise ConfigError(f"strategy spec '{text}': '{bad}' is not allowed here ({why})")
    raw = [p.strip() for p in text.split(PART_SEP)]
    if any(not p for p in raw):
        raise ConfigError(f"strategy spec '{text}': empty part (stray comma?)")
    if len(raw) == 1 and ":" not in raw[0]:
        get_strategy(raw[0])
        return [(raw[0], 1.0)]
    parts = []
    for item in raw:
        name, sep, share = item.rpartition(":")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"strategy spec '{text}': part '{item}' has no share; every part of a mix is 'strategy:share', "
                f"e.g. 'entropy:0.8,lsb-lt:0.2' (separate runs with '|')"
            )
        try:
            w = float(share)
        except ValueError:
            raise ConfigError(f"strategy spec '{text}': share '{share.strip()}' of '{name}' is not a number") from None
        if not math.isfinite(w) or w <= 0:
            raise ConfigError(f"strategy spec '{text}': share of '{name}' must be a positive number, got {share.strip()}")
        get_strategy(name)  # unknown names fail here, before any work
        parts.append((name, w))
    names = [n for n, _ in parts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"strategy spec '{text}': {', '.join(dup)} appears twice; give each strategy once with its total share")
    return parts


def is_mix(spec: str) -> bool:
    """True when ``spec`` is written as a mix (``name:share[,name:share...]``)."""
    return ":" in spec


def parse_strategies(text: str) -> list[str]:
    """A list of runs (see the module grammar) -> canonical spec strings, one per run.

    ``"random|entropy:3,lsb-lt:1"`` -> ``["random", "entropy:3,lsb-lt:1"]``;
    ``"random,entropy"`` -> ``["random", "entropy"]``; ``"entropy:3,lsb-lt:1"`` -> one mix.
    Canonical = whitespace removed, parts in the written order, shares as written.
    Every spec is validated (:func:`parse_spec`); errors are ConfigError naming the text.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--strategies: give at least one strategy, got {text!r}")
    if ";" in text:
        raise ConfigError(f"--strategies '{text.strip()}': ';' is not a separator; use ',' between the parts "
                          f"of a mix and '|' between runs, e.g. 'random|entropy:0.8,lsb-lt:0.2'")
    out: list[str] = []
    for seg in text.split(LIST_SEP):
        seg = seg.strip()
        if not seg:
            raise ConfigError(f"--strategies '{text.strip()}': empty run (stray '|'?)")
        items = [p.strip() for p in seg.split(PART_SEP)]
        with_share = [":" in p for p in items]
        if len(items) > 1 and not any(with_share):  # "random,entropy": a list of runs
            specs = items
        elif len(items) > 1 and not all(with_share):
            raise ConfigError(
                f"--strategies '{text.strip()}': '{seg}' mixes parts with and without a share; write a mix as "
                f"'entropy:0.8,lsb-lt:0.2' and separate runs with '|'"
            )
        else:
            specs = [seg]
        for s in specs:
            parts = parse_spec(s)
            canon = parts[0][0] if not is_mix(s) else PART_SEP.join(
                f"{n}:{p.rpartition(':')[2].strip()}" for (n, _), p in zip(parts, s.split(PART_SEP)))
            if canon in out:
                raise ConfigError(f"--strategies '{text.strip()}': run '{canon}' is listed twice")
            out.append(canon)
    return out


def shares_note(spec: str) -> str | None:
    """A one-line note when a mix's shares do not sum to 1 (they are normalised), else None.

    ``shares_note("entropy:3,lsb-lt:1")`` -> ``"mix 'entropy:3,lsb-lt:1': shares sum to 4;
    normalised to entropy 0.75, lsb-lt 0.25"``. For the CLI to print; the mix records the
    same in ``info["shares"]``.
    """
    parts = parse_spec(spec)
    total = sum(w for _, w in parts)
    if not is_mix(spec) or abs(total - 1.0) <= 1e-9:
        return None
    norm = ", ".join(f"{n} {w / total:.4g}" for n, w in parts)
    return f"mix '{spec.strip()}': shares sum to {total:g}; normalised to {norm}"


def needs_of(spec: str) -> set[str]:
    """Union of the registry ``needs`` of the strategies in ``spec`` (one run)."""
    out: set[str] = set()
    for name, _ in parse_spec(spec):
        out |= set(get_strategy(name).needs)
    return out


def spec_params(spec: str, strategy_params: dict | None) -> dict:
    """Keyword params for ``select(spec, ...)`` from per-strategy params ``{name: {param: value}}``.

    Keeps the entries of the strategies in ``spec`` as nested per-part dicts, so two parts
    of a mix may set the same parameter to different values (``simulate``'s
    ``strategy_params``; in earlier versions they were flattened across parts).
    """
    sp = strategy_params or {}
    for name, val in sp.items():
        if not isinstance(val, dict):
            raise ConfigError(f"strategy params must be {{strategy_name: {{param: value}}}}; got {name!r}: {val!r}")
    parts = parse_spec(spec)
    out = {n: dict(sp[n]) for n, _ in parts if n in sp}
    route_params(parts, out)  # unknown parameters fail here, naming the strategy
    return out


def route_params(parts, params: dict) -> dict[str, dict]:
    """Distribute ``select(**params)`` over the strategies of a spec -> ``{name: {param: value}}``.

    Accepted keys: a part name with a dict value (``{"lsb-lt": {"k": 5}}``), a dotted
    ``"lsb-lt.k"``, or a plain parameter name (``"k"``), which goes to every part that
    declares it. Anything else is a ConfigError naming the parts and their parameters.
    """
    names = [n for n, _ in parts]
    out: dict[str, dict] = {n: {} for n in names}

    def put(name, key, value, origin):
        if key not in get_strategy(name).params:
            get_strategy(name).check_params({key: value})  # raises with the allowed list
        if key in out[name] and out[name][key] != value:
            raise ConfigError(f"parameter '{key}' of '{name}' given twice with different values ({origin})")
        out[name][key] = value

    for key, value in params.items():
        if key in out and isinstance(value, dict):
            for k, v in value.items():
                put(key, k, v, f"{key}={{...}}")
        elif "." in key and key.split(".", 1)[0] in out:
            name, k = key.split(".", 1)
            put(name, k, value, key)
        elif "." in key:
            raise ConfigError(f"parameter '{key}': '{key.split('.', 1)[0]}' is not a strategy of this spec "
                              f"({', '.join(names)})")
        else:
            owners = [n for n in names if key in get_strategy(n).params]
            if not owners and len(names) == 1:
                get_strategy(names[0]).check_params({key: value})  # raises, naming the strategy
            if not owners:
                allowed = "; ".join(f"{n}: {', '.join(sorted(get_strategy(n).params)) or 'none'}" for n in names)
                raise ConfigError(f"unknown parameter '{key}' for {'+'.join(names)}; allowed: {allowed}")
            for n in owners:
                put(n, key, value, key)
    return out
