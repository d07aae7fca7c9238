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
"""

from __future__ import annotations

import json
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
        raise ConfigError(f"init + budget x rounds = {n_needed} exceeds the {len(cand)} labeled non-test items")
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
    """Run the simulation and write ``out/results.json`` and ``out/report.html``.

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
    from mmal.select import spec_params
    from mmal.workspace import Workspace, init_workspace

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    strategies = list(strategies)
    if not strategies:
        raise ConfigError("--strategies: give at least one strategy")
    for spec in strategies:  # fail on a bad spec or params before any encoding or training
        spec_params(spec, strategy_params)
    check_top_up(top_up, strategy_params)
    if init < 1 or budget < 1 or rounds < 1:
        raise ConfigError(f"--init, --budget and --rounds must be >= 1 (got {init}, {budget}, {rounds})")
    t_start = time.time()
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
    table = ws.items
    ids = np.asarray(table.column("id").to_pylist())
    gold = np.array([-1 if v is None else v for v in table.column("label").to_pylist()], np.int64)
    split = np.asarray(table.column("split").to_pylist())
    features = tk.load_features(ws, progress=progress)
    if modalities:
        features = select_modalities(features, modalities)
    test_idx, cand = simulation_rows(items, split, gold, init + budget * rounds)
    n_classes = max(ws.n_classes, int(gold.max()) + 1)
    names = ws.class_names(n_classes)
    groups = tk.groups(table)
    from mmal.learners import LEARNERS

    needs = set().union(*(needs_of_spec(s) for s in strategies))
    model = {k: v for k, v in dict(model or {}).items() if v is not None}
    model = {**LEARNERS[learner].settings_for(needs, model), **model}  # e.g. unimodal heads, MC dropout
    results = {"strategies": {s: {"per_seed": {}} for s in strategies}, "config": {
        "items": str(items), "task": tk.name, "metric": metric, "curve_metrics": list(tk.curve_metrics),
        "strategies": strategies, "init": init, "budget": budget, "rounds": rounds, "seeds": list(seeds),
        "encoders": ws.config.get("encoders"), "learner": learner, "model": model, "train": train or {},
        "val_fraction": val_fraction, "n_items": len(ids), "n_test": int(len(test_idx)), "n_candidates": int(len(cand)),
        "n_classes": n_classes, "class_names": names, "modalities": feature_modalities(features),
        "top_up": top_up,
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
    bar = ProgressTask(len(list(seeds)) * len(strategies) * rounds, "simulate (rounds)", progress)
    try:
        for seed in seeds:
            lab0 = env.initial(seed)
            m0 = fit(lab0, seed)
            met0, uni0 = test_metrics(m0)
            at_sel0 = None
            if any(_needs(s)["at_selection"] for s in strategies):  # LSB: out-of-sample judgements of the initial set
                cf = cross_fitted_probs(lambda r: fit(r, seed), lambda m, r: m.score(features, r)["probs"],
                                        lab0, folds=2, seed=seed)
                at_sel0 = np.full((len(ids), cf.shape[1]), np.nan)
                at_sel0[lab0] = cf
            for spec in strategies:
                need = _needs(spec)
                log(f"[simulate] seed {seed} strategy {spec}")
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
                    bar.advance()
                    if seed == list(seeds)[0] and spec not in case_study and any(s for s in sel.reason if s):
                        case_study[spec] = _case_rows(sel, pool, ids, gold, table, results["config"].get("class_names"))
                n_lab = [x["n_labeled"] for x in recs]
                by = {m: aubc(n_lab, [tk.curve_value(x["test"], m) for x in recs]) for m in tk.curve_metrics}
                results["strategies"][spec]["per_seed"][str(seed)] = {
                    "rounds": recs, "aubc": by[env.metric], "aubc_by_metric": by,
                    "n_top_up": int(sum(x.get("top_up", {}).get("n", 0) for x in recs))}
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
