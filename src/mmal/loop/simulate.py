"""Simulated active learning: the real loop with an oracle that reveals held-back labels, for every task.

Every strategy of a seed starts from the same initial labeled set and the same round-0
model. Each round: train -> score -> select -> reveal. Strategies are compared at equal
label counts: a batch a strategy returns short of the budget (``lsb-knn`` with its fixed
k, a mix whose parts all come up short) is topped up by the named parameter ``top_up``
(default ``"random"``; the round record says so: ``top_up``, ``warnings``), so every run's
curve sits on the same ``n_labeled`` grid. The task (:mod:`mmal.tasks`) gives
the test metrics, the metric whose area under the budget curve ranks the strategies
(``--metric``, default the task's headline) and the batch badness (000 eq. 11 on ordered
labels, ``1 - p_y`` on classes). Writes ``results.json`` (strict JSON; ``null`` where a value
is undefined) and ``report.html``.

Two forms, one core (:func:`run_simulation`): :func:`simulate` makes ``OUT/workspace`` from an
items file and encodes it; :func:`simulate_workspace` reads an existing workspace without
changing it (cached features, gold labels from a column or a label file). ``docs/simulate.md``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError
from mmal.loop.core import aubc, score_pool, train_model

def _needs(spec: str) -> dict:
    """What scoring/training must provide for ``spec``, from the strategy registry's ``needs``."""
    from mmal.select import needs_of

    needs = needs_of(spec)
    return {"coalitions": "coalitions" in needs, "mc": "mc_samples" in needs, "unimodal": "unimodal" in needs,
            "at_selection": "at_selection" in needs}


def simulation_rows(items, split: np.ndarray, gold: np.ndarray, n_needed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(test rows, candidate rows)`` of a simulation: labeled test items, labeled non-test
    items; a ConfigError when there is no test item or fewer candidates than ``n_needed``
    (init + budget x rounds)."""
    test_idx = np.flatnonzero((split == "test") & (gold >= 0))
    cand = np.flatnonzero((split != "test") & (gold >= 0))
    if len(test_idx) == 0:
        raise ConfigError(f"{items}: no labeled test items (split == 'test'); simulate needs a test set")
    if n_needed > len(cand):
        raise ConfigError(f"{items}: init + budget x rounds = {n_needed} exceeds the {len(cand)} labeled non-test items")
    return test_idx, cand


def cross_fitted_probs(fit, predict, rows: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities ``[len(rows), C]`` of ``rows``: each fold predicted by a model
    ``fit`` on the other folds (seeded split; a fold's items never train its own model).

    ``simulate`` uses it for the initial labeled set, which no earlier model has seen: it
    stands in for the predictions those items would have had before labeling, so LSB's seed
    bad cases are out-of-sample from round 1 on.
    """
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(rows)) % folds
    out = None
    for f in range(folds):
        m = fit(rows[fold != f])
        p = predict(m, rows[fold == f])
        if out is None:
            out = np.full((len(rows), p.shape[1]), np.nan)
        out[fold == f] = p
    return out


def initial_labeled(candidates: np.ndarray, labels: np.ndarray, n0: int, seed: int) -> np.ndarray:
    """``n0`` candidates drawn at random, at least one per class when n0 >= #classes (seeded)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[candidates])
    picked = []
    if n0 >= len(classes):
        for c in classes:
            rows = candidates[labels[candidates] == c]
            picked.append(int(rows[rng.integers(len(rows))]))
    rest = np.setdiff1d(candidates, picked)
    picked += rng.choice(rest, size=max(0, n0 - len(picked)), replace=False).tolist()
    return np.sort(np.array(picked, np.int64))


def simulate(items, strategies, *, init: int, budget: int, rounds: int, seeds=(0, 1, 2), out,
             encoders: str | None = None, model: dict | None = None, train: dict | None = None,
             strategy_params: dict | None = None, val_fraction: float | None = None, mc_samples: int = 10,
             modalities=None, learner: str | None = None, init_strategy: str | None = None,
             task: str | None = None, metric: str | None = None, top_up: str | None = "random",
             progress: bool = True, log=print) -> dict:
    """Run the simulation on an items file and write ``out/results.json`` and ``out/report.html``.

    The items file form: ``out/workspace/`` is made from the file (its ``label`` column is the
    gold label the oracle reveals), encoded, then run by the same core as
    :func:`simulate_workspace` (:func:`run_simulation`).

    Parameters
    ----------
    items : items file (every non-test item must carry its gold label: the oracle reveals it).
    strategies : list of strategy specs (names or mixes like ``"entropy:0.8,lsb-lt:0.2"``).
    init, budget, rounds : initial labeled set size, labels per round, number of rounds.
    seeds : one run per seed; each seed draws its own initial set and round-0 model.
    out : output folder; its ``workspace/`` holds the validated items and the feature cache
        (reused on a re-run with the same items file and task).
    encoders : comma list of encoder specs overriding the defaults.
    learner : a learner of the task (default: the task's, :mod:`mmal.tasks`).
    task : ``binary``, ``multiclass`` or ``relevance``; default inferred from the items
        (:func:`mmal.tasks.infer_task`).
    metric : the test metric whose area under the budget curve (AUBC) is each run's ``aubc``;
        default the task's headline (binary R@P80, multiclass macro-F1, relevance Spearman).
        The AUBC of every curve metric of the task is recorded too (``aubc_by_metric``).
    init_strategy : a cold-start strategy choosing the initial labeled set (``kmeans``,
        ``typiclust``, ``mmcsal``, ...) instead of random; strategies that need a shared space
        get MMSSL pre-trained on the candidates' pooled features.
    model, train : the learner's ``[model]`` settings and TrainConfig overrides.
    val_fraction : labels held out for early stopping (default per learner: 0 except ``fusion``).
    strategy_params : per strategy name, extra keyword params for :func:`mmal.select.select`.
    mc_samples : MC-dropout passes T for BALD.
    modalities : use only these modalities (e.g. ``["image", "text"]``); default all.
    top_up : what fills a batch that a strategy returns short of ``budget``, so that every
        strategy is compared at the same label counts (000 Table 1 compares strategies at
        equal budgets; the paper does not say what to do with a short batch).
        ``"random"`` (default; neutral: it favours no strategy) or another registered
        strategy name: run on the rest of the budget over the items still unlabeled, its
        picks recorded apart (the round's ``top_up``: strategy, n, ids, batch badness and
        labels; ``selected``, ``n_selected``, ``batch_badness`` and ``batch_labels`` stay
        the strategy's own). ``None``: leave the batch short; the curves then sit on the
        labels actually used (``n_labeled``) and each AUBC is normalised over its own label
        range. Either way a short batch is in the round's ``warnings`` and in the log.
    """
    from mmal.workspace import Workspace, init_workspace

    t_start = time.time()
    strategies = check_run(strategies, strategy_params, top_up, init, budget, rounds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = Path(items).resolve()
    wsdir = out / "workspace"
    ws = None
    if (wsdir / "mmal.toml").exists():
        ws = Workspace(wsdir)
        if ws.config["task"].get("items_source") != str(items) or (task is not None and ws.task.name != task):
            ws = None
    if ws is None:  # an experiment on a fixed file keeps every column; the ones not read are named below
        ws = init_workspace(wsdir, items, task=task, force=True, progress=progress, extra_columns=True)
        _log_metadata_columns(ws, log)
    if encoders:
        specs = dict(ws.config.get("encoders", {}))
        for s in encoders.split(","):
            specs[s.split(":")[0]] = s.strip()
        ws.config["encoders"] = specs
        ws.save_config()
    tk = ws.task
    metric = tk.check_metric(metric)
    learner = tk.check_learner(learner)
    tk.encode(ws, progress=progress)
    gold = np.array([-1 if v is None else v for v in ws.items.column("label").to_pylist()], np.int64)
    features = tk.load_features(ws, progress=progress)
    return run_simulation(ws, features, gold, strategies, source={"items": str(items)}, where=str(items),
                          init=init, budget=budget, rounds=rounds, seeds=seeds, out=out, model=model, train=train,
                          strategy_params=strategy_params, val_fraction=val_fraction, mc_samples=mc_samples,
                          modalities=modalities, learner=learner, init_strategy=init_strategy, metric=metric,
                          top_up=top_up, progress=progress, log=log, t_start=t_start)


def simulate_workspace(directory, strategies, *, init: int, budget: int, rounds: int, seeds=(0, 1, 2), out=None,
                       gold_column: str | None = None, gold_file=None, model: dict | None = None,
                       train: dict | None = None, strategy_params: dict | None = None,
                       val_fraction: float | None = None, mc_samples: int = 10, modalities=None,
                       learner: str | None = None, init_strategy: str | None = None, metric: str | None = None,
                       top_up: str | None = "random", progress: bool = True, log=print) -> dict:
    """Simulate on an existing workspace (``mmal init`` + ``mmal encode``), reading it only.

    The features are the workspace's feature cache, read without writing
    (``Task.load_features(read_only=True)``: no encoder is built or called, no consolidated
    view is written); the gold labels come from a column of the workspace's items
    (``gold_column``, e.g. a metadata column kept with ``mmal init --extra-columns``) or from
    a label file (``gold_file``, CSV / JSONL ``id,label``, read by the label import's reader:
    every bad row named). Items without a gold label are left out (how many is logged and
    recorded as ``n_no_gold``). The learner and its ``[model]`` / ``[train]`` settings are the
    workspace's unless given. Nothing under the workspace changes except the output folder
    ``out`` (default ``DIR/simulations/<UTC time>/``), created once every input is checked.
    Other parameters as :func:`simulate`.
    """
    from mmal.workspace import Workspace

    t_start = time.time()
    strategies = check_run(strategies, strategy_params, top_up, init, budget, rounds)
    if (gold_column is None) == (gold_file is None):
        raise ConfigError("simulate on a workspace needs the gold labels: give --gold-column NAME (a column of its "
                          "items) or --gold FILE (CSV / JSONL with id,label), not both")
    ws = Workspace(directory)
    tk = ws.task
    metric = tk.check_metric(metric)
    file_model = {k: v for k, v in dict(ws.config.get("model", {})).items() if k != "learner"}
    learner = tk.check_learner(learner or ws.config.get("model", {}).get("learner"))
    if gold_column is not None:
        gold, source = gold_from_column(ws, gold_column), {"gold": f"column '{gold_column}'"}
    else:
        gold, source = gold_from_file(ws, gold_file), {"gold": str(Path(gold_file).resolve())}
    n_no_gold = int((gold < 0).sum())
    tk.check_n_classes(max(ws.n_classes, int(gold.max()) + 1 if len(gold) else 0), f"{ws.dir}: gold {source['gold']}")
    features = tk.load_features(ws, progress=progress, read_only=True)
    from mmal.learners import LEARNERS

    file_train = dict(ws.config.get("train", {})) if LEARNERS[learner].train_defaults is not None else {}
    file_train = {k: v for k, v in file_train.items() if k not in ("seed", "val_fraction", "tower_lr", "tower_mode",
                                                                   "finetune_towers", "device")}
    model = {**file_model, **{k: v for k, v in dict(model or {}).items() if v is not None}}
    train = {**file_train, **{k: v for k, v in dict(train or {}).items() if v is not None}}
    if val_fraction is None and ws.config.get("train", {}).get("val_fraction") is not None:
        val_fraction = float(ws.config["train"]["val_fraction"])
    if n_no_gold:
        log(f"[simulate] {n_no_gold} of {len(gold)} items have no gold label ({source['gold']}); they are left out")
    source = {"items": str(ws.dir), "workspace": str(ws.dir), **source, "n_no_gold": n_no_gold}
    out = default_out(ws.dir) if out is None else Path(out)
    return run_simulation(ws, features, gold, strategies, source=source, where=f"{ws.dir} (gold {source['gold']})",
                          init=init, budget=budget, rounds=rounds, seeds=seeds, out=out, model=model, train=train,
                          strategy_params=strategy_params, val_fraction=val_fraction, mc_samples=mc_samples,
                          modalities=modalities, learner=learner, init_strategy=init_strategy, metric=metric,
                          top_up=top_up, progress=progress, log=log, t_start=t_start, prepare_out=True)


def check_run(strategies, strategy_params, top_up, init, budget, rounds) -> list[str]:
    """The strategy list, once every spec, its params, ``top_up`` and the sizes are valid (before any work)."""
    from mmal.select import spec_params

    strategies = list(strategies)
    if not strategies:
        raise ConfigError("--strategies: give at least one strategy")
    for spec in strategies:  # fail on a bad spec or params before any encoding or training
        spec_params(spec, strategy_params)
    check_top_up(top_up, strategy_params)
    if init < 1 or budget < 1 or rounds < 1:
        raise ConfigError(f"--init, --budget and --rounds must be >= 1 (got {init}, {budget}, {rounds})")
    return strategies


def default_out(ws_dir) -> Path:
    """``DIR/simulations/<UTC time>`` (``-2``, ``-3``, ... when that folder exists already)."""
    base = Path(ws_dir) / "simulations" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def class_id(value, names, n_classes: int):
    """A gold value as a class id: ``None`` for no label (null, NaN, empty), an int for a class id
    or a class name of ``names``; a ``str`` is the reason the value is refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return f"{value!r} is a boolean, not a class"
    if isinstance(value, float):
        if not value.is_integer():
            return f"{value!r} is not a class id (an integer) or a class name"
        value = int(value)
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            value = int(s)
        except ValueError:
            if names and s in names:
                return names.index(s)
            from mmal.data.items import suggest

            hint = f" (did you mean {hint!r}?)" if names and (hint := suggest(s, names)) else ""
            known = ", ".join(repr(n) for n in names) if names else f"integers 0..{n_classes - 1}"
            return f"{s!r} is not a class of this workspace{hint} (classes: {known})"
    if not isinstance(value, (int, np.integer)):
        return f"{value!r} is not a class id or a class name"
    value = int(value)
    if value < 0:
        return f"{value} is negative"
    if names and value >= len(names):
        return f"{value} is out of range 0..{len(names) - 1}"
    from mmal.data.items import MAX_CLASSES

    if value >= MAX_CLASSES:
        return f"{value} is above the largest class id a workspace takes ({MAX_CLASSES - 1})"
    return value


def gold_from_column(ws, column: str) -> np.ndarray:
    """Gold class ids ``[N]`` (-1 = none) from ``column`` of the workspace's items (class ids or names).

    ConfigError for a column the items do not have (with a "did you mean") and for a value
    that is not a class of the workspace (naming the item, its row and how many more)."""
    from mmal.data.items import suggest

    table = ws.items
    cols = table.column_names
    if column not in cols:
        hint = f" (did you mean '{s}'?)" if (s := suggest(column, cols)) else ""
        raise ConfigError(f"--gold-column '{column}': not a column of the items of {ws.dir}{hint} "
                          f"(columns: {', '.join(cols)})")
    names = ws.label_names
    ids = table.column("id").to_pylist()
    out = np.full(len(ids), -1, np.int64)
    bad = []
    for i, v in enumerate(table.column(column).to_pylist()):
        c = class_id(v, names, ws.n_classes)
        if isinstance(c, str):
            bad.append((i, c))
        elif c is not None:
            out[i] = c
    if bad:
        i, why = bad[0]
        more = f" (and {len(bad) - 1} more item(s))" if len(bad) > 1 else ""
        raise ConfigError(f"{ws.dir}: item {ids[i]!r} (row {i + 1}), column '{column}': {why}{more}")
    return out


def gold_from_file(ws, path) -> np.ndarray:
    """Gold class ids ``[N]`` (-1 = none) from a label file (CSV / JSONL ``id,label``; Label Studio
    exports too), read by the label import's reader (:mod:`mmal.workspace.annotate`).

    Every bad row is named in one ConfigError (file, row, field): an id that is not in the
    workspace, a label that is not a class, two different labels for one item."""
    from mmal.data.labelstudio import RowError
    from mmal.workspace.annotate import _parse_rows, bad_rows

    path = Path(path).resolve()
    problems: list = []
    rows = _parse_rows(path, problems)
    ids = ws.items.column("id").to_pylist()
    pos = {k: i for i, k in enumerate(ids)}
    names = ws.label_names
    out = np.full(len(ids), -1, np.int64)
    first: dict[str, int] = {}
    for i, r in rows:
        fid = r.get("_id_field", "id")
        item = r.get("id")
        item = None if item is None or isinstance(item, (dict, list, bool, float)) else str(item).strip()
        if not item:
            problems.append(RowError(path, i, f"field '{fid}': expected an item id, got {r.get('id')!r}"))
            continue
        if item not in pos:
            problems.append(RowError(path, i, f"field '{fid}': item id {item!r} is not in the workspace {ws.dir}"))
            continue
        c = class_id(r.get("label"), names, ws.n_classes)
        if isinstance(c, str):
            problems.append(RowError(path, i, f"field 'label': {c}"))
            continue
        if c is None:
            continue
        j = pos[item]
        if out[j] >= 0 and out[j] != c:
            problems.append(RowError(path, i, f"field 'label': item {item!r} already has label {int(out[j])} in row "
                                              f"{first[item]}, now {c}; keep one row per item"))
            continue
        out[j] = c
        first.setdefault(item, i)
    if problems:
        if len(problems) == 1:
            raise ConfigError(f"{path}: row {problems[0].row}: {problems[0].detail}")
        raise ConfigError(f"{path}: {len(problems)} bad rows: {bad_rows(problems)}")
    return out


def non_default_params(learner: str, model: dict) -> dict:
    """The ``[model]`` settings of ``model`` that ``learner`` reads and that differ from its defaults."""
    from mmal.learners import LEARNERS

    defaults = LEARNERS[learner].settings()

    def same(a, b):
        return (list(a) if isinstance(a, (list, tuple)) else a) == (list(b) if isinstance(b, (list, tuple)) else b)

    return {k: v for k, v in model.items() if k in defaults and v is not None and not same(v, defaults[k])}


def run_simulation(ws, features, gold, strategies, *, source: dict, where: str, init: int, budget: int, rounds: int,
                   seeds, out, model=None, train=None, strategy_params=None, val_fraction=None, mc_samples: int = 10,
                   modalities=None, learner: str, init_strategy=None, metric: str, top_up="random",
                   progress: bool = True, log=print, t_start: float | None = None, prepare_out: bool = False) -> dict:
    """The one core of both forms: the workspace ``ws`` gives the items, splits, classes and
    task; ``features`` what the learner fits on; ``gold [N]`` the labels the oracle reveals
    (-1 = none: such items are never candidates nor test items). ``source`` goes into the
    results' config (where the items and gold labels came from); ``where`` names them in errors.
    ``prepare_out``: create ``out`` here, after the checks (the workspace form)."""
    t_start = time.time() if t_start is None else t_start
    out = Path(out)
    tk = ws.task
    table = ws.items
    ids = np.asarray(table.column("id").to_pylist())
    split = np.asarray(table.column("split").to_pylist())
    if modalities:
        features = select_modalities(features, modalities)
    test_idx, cand = simulation_rows(where, split, gold, init + budget * rounds)
    n_classes = max(ws.n_classes, int(gold.max()) + 1)
    names = ws.class_names(n_classes)
    groups = tk.groups(table)
    from mmal.learners import LEARNERS

    needs = set().union(*(needs_of_spec(s) for s in strategies))
    model = {k: v for k, v in dict(model or {}).items() if v is not None}
    model = {**LEARNERS[learner].settings_for(needs, model), **model}  # e.g. unimodal heads, MC dropout
    train = {k: v for k, v in dict(train or {}).items() if v is not None}
    from mmal.loop.core import build_learner

    build_learner(learner, max(2, n_classes), model=model, train=train)  # bad settings fail before any output
    if prepare_out:
        from mmal.utils import guard_write

        with guard_write(out, done="nothing was simulated"):
            out.mkdir(parents=True, exist_ok=True)
    results = {"strategies": {s: {"per_seed": {}} for s in strategies}, "config": {
        **source, "task": tk.name, "metric": metric, "curve_metrics": list(tk.curve_metrics),
        "strategies": strategies, "init": init, "budget": budget, "rounds": rounds, "seeds": list(seeds),
        "encoders": ws.config.get("encoders"), "learner": learner, "model": model,
        "learner_params": non_default_params(learner, model), "train": train,
        "val_fraction": val_fraction, "n_items": len(ids), "n_test": int(len(test_idx)), "n_candidates": int(len(cand)),
        "n_classes": n_classes, "class_names": names, "modalities": feature_modalities(features),
        "top_up": top_up, "out": str(out),
    }}
    if groups is not None:
        results["config"]["n_groups_test"] = int(len(set(groups[test_idx].tolist())))

    def test_metrics(m):
        """The task's test metrics of the fused head and the test accuracy of each unimodal head
        (002 Fig. 3.3; {} without such heads), from one scoring pass over the test items."""
        res = m.score(features, test_idx)
        uni = {k: float((p.argmax(1) == gold[test_idx]).mean()) for k, p in res["unimodal_probs"].items()}
        met = tk.metrics(gold[test_idx], res["probs"], scores=res.get("scores"),
                         groups=None if groups is None else groups[test_idx], names=names)
        return met, uni

    def fit(rows, seed):
        return train_model(features, gold, rows, n_classes, learner=learner, model_overrides=model,
                           train_overrides=train, val_fraction=val_fraction, seed=seed)[0]

    pretrained = None
    if init_strategy and init_strategy != "random":
        from mmal.loop.pretrain import check_cold_strategy, needs_shared_space, pretrain_features

        check_cold_strategy(init_strategy)
        pooled = pooled_features(features)
        if needs_shared_space(init_strategy):
            pretrained = pretrain_features(pooled, cand)
    results["config"]["init_strategy"] = init_strategy or "random"

    def initial(seed):
        if init_strategy and init_strategy != "random":
            from mmal.loop.pretrain import cold_start_initial

            return np.sort(cold_start_initial(pooled, cand, init, init_strategy, seed, pretrained, n_classes=n_classes))
        return initial_labeled(cand, gold, init, seed)

    env = SimEnv(ids=ids, gold=gold, split=split, table=table, features=features, fit=fit, test_metrics=test_metrics,
                 initial=initial, results=results, task=tk, metric=metric)
    return _run_rounds(env, strategies, seeds, init, budget, rounds, out, strategy_params, mc_samples, t_start, log,
                       progress=progress, top_up=top_up)


def check_top_up(top_up, strategy_params=None) -> None:
    """``top_up`` must be ``None`` or one registered strategy name (its params checked like a run's)."""
    if top_up is None:
        return
    from mmal.select import get_strategy, spec_params

    if not isinstance(top_up, str) or "," in top_up or ":" in top_up:
        raise ConfigError(f"top_up must be a strategy name (e.g. 'random') or None, got {top_up!r}")
    get_strategy(top_up)
    spec_params(top_up, strategy_params)


def needs_of_spec(spec: str) -> set[str]:
    """The registry needs of the strategies in one run's spec."""
    from mmal.select import needs_of

    return set(needs_of(spec))


def select_modalities(features, modalities):
    """``features`` restricted to ``modalities`` (a dict of per-modality features)."""
    if not isinstance(features, dict):
        raise ConfigError("--modalities: this task's inputs are not per-modality features")
    unknown = sorted(set(modalities) - set(features))
    if unknown:
        raise ConfigError(f"modalities {unknown} not in the dataset (has {', '.join(sorted(features))})")
    return {m: f for m, f in features.items() if m in modalities}


def feature_modalities(features) -> list[str]:
    return sorted(features) if isinstance(features, dict) else list(getattr(features, "modalities", []) or [])


def pooled_features(features) -> dict:
    """``{m: pooled [N, D_m]}`` of per-modality features (cold start reads pooled vectors)."""
    if not isinstance(features, dict):
        raise ConfigError("--init-strategy: cold-start strategies read per-modality pooled features, which this "
                          "task's inputs do not have; draw the initial set at random")
    return {m: np.asarray(f.pooled, np.float32) for m, f in features.items()}


@dataclass
class SimEnv:
    """What the round loop needs: the items, a fit and a test-metrics function, and the task.

    ``fit(rows, seed) -> learner`` (the learner contract of :mod:`mmal.learners.base`, scored
    by :func:`~mmal.loop.core.score_pool` on ``features``); ``test_metrics(learner) ->
    (metrics, unimodal accuracy)``; ``initial(seed)`` the round-0 rows; ``task`` supplies the
    batch badness (:meth:`~mmal.tasks.Task.badness`), the curve values and whether labels
    are ordered; ``metric`` is the AUBC metric.
    """

    ids: np.ndarray
    gold: np.ndarray
    split: np.ndarray
    table: object
    features: object
    fit: object
    test_metrics: object
    initial: object
    results: dict
    task: object
    metric: str


def _run_rounds(env: SimEnv, strategies, seeds, init, budget, rounds, out, strategy_params, mc_samples, t_start, log,
                progress: bool = True, top_up: str | None = "random"):
    """Each seed: initial set and round-0 model shared by every strategy; then per round
    score -> select (-> top up a short batch, :func:`simulate`'s ``top_up``) -> reveal -> fit;
    records per round and the AUBC of the task's curve metrics."""
    from mmal.select import select, spec_params
    from mmal.select.api import selection_warnings
    from mmal.utils import ProgressTask

    ids, gold, split, table, features, results = env.ids, env.gold, env.split, env.table, env.features, env.results
    fit, test_metrics, tk = env.fit, env.test_metrics, env.task
    n_classes = int(results["config"]["n_classes"])
    case_study = {}
    sp = strategy_params or {}
    seeds = list(seeds)
    bar = ProgressTask(len(seeds) * len(strategies) * rounds, "simulate (rounds)", progress)

    def line(k, seed, spec, r, n_labeled, met, t0):  # one progress line per round on the log
        val = tk.curve_value(met, env.metric)
        shown = "undefined" if not np.isfinite(val) else f"{val:.4f}"
        log(f"[simulate] {spec} (strategy {k}/{len(strategies)}, seed {seed}): round {r}/{rounds}, "
            f"{n_labeled} labels, {env.metric} {shown} ({time.time() - t0:.1f} s)")

    try:
        for i_seed, seed in enumerate(seeds, start=1):
            log(f"[simulate] seed {seed} ({i_seed}/{len(seeds)}): initial {init} labels and the round-0 model, "
                f"shared by {len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'}")
            t_seed = time.time()
            lab0 = env.initial(seed)
            m0 = fit(lab0, seed)
            met0, uni0 = test_metrics(m0)
            at_sel0 = None
            if any(_needs(s)["at_selection"] for s in strategies):  # LSB: out-of-sample judgements of the initial set
                cf = cross_fitted_probs(lambda r: fit(r, seed), lambda m, r: m.score(features, r)["probs"],
                                        lab0, folds=2, seed=seed)
                at_sel0 = np.full((len(ids), cf.shape[1]), np.nan)
                at_sel0[lab0] = cf
            t_round0 = time.time() - t_seed  # the shared round 0 (initial set, model, cross-fit)
            for k, spec in enumerate(strategies, start=1):
                need = _needs(spec)
                t_spec = time.time() - t_round0
                line(k, seed, spec, 0, len(lab0), met0, t_spec)
                labeled = np.zeros(len(ids), bool)
                labeled[lab0] = True
                mdl = m0
                at_sel = None if at_sel0 is None else at_sel0.copy()  # probabilities of each labeled item before its label
                recs = [{"round": 0, "n_labeled": int(labeled.sum()), "test": met0}]
                if uni0:
                    recs[0]["unimodal_test_accuracy"] = uni0
                for r in range(1, rounds + 1):
                    known = np.where(labeled, gold, -1)
                    pool = score_pool(mdl, features, ids, labels=known, split=split, coalitions=need["coalitions"],
                                      mc_samples=mc_samples if need["mc"] else 0, seed=seed * 1000 + r,
                                      ordered=tk.ordered)
                    if at_sel is not None:
                        from mmal.select.lsb import AT_SELECTION

                        pool.extras[AT_SELECTION] = at_sel
                    # items without a gold label cannot be revealed: treat them as unavailable
                    unavailable = labeled | (gold < 0)
                    params = spec_params(spec, sp)  # per part, never flattened across a mix
                    sel = select(spec, pool, budget, labeled_mask=unavailable, seed=seed * 1000 + r, **params)
                    rows = np.searchsorted(ids, sel.ids) if _sorted(ids) else _rows_of(ids, sel.ids)
                    probs_sel = np.asarray(pool.probs)[rows]
                    badness = float(tk.badness(probs_sel, gold[rows]).mean()) if len(rows) else float("nan")
                    warns = selection_warnings(sel)
                    extra = None
                    if len(rows) < budget and top_up is not None:  # equal label counts: fill the rest
                        taken = unavailable.copy()
                        taken[rows] = True
                        ext = select(top_up, pool, budget - len(rows), labeled_mask=taken, seed=seed * 1000 + r,
                                     **spec_params(top_up, sp))
                        extra = np.searchsorted(ids, ext.ids) if _sorted(ids) else _rows_of(ids, ext.ids)
                        p_ext = np.asarray(pool.probs)[extra]
                        warns = warns + [f"{spec} selected {len(rows)} of the budget {budget}; topped up with "
                                         f"{len(extra)} '{top_up}' picks (top_up={top_up!r})"] + selection_warnings(ext)
                        if at_sel is not None and len(extra):
                            at_sel[extra] = p_ext
                        labeled[extra] = True
                    elif len(rows) < budget:
                        warns = warns + [f"{spec} selected {len(rows)} of the budget {budget}; left short (top_up=None)"]
                    labeled[rows] = True
                    if at_sel is not None and len(rows):
                        at_sel[rows] = probs_sel  # judged later by what the model said before labeling
                    mdl = fit(np.flatnonzero(labeled), seed)
                    met, uni = test_metrics(mdl)
                    rec = {"round": r, "n_labeled": int(labeled.sum()), "test": met, "batch_badness": badness,
                           "n_selected": int(len(rows)), "selected": sel.ids.tolist(),
                           "batch_labels": np.bincount(gold[rows], minlength=n_classes).tolist()}
                    if extra is not None:
                        rec["top_up"] = {"strategy": top_up, "n": int(len(extra)), "ids": ext.ids.tolist(),
                                         "batch_badness": float(tk.badness(p_ext, gold[extra]).mean())
                                         if len(extra) else float("nan"),
                                         "batch_labels": np.bincount(gold[extra], minlength=n_classes).tolist()}
                    if warns:
                        rec["warnings"] = warns
                        for w in warns:
                            log(f"[simulate] warning: seed {seed} {spec} round {r}: {w}")
                    infos = _part_infos(sel.info or {})
                    if any("lookalike_auc" in i for i in infos):  # a part fitted (or tried) a lookalike model
                        aucs = [i["lookalike_auc"] for i in infos if i.get("lookalike_auc") is not None]
                        rec["lookalike_auc"] = float(aucs[0]) if aucs else float("nan")
                        notes = [i["note"] for i in infos if "lookalike_auc" in i and i.get("note")]
                        if notes:
                            rec["lookalike_note"] = notes[0]
                    for i in infos:
                        if "mean_contribution" in i:
                            rec["modality_contribution"] = i["mean_contribution"]
                    if uni:
                        rec["unimodal_test_accuracy"] = uni
                    recs.append(rec)
                    line(k, seed, spec, r, rec["n_labeled"], met, t_spec)
                    bar.advance()
                    if seed == list(seeds)[0] and spec not in case_study and any(s for s in sel.reason if s):
                        case_study[spec] = _case_rows(sel, pool, ids, gold, table, results["config"].get("class_names"))
                n_lab = [x["n_labeled"] for x in recs]
                by = {m: aubc(n_lab, [tk.curve_value(x["test"], m) for x in recs]) for m in tk.curve_metrics}
                results["strategies"][spec]["per_seed"][str(seed)] = {
                    "rounds": recs, "aubc": by[env.metric], "aubc_by_metric": by,
                    "n_top_up": int(sum(x.get("top_up", {}).get("n", 0) for x in recs))}
                log(f"[simulate] {spec} (strategy {k}/{len(strategies)}, seed {seed}): done, AUBC({env.metric}) "
                    + ("undefined" if not np.isfinite(by[env.metric]) else f"{by[env.metric]:.4f}"))
    finally:
        bar.close()
    for spec, d in results["strategies"].items():
        vals = [v["aubc"] for v in d["per_seed"].values()]
        d["mean_aubc"] = float(np.mean(vals))
        d["std_aubc"] = float(np.std(vals))
        for m in tk.curve_metrics:
            v = [x["aubc_by_metric"][m] for x in d["per_seed"].values()]
            d.setdefault("mean_aubc_by_metric", {})[m] = float(np.mean(v))
            d.setdefault("std_aubc_by_metric", {})[m] = float(np.std(v))
    results["config"]["seconds"] = round(time.time() - t_start, 1)
    (out / "results.json").write_text(_dumps(results))
    from mmal.report import write_report

    write_report(results, out / "report.html", case_study=case_study)
    return results


def _dumps(results) -> str:
    """Strict JSON: NaN and infinity become ``null`` (not valid JSON otherwise)."""
    def clean(o):
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (float, np.floating)):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        return o

    return json.dumps(clean(results), indent=1, default=_json_default, allow_nan=False)


def _part_infos(info: dict) -> list[dict]:
    """The info dict of a selection and, for a mix, of each of its parts."""
    out = [info]
    for part in info.get("parts", []) or []:
        out.extend(_part_infos(part.get("info") or {}))
    return out


def _sorted(a) -> bool:
    return bool(np.all(a[:-1] <= a[1:])) if len(a) > 1 else True


def _rows_of(ids, chosen):
    pos = {k: i for i, k in enumerate(ids.tolist())}
    return np.array([pos[c] for c in chosen], np.int64)


def _log_metadata_columns(ws, log) -> None:
    """Name the columns of the items file that no stage reads (with a "did you mean" where one is close)."""
    from mmal.data.items import KNOWN_COLUMNS, suggest

    known = (*KNOWN_COLUMNS, *ws.task.item_columns)
    meta = [c for c in ws.items.column_names if c not in known]
    if meta:
        shown = ", ".join(c + (f" (did you mean {s!r}?)" if (s := suggest(c, known)) else "") for c in meta)
        log(f"[simulate] metadata columns, not read: {shown}")


def _case_rows(sel, pool, ids, gold, table, class_names=None, limit: int = 8):
    """Seed bad cases next to their kNN neighbours (000 Table 3 style); classes by name when named."""
    pos = {k: i for i, k in enumerate(ids.tolist())}
    names = table.column_names
    text = table.column("text").to_pylist() if "text" in names else [None] * len(ids)
    image = table.column("image").to_pylist() if "image" in names else [None] * len(ids)
    probs = np.asarray(pool.probs)
    groups: dict = {}
    for i, r in zip(sel.ids, sel.reason):
        if r and r in pos:
            groups.setdefault(r, []).append(i)
    out = []
    for seed_id, nbrs in list(groups.items())[:limit]:
        def item(k):
            j = pos[k]
            lab, pred = int(gold[j]), int(probs[j].argmax())
            name = (lambda c: class_names[c] if class_names and c < len(class_names) else str(c))
            return {"id": k, "text": text[j], "image": image[j], "label": lab, "pred": pred,
                    "label_name": name(lab), "pred_name": name(pred), "p_pred": float(probs[j].max())}
        out.append({"seed": item(seed_id), "neighbours": [item(k) for k in nbrs[:3]]})
    return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
