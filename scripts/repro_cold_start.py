"""Cold-start reproduction: thesis (002) Table 4.1 and Table 4.2 analogs on encoded workspaces.

For each workspace (Tux Paint, synthetic-video): MMSSL with and without prototypes
(modality gap, uni/cross mean cosines; 3 pre-training seeds), then every cold-start
strategy picks 1, 2 and 5 labels per class (as totals) from the non-test items with no
labels, for 5 selection seeds; the **default learner** (``make_learner()``, what
``mmal train`` fits) trained on the picks alone is scored on the test split; each strategy
is compared with random by a paired t-test over the seeds.

The picks do not depend on the learner, so the run has two stages that can run apart:
``--stage picks`` (MMSSL + selections -> ``OUT.picks.json``) and ``--stage evaluate``
(fit the learner on the stored picks -> ``OUT.json`` and ``OUT.table.md``); ``--stage
all`` (default) does both. The workspaces are only read.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/repro_cold_start.py --stage picks \
        --ws tuxpaint=/work/scratch/ws_tux --out runs/tux
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/repro_cold_start.py --stage evaluate \
        --ws tuxpaint=/work/scratch/ws_tux --out runs/tux
    PYTHONPATH=src python scripts/repro_cold_start.py --merge runs/tux.json runs/sv.json \
        --out docs/results/cold_start
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

#: what the evaluation fits: the default learner with its default parameters, as `mmal train` does
LEARNER_NAME = None  # None = mmal.learners.DEFAULT_LEARNER
LEARNER_PARAMS: dict = {}


def learner_description() -> str:
    from mmal.learners import DEFAULT_LEARNER

    return (f"make_learner({LEARNER_NAME or ''}) = '{LEARNER_NAME or DEFAULT_LEARNER}' with default parameters "
            f"{LEARNER_PARAMS or '{}'}, n_classes = the workspace's class count, seed = the selection seed; "
            "every pick trains (no validation split), as `mmal train` does for this learner")


def evaluate_picks(features: dict, labels: np.ndarray, picks: np.ndarray, test_idx: np.ndarray, seed: int,
                   n_classes: int) -> dict:
    """Test accuracy of the default learner trained on ``picks`` alone.

    ``features`` are the workspace's :class:`SequenceFeatures` (the learner reads the pooled
    text/image vectors and every audio frame). ``n_classes`` is the workspace's class count,
    so a pick that misses classes still gives a C-way classifier (a class with no pick is
    never predicted). Returns ``{"acc": float, "fit_seconds": float, "classes_in_picks": int}``
    plus ``"fit_info"``: what the learner reports about its own choices (if anything).
    """
    from mmal.learners import make_learner

    picks = np.asarray(picks, np.int64)
    learner = make_learner(LEARNER_NAME, n_classes=int(n_classes), seed=int(seed), **LEARNER_PARAMS)
    t0 = time.perf_counter()
    history = learner.fit(features, labels, picks)
    fit_s = time.perf_counter() - t0
    pred = learner.predict_proba(features, test_idx).argmax(1)
    info = {k: v for k, v in (history or {}).items() if k in ("head_scale", "head_scale_cv", "cv") and _jsonable(v)}
    return {"acc": float(np.mean(pred == labels[test_idx])), "fit_seconds": float(fit_s),
            "classes_in_picks": int(len(np.unique(labels[picks]))), "fit_info": info}


def _jsonable(v) -> bool:
    try:
        json.dumps(v, default=float)
        return True
    except (TypeError, ValueError):
        return False


# (row name, strategy, params, feature set); feature set: "proto" = MMSSL w/ prototypes,
# "noproto" = MMSSL w/o prototypes, "raw" = frozen tower features
def variants() -> list:
    out = [("random", "random", {}, "proto")]
    for fs in ("proto", "noproto", "raw"):
        out += [(f"coreset [{fs}]", "coreset", {}, fs),
                (f"kmeans [{fs}]", "kmeans", {}, fs),
                (f"typiclust [{fs}]", "typiclust", {}, fs),
                (f"probcover [{fs}]", "probcover", {}, fs),
                (f"activeft [{fs}]", "activeft", {}, fs),
                (f"activeft-official [{fs}]", "activeft", {"official": True}, fs)]
        if fs != "raw":
            out += [(f"mm-activeft [{fs}]", "mm-activeft", {}, fs),
                    (f"mmcsal [{fs}]", "mmcsal", {"align": "printed"}, fs),  # as printed (no longer the default)
                    (f"mmcsal-corrected [{fs}]", "mmcsal", {"align": "corrected"}, fs)]
    return out


def load(ws_dir, sequences: bool = False):
    """``(ids, labels, split, features, n_classes)``; features pooled ``[N, D]`` arrays, or the
    :class:`SequenceFeatures` themselves with ``sequences=True`` (what the learner reads)."""
    from mmal.features.pipeline import load_features
    from mmal.workspace import Workspace

    ws = Workspace(ws_dir)
    t = ws.items
    ids = np.asarray(t.column("id").to_pylist())
    labels = np.asarray([-1 if v is None else int(v) for v in t.column("label").to_pylist()])
    split = np.asarray(t.column("split").to_pylist())
    sf = load_features(ws, ids.tolist())
    feats = sf if sequences else {m: np.asarray(f.pooled, np.float32) for m, f in sf.items()}
    return ids, labels, split, feats, ws.n_classes


def ids_digest(ids) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def _scalar_info(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        if isinstance(v, (bool, int, float, str, np.integer, np.floating)):
            out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def run_picks(name, ws_dir, seeds, per_class, pre_seeds, log, only=None, partial=None) -> dict:
    """MMSSL (gap table) and every strategy's picks: row indices into the workspace's items."""
    from mmal.loop.pretrain import pretrain_features
    from mmal.models.mmssl import MMSSLConfig, paired_cosine
    from mmal.select import select
    from mmal.select.coldstart import cold_pool

    ids, labels, split, feats, n_classes = load(ws_dir)
    cand = np.flatnonzero(split != "test")
    test = np.flatnonzero(split == "test")
    res = {"n_items": int(len(ids)), "ids_digest": ids_digest(ids), "n_candidates": int(len(cand)),
           "n_test": int(len(test)), "n_classes": int(n_classes), "modalities": sorted(feats), "gap": {},
           "mmssl_seconds": {}, "seeds": list(seeds)}
    pre = {}
    for proto in (True, False):
        key = "proto" if proto else "noproto"
        rows = []
        for ps in pre_seeds:
            p = pretrain_features(feats, cand, MMSSLConfig(prototypes=proto, seed=ps))
            rows.append(p["metrics"])
            res["mmssl_seconds"].setdefault(key, []).append(p["seconds"])
            if ps == pre_seeds[0]:
                pre[key] = p["embeddings"]
            log(f"[{name}] MMSSL {key} seed {ps}: gap {p['metrics']['gap_mean']:.4f} ({p['seconds']:.0f} s)")
        res["gap"][key] = rows
    pools = {"proto": cold_pool(ids, feats, pre["proto"], n_classes=n_classes, split=split),
             "noproto": cold_pool(ids, feats, pre["noproto"], n_classes=n_classes, split=split),
             "raw": cold_pool(ids, feats, None, n_classes=n_classes, split=split)}
    pos = {str(i): j for j, i in enumerate(ids)}
    res["budgets"] = {}
    for k in per_class:
        budget = int(k * n_classes)
        table = {}
        for row, strat, params, fs in variants():
            if only and row not in only and row != "random":
                continue
            d = {"strategy": strat, "params": params, "features": fs, "picks": [], "seconds": [], "cross_cosine": [],
                 "classes_hit": [], "picks_at_init": [], "info": []}
            for s in seeds:
                t0 = time.perf_counter()
                sel = select(strat, pools[fs], budget, seed=s, **params)
                d["seconds"].append(time.perf_counter() - t0)
                picks = np.asarray([pos[str(i)] for i in sel.ids], np.int64)
                if len(picks) != budget or len(set(picks.tolist())) != budget or (split[picks] == "test").any():
                    raise RuntimeError(f"{name} {row} B={budget} seed {s}: {len(picks)} picks, "
                                       f"{len(set(picks.tolist()))} unique, test items among them: "
                                       f"{int((split[picks] == 'test').sum())}")
                d["picks"].append(picks.tolist())
                # the picks' cross-modal cosine is always measured in the w/-prototype MMSSL space
                d["cross_cosine"].append(paired_cosine(pre["proto"], picks))
                d["classes_hit"].append(int(len(np.unique(labels[picks]))))
                d["picks_at_init"].append(sel.info.get("picks_at_init", math.nan) / budget)
                d["info"].append(_scalar_info(sel.info))
            table[row] = d
        res["budgets"][str(budget)] = {"per_class": k, "table": table}
        if partial is not None:
            partial(res)
        log(f"[{name}] picks B = {budget}: done ({sum(sum(d['seconds']) for d in table.values()):.0f} s)")
    res["cross_cosine_candidates"] = paired_cosine(pre["proto"], cand)
    return res


def run_evaluate(name, ws_dir, picked: dict, log, partial=None, max_seeds: int | None = None) -> dict:
    """Fit the default learner on every stored pick set; adds accuracies and paired tests.

    Identical pick sets under the same seed (e.g. MMCSAL as printed = random) are fitted once."""
    from scipy.stats import ttest_rel

    ids, labels, split, feats, n_classes = load(ws_dir, sequences=True)
    if ids_digest(ids) != picked["ids_digest"]:
        raise SystemExit(f"{ws_dir}: its items differ from those the picks were made on ({name})")
    test = np.flatnonzero(split == "test")
    if (labels[test] < 0).any() or (labels[split != "test"] < 0).any():
        raise SystemExit(f"{ws_dir}: every item needs its gold label in items.parquet for this experiment")
    res = json.loads(json.dumps(picked))
    if max_seeds:  # a quick check on the first seeds only
        res["seeds"] = res["seeds"][:max_seeds]
        for bd in res["budgets"].values():
            for d in bd["table"].values():
                for k in ("picks", "seconds", "cross_cosine", "classes_hit", "picks_at_init", "info"):
                    d[k] = d[k][:max_seeds]
    res["learner"] = learner_description()
    cache: dict = {}
    t_all = time.perf_counter()
    for b, bd in res["budgets"].items():
        table = bd["table"]
        for row, d in table.items():
            d["acc"], d["fit_seconds"], d["fit_info"] = [], [], []
            for s, picks in zip(res["seeds"], d["picks"]):
                key = (int(s), tuple(sorted(picks)))
                if key not in cache:
                    cache[key] = evaluate_picks(feats, labels, np.asarray(picks), test, s, n_classes)
                r = cache[key]
                d["acc"].append(r["acc"])
                d["fit_seconds"].append(r["fit_seconds"])
                d["fit_info"].append(r["fit_info"])
            d["mean"], d["std"] = float(np.mean(d["acc"])), float(np.std(d["acc"]))
        base = table["random"]["acc"]
        for row, d in table.items():
            if row == "random":
                d["p_vs_random"] = None
                continue
            diff = np.asarray(d["acc"]) - np.asarray(base)
            d["diff_vs_random"] = float(diff.mean())
            d["p_vs_random"] = None if np.allclose(diff, diff[0]) else float(ttest_rel(d["acc"], base).pvalue)
        if partial is not None:
            partial(res)
        log(f"[{name}] B = {b}: " + ", ".join(f"{r} {d['mean']:.3f}" for r, d in table.items()))
    res["evaluate_seconds"] = time.perf_counter() - t_all
    res["n_fits"] = len(cache)
    return res


def _cell(d: dict, base_mean: float) -> str:
    cell = f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"
    p = d.get("p_vs_random")
    if p is not None:
        arrow = "↑" if d["mean"] > base_mean else "↓"
        cell += f" {'*' + arrow if p < 0.05 else ''}({p:.3f})" if p < 0.1 else f" ({p:.2f})"
    elif "diff_vs_random" in d:
        cell += " (=)" if abs(d["diff_vs_random"]) < 1e-12 else f" (const. {100 * d['diff_vs_random']:+.1f})"
    return cell


def markdown(results: dict) -> str:
    out = [f"Learner: {results.get('learner', '?')}.\n"]
    for name, r in results["datasets"].items():
        out.append(f"### {name}: test accuracy (%) of the picks alone (mean ± std over {len(r['seeds'])} seeds)\n")
        out.append(f"{r['n_candidates']} unlabeled candidates, {r['n_test']} test items, {r['n_classes']} classes, "
                   f"modalities {', '.join(r['modalities'])}. `*` = paired t-test vs random p < 0.05 "
                   "(↑ better, ↓ worse); p in brackets; (=) identical to random on every seed.\n")
        budgets = list(r["budgets"])
        out.append("| strategy | " + " | ".join(f"B = {b} ({r['budgets'][b]['per_class']}/class)" for b in budgets) + " |")
        out.append("|---" * (len(budgets) + 1) + "|")
        rows = list(r["budgets"][budgets[0]]["table"])
        for row in rows:
            cells = [_cell(r["budgets"][b]["table"][row], r["budgets"][b]["table"]["random"]["mean"]) for b in budgets]
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out.append("")
        out.append(f"Classes hit by the picks (mean over seeds), {name}:\n")
        out.append("| strategy | " + " | ".join(f"B = {b}" for b in budgets) + " |")
        out.append("|---" * (len(budgets) + 1) + "|")
        for row in rows:
            out.append(f"| {row} | " + " | ".join(f"{np.mean(r['budgets'][b]['table'][row]['classes_hit']):.1f}"
                                                  for b in budgets) + " |")
        out.append("")
    out.append("### Modality gap (Table 4.1 analog; MMSSL embeddings of the candidates, mean ± std over "
               "n pre-training seeds)\n")
    out.append("| dataset | prototypes | n | Δgap (mean of pairs) | S_uni per modality | S_cross (mean of pairs) | "
               "Δgap per pair |")
    out.append("|---|---|---|---|---|---|---|")
    for name, r in results["datasets"].items():
        for key, label in (("noproto", "w/o"), ("proto", "w/")):
            rows = r["gap"][key]
            g = [x["gap_mean"] for x in rows]
            sc = [x["S_cross_mean"] for x in rows]
            mods = sorted(rows[0]["S_uni"])
            su = ", ".join(f"{m} {np.mean([x['S_uni'][m] for x in rows]):.4f}" for m in mods)
            pairs = ", ".join(f"{p.replace('|', '–')} {np.mean([x['gap'][p] for x in rows]):.4f}" for p in sorted(rows[0]["gap"]))
            out.append(f"| {name} | {label} | {len(rows)} | {np.mean(g):.4f} ± {np.std(g):.4f} | {su} | "
                       f"{np.mean(sc):.4f} ± {np.std(sc):.4f} | {pairs} |")
    out.append("")
    out.append("### Cross-modal cosine of the picks (MMSSL w/ prototypes space; mean over seeds and budgets)\n")
    out.append("| strategy | " + " | ".join(results["datasets"]) + " |")
    out.append("|---" * (len(results["datasets"]) + 1) + "|")
    out.append("| all candidates | " + " | ".join(f"{r['cross_cosine_candidates']:.4f}" for r in results["datasets"].values()) + " |")
    all_rows = []
    for r in results["datasets"].values():
        for row in next(iter(r["budgets"].values()))["table"]:
            if row not in all_rows:
                all_rows.append(row)
    for row in all_rows:
        vals = []
        for r in results["datasets"].values():
            v = [np.mean(b["table"][row]["cross_cosine"]) for b in r["budgets"].values() if row in b["table"]]
            vals.append(f"{np.mean(v):.4f}" if v else "–")
        out.append(f"| {row} | " + " | ".join(vals) + " |")
    out.append("")
    out.append("### ActiveFT family: share of picks that are their θ's random starting sample\n")
    out.append("| dataset | B | strategy | picks at init | classes hit |")
    out.append("|---|---|---|---|---|")
    for name, r in results["datasets"].items():
        for b, bd in r["budgets"].items():
            for row, d in bd["table"].items():
                v = [x for x in d["picks_at_init"] if x is not None and np.isfinite(x)]
                if v:
                    out.append(f"| {name} | {b} | {row} | {np.mean(v):.2f} | {np.mean(d['classes_hit']):.1f} |")
    out.append("")
    out.append("### Fit time of the learner (median s per fit) and run time\n")
    for name, r in results["datasets"].items():
        fs = [x for bd in r["budgets"].values() for d in bd["table"].values() for x in d.get("fit_seconds", [])]
        if fs:
            out.append(f"- {name}: {r.get('n_fits', '?')} distinct fits, median {np.median(fs):.2f} s, "
                       f"evaluation {r.get('evaluate_seconds', float('nan')):.0f} s; MMSSL "
                       + ", ".join(f"{k} {np.mean(v):.0f} s" for k, v in r["mmssl_seconds"].items()))
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ws", action="append", default=[], help="NAME=WORKSPACE_DIR (encoded; only read)")
    ap.add_argument("--stage", choices=("all", "picks", "evaluate"), default="all")
    ap.add_argument("--merge", nargs="+", help="combine the evaluated JSON results of earlier runs into --out")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pretrain-seeds", type=int, default=3)
    ap.add_argument("--per-class", default="1,2,5")
    ap.add_argument("--out", default="docs/results/cold_start")
    ap.add_argument("--variants", default="", help="comma list of table rows to run (default: all)")
    ap.add_argument("--drop-picks", action="store_true", help="with --merge: leave the picked rows out of the output")
    ap.add_argument("--eval-seeds", type=int, default=None, help="evaluate only the first N seeds of the picks")
    a = ap.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.merge:
        parts = [json.loads(Path(p).read_text()) for p in a.merge]
        results = {k: v for k, v in parts[0].items() if k != "datasets"}
        results["datasets"] = {k: v for part in parts for k, v in part["datasets"].items()}
        results["seconds"] = sum(part.get("seconds", 0.0) for part in parts)
        if a.drop_picks:  # the rows are reproducible from the seeds, the CV losses from the fits: keep the file small
            for r in results["datasets"].values():
                for bd in r["budgets"].values():
                    for d in bd["table"].values():
                        d.pop("picks", None)
                        d["fit_info"] = [{k: ({"value": v.get("value"), "source": v.get("source")} if isinstance(v, dict) else v)
                                          for k, v in fi.items()} for fi in d.get("fit_info", [])]
    else:
        if not a.ws:
            ap.error("give --ws NAME=DIR (or --merge)")
        seeds = list(range(a.seeds))
        picks_path = out.with_suffix(".picks.json")
        only = set(filter(None, a.variants.split(","))) or None
        if a.stage in ("all", "picks"):
            picked = {"seeds": seeds, "pretrain_seeds": list(range(a.pretrain_seeds)),
                      "per_class": [int(k) for k in a.per_class.split(",")], "datasets": {}}
            for spec in a.ws:
                name, _, d = spec.partition("=")

                def partial(res, name=name):  # write what is done after every budget
                    picked["datasets"][name] = res
                    out.with_suffix(".picks.partial.json").write_text(json.dumps(picked, indent=1, default=float))

                picked["datasets"][name] = run_picks(name, d, seeds, picked["per_class"], picked["pretrain_seeds"],
                                                     log, only, partial)
            picked["picks_seconds"] = time.time() - t0
            picks_path.write_text(json.dumps(picked, indent=1, default=float))
            log(f"wrote {picks_path}")
            if a.stage == "picks":
                return
        picked = json.loads(picks_path.read_text())
        results = {k: v for k, v in picked.items() if k != "datasets"}
        results["learner"] = learner_description()
        results["datasets"] = {}
        for spec in a.ws:
            name, _, d = spec.partition("=")
            if name not in picked["datasets"]:
                raise SystemExit(f"{picks_path}: no picks for dataset '{name}'; run --stage picks first")

            def partial(res, name=name):
                results["datasets"][name] = res
                out.with_suffix(".partial.json").write_text(json.dumps(results, indent=1, default=float))

            results["datasets"][name] = run_evaluate(name, d, picked["datasets"][name], log, partial, a.eval_seeds)
        results["seconds"] = time.time() - t0 + picked.get("picks_seconds", 0.0)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    out.with_suffix(".table.md").write_text(markdown(results))
    log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.table.md')} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
