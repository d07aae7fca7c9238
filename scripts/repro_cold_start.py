"""Cold-start reproduction: thesis (002) Table 4.1 and Table 4.2 analogs on encoded workspaces.

For each workspace (Tux Paint, synthetic-video): MMSSL with and without prototypes
(modality gap, uni/cross mean cosines; 3 pre-training seeds), then every cold-start
strategy picks 1, 2 and 5 labels per class (as totals) from the non-test items with no
labels, for 5 selection seeds; a classifier trained on the picks alone is scored on the
test split; each strategy is compared with random by a paired t-test over the seeds.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/repro_cold_start.py \
        --ws tuxpaint=/work/scratch/cold/tux --ws synthetic-video=/work/scratch/cold/sv \
        --out docs/results/cold_start
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def evaluate_picks(features: dict, labels: np.ndarray, picks: np.ndarray, test_idx: np.ndarray, seed: int) -> float:
    """Test accuracy of the evaluation learner trained on ``picks`` alone.

    The one place to swap the learner. Now: scikit-learn ``LogisticRegression(C=10,
    max_iter=2000)`` on the concatenation of the L2-normalised pooled tower features (the
    default ``late-fusion`` learner had not landed). A single-class pick predicts that class.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
                        for _, f in sorted(features.items())], axis=1)
    y = labels[picks]
    if len(np.unique(y)) == 1:
        return float(np.mean(labels[test_idx] == y[0]))
    clf = LogisticRegression(C=10, max_iter=2000, random_state=seed)
    clf.fit(x[picks], y)
    return float(np.mean(clf.predict(x[test_idx]) == labels[test_idx]))


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
                    (f"mmcsal [{fs}]", "mmcsal", {}, fs),
                    (f"mmcsal-corrected [{fs}]", "mmcsal", {"align": "corrected"}, fs)]
    return out


def load(ws_dir):
    from mmal.features.pipeline import load_features
    from mmal.workspace import Workspace

    ws = Workspace(ws_dir)
    t = ws.items
    ids = np.asarray(t.column("id").to_pylist())
    labels = np.asarray([int(v) for v in t.column("label").to_pylist()])
    split = np.asarray(t.column("split").to_pylist())
    feats = {m: np.asarray(sf.pooled, np.float32) for m, sf in load_features(ws, ids.tolist()).items()}
    return ids, labels, split, feats, ws.n_classes


def run_dataset(name, ws_dir, seeds, per_class, pre_seeds, log, only=None, partial=None):
    from scipy.stats import ttest_rel

    from mmal.loop.pretrain import pretrain_features
    from mmal.models.mmssl import MMSSLConfig
    from mmal.select import select
    from mmal.select.coldstart import cold_pool

    ids, labels, split, feats, n_classes = load(ws_dir)
    cand = np.flatnonzero(split != "test")
    test = np.flatnonzero(split == "test")
    res = {"n_items": int(len(ids)), "n_candidates": int(len(cand)), "n_test": int(len(test)),
           "n_classes": int(n_classes), "modalities": sorted(feats), "gap": {}, "mmssl_seconds": {}}
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
    # picks' cross-modal cosine is always measured in the w/-prototype MMSSL space
    from mmal.models.mmssl import paired_cosine

    res["budgets"] = {}
    for k in per_class:
        budget = int(k * n_classes)
        table = {}
        for row, strat, params, fs in variants():
            if only and row not in only and row != "random":
                continue
            accs, cos, secs, hit, at_init = [], [], [], [], []
            for s in seeds:
                t0 = time.perf_counter()
                sel = select(strat, pools[fs], budget, seed=s, **params)
                secs.append(time.perf_counter() - t0)
                picks = np.searchsorted(ids, sel.ids) if np.all(ids[:-1] <= ids[1:]) else \
                    np.asarray([np.flatnonzero(ids == i)[0] for i in sel.ids])
                assert len(picks) == budget and len(set(picks.tolist())) == budget
                accs.append(evaluate_picks(feats, labels, picks, test, s))
                cos.append(paired_cosine(pre["proto"], picks))
                hit.append(len(np.unique(labels[picks])))
                at_init.append(sel.info.get("picks_at_init", np.nan) / budget)
            table[row] = {"acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                          "cross_cosine": float(np.mean(cos)), "seconds": float(np.mean(secs)),
                          "classes_hit": float(np.mean(hit)), "picks_at_init": float(np.mean(at_init))}
        base = table["random"]["acc"]
        for row, d in table.items():
            if row == "random":
                d["p_vs_random"] = None
                continue
            diff = np.asarray(d["acc"]) - np.asarray(base)
            d["p_vs_random"] = None if np.allclose(diff, 0) else float(ttest_rel(d["acc"], base).pvalue)
        res["budgets"][str(budget)] = {"per_class": k, "table": table}
        if partial is not None:
            partial(res)
        log(f"[{name}] budget {budget}: " + ", ".join(f"{r} {d['mean']:.3f}" for r, d in table.items()))
    res["cross_cosine_candidates"] = paired_cosine(pre["proto"], cand)
    return res


def markdown(results: dict) -> str:
    out = []
    for name, r in results["datasets"].items():
        out.append(f"### {name}: test accuracy of the picks alone (mean ± std over {len(results['seeds'])} seeds)\n")
        out.append(f"{r['n_candidates']} unlabeled candidates, {r['n_test']} test items, {r['n_classes']} classes, "
                   f"modalities {', '.join(r['modalities'])}. `*` = paired t-test vs random p < 0.05 "
                   "(↑ better, ↓ worse); p in brackets.\n")
        budgets = list(r["budgets"])
        out.append("| strategy | " + " | ".join(f"B = {b} ({r['budgets'][b]['per_class']}/class)" for b in budgets) + " |")
        out.append("|---" * (len(budgets) + 1) + "|")
        rows = list(r["budgets"][budgets[0]]["table"])
        for row in rows:
            cells = []
            for b in budgets:
                d = r["budgets"][b]["table"][row]
                cell = f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"
                p = d.get("p_vs_random")
                if p is not None:
                    arrow = "↑" if d["mean"] > r["budgets"][b]["table"]["random"]["mean"] else "↓"
                    cell += f" {'*' + arrow if p < 0.05 else ''}({p:.2f})"
                cells.append(cell)
            out.append(f"| {row} | " + " | ".join(cells) + " |")
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
    first = next(iter(results["datasets"].values()))
    rows = list(next(iter(first["budgets"].values()))["table"])
    out.append("| all candidates | " + " | ".join(f"{r['cross_cosine_candidates']:.4f}" for r in results["datasets"].values()) + " |")
    for row in rows:
        vals = []
        for r in results["datasets"].values():
            vals.append(f"{np.mean([b['table'][row]['cross_cosine'] for b in r['budgets'].values()]):.4f}")
        out.append(f"| {row} | " + " | ".join(vals) + " |")
    out.append("")
    out.append("### ActiveFT family: share of picks that are their θ's random starting sample; classes hit\n")
    out.append("| dataset | B | strategy | picks at init | classes hit |")
    out.append("|---|---|---|---|---|")
    for name, r in results["datasets"].items():
        for b, bd in r["budgets"].items():
            for row, d in bd["table"].items():
                if d.get("picks_at_init") is not None and np.isfinite(d["picks_at_init"]):
                    out.append(f"| {name} | {b} | {row} | {d['picks_at_init']:.2f} | {d['classes_hit']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ws", action="append", default=[], help="NAME=WORKSPACE_DIR (encoded)")
    ap.add_argument("--merge", nargs="+", help="combine the JSON results of earlier runs into --out")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pretrain-seeds", type=int, default=3)
    ap.add_argument("--per-class", default="1,2,5")
    ap.add_argument("--out", default="docs/results/cold_start")
    ap.add_argument("--variants", default="", help="comma list of table rows to run (default: all)")
    a = ap.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    seeds = list(range(a.seeds))
    results = {"seeds": seeds, "pretrain_seeds": list(range(a.pretrain_seeds)),
               "per_class": [int(k) for k in a.per_class.split(",")],
               "learner": "LogisticRegression(C=10, max_iter=2000) on concatenated L2-normalised pooled tower features",
               "datasets": {}}
    t0 = time.time()
    if a.merge:
        parts = [json.loads(Path(p).read_text()) for p in a.merge]
        results = dict(parts[0])
        results["datasets"] = {k: v for part in parts for k, v in part["datasets"].items()}
        results["seconds"] = sum(part["seconds"] for part in parts)
        a.ws = []
    for spec in a.ws:
        name, _, d = spec.partition("=")
        only = set(filter(None, a.variants.split(","))) or None

        def partial(res, name=name):  # write what is done after every budget
            results["datasets"][name] = res
            Path(a.out).with_suffix(".partial.json").write_text(json.dumps(results, indent=1, default=float))

        results["datasets"][name] = run_dataset(name, d, seeds, results["per_class"], results["pretrain_seeds"], log,
                                                only, partial)
    if not a.merge:
        results["seconds"] = time.time() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    out.with_suffix(".table.md").write_text(markdown(results))
    log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.table.md')} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
