"""Learner bench: the default against the scikit-learn pipelines a user would pick instead.

    .venv/bin/python bench/learner.py                       # default vs scikit-learn -> bench/results/learner.json
    .venv/bin/python bench/learner.py --variants            # mmal's learner variants -> learner_variants.json
    .venv/bin/python bench/learner.py --datasets tuxpaint --seeds 0,1
    .venv/bin/python bench/learner.py --timing              # fit seconds (--timing-budgets 200,2000) -> learner_timing.json
    .venv/bin/python bench/learner.py --learners late-fusion/vlmae --merge   # re-run some, keep the others' results

Default run (``versus_sklearn``): per dataset, 5 seeds, budgets 50/100/200/400 (and 800
for binary sets), the ``auto`` learner and the previous default ``late-fusion`` against
scikit-learn ``LogisticRegression`` with ``C = 10`` and with ``C`` chosen by
``LogisticRegressionCV`` (3 stratified folds, log-loss), each unweighted and
``class_weight="balanced"``, on the L2-normalised pooled tower embeddings (computed here,
not through mmal). Metrics computed here with scikit-learn: binary AUC, average precision
and R@P80 of the positive class; multiclass macro-F1 and accuracy.

Datasets: Tux Paint (image + text + audio, 950 items), synthetic-video (800 clips),
Oxygen icons (image + icon name, about 2,000 items; data the defaults were not developed
on) and the rare-positive binary variants ``tuxpaint-binary`` and ``oxygen-icons-binary``
(one class against the rest at 5 % positives). Each is built, validated and encoded once
into ``bench/scratch/`` (reused on a re-run).

For every (dataset, seed, budget) one random labeled set is drawn from the non-test items
and every learner is fitted on exactly that set, in a rotating order (A, B, C, ...;
B, C, ..., A) inside this one process, so timings share the same conditions; the load
average is recorded before and after. Peak RSS is measured per learner in a child process
that loads the features and fits once at the largest budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py would shadow the standard library's `select` module (imported by subprocess)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMAL_PROGRESS", "0")

#: learners compared: name -> (learner, params)
LEARNERS = {
    "linear": ("linear", {}),
    "late-fusion/none": ("late-fusion", {"model": {"fusion": "none"}}),
    "late-fusion/avgpool": ("late-fusion", {"model": {"fusion": "avgpool"}}),
    "late-fusion/vlmae": ("late-fusion", {"model": {"fusion": "vlmae"}}),
    # the default before the audio block's scale was cross-validated (fixed head_scale 0.25)
    "late-fusion/vlmae-0.25": ("late-fusion", {"model": {"fusion": "vlmae", "head_scale": 0.25}}),
    "fusion": ("fusion", {"model": {"d_model": 64, "n_layers": 1, "n_heads": 2, "mlp_hidden": 128},
                          "train": {"epochs": 20, "patience": 3}}),
}
DEFAULT = "late-fusion/avgpool"  # what `make_learner()` builds with the workspace defaults (see README)


def workspace(name: str, scratch: Path):
    from mmal.data.datasets import build
    from mmal.engine import encode_workspace
    from mmal.workspace import Workspace, init_workspace

    data = scratch / f"data-{name}"
    items = data / "items.parquet"
    if not items.exists():
        build(name, data, seed=0, progress=False, **({"n": 800} if name == "synthetic-video" else {}))
    wsdir = scratch / f"ws-{name}"
    if not (wsdir / "mmal.toml").exists():
        init_workspace(wsdir, items, force=True)
    encode_workspace(wsdir, progress=False)
    return Workspace(wsdir)


def learner_params(key: str, dataset_has_audio: bool):
    name, params = LEARNERS[key]
    params = json.loads(json.dumps(params))
    if name == "fusion" and not dataset_has_audio:
        params["model"]["fusion"] = "none"
    return name, params


def dataset(ds: str):
    """``(features, gold labels, test rows, candidate rows)`` of a bench dataset (built and encoded once).

    A ``-binary`` variant is derived from its base dataset's items (the builder's default
    positive class and rate) and reads the base workspace's features: nothing is encoded twice.
    """
    import pyarrow.parquet as pq

    from mmal.data.datasets import DATASETS
    from mmal.data.datasets.rare_positive import rare_positive_variant
    from mmal.features.pipeline import load_features

    scratch = ROOT / "bench" / "scratch" / "learner"
    if ds.endswith("-binary"):
        base = workspace(ds[: -len("-binary")], scratch)
        opts = DATASETS[ds].options()
        items = scratch / f"data-{ds}" / "items.parquet"
        if not items.exists():
            rare_positive_variant(scratch / f"data-{ds[: -len('-binary')]}" / "items.parquet", items.parent,
                                  positive=opts["positive"], pos_rate=opts["pos_rate"], seed=0)
        t = pq.read_table(items)
        ids = t.column("id").to_pylist()
        gold = np.array(t.column("label").to_pylist())
        split = np.array(t.column("split").to_pylist())
        return load_features(base, ids=ids), gold, np.flatnonzero(split == "test"), np.flatnonzero(split != "test")
    ws = workspace(ds, scratch)
    t = ws.items
    gold = np.array(t.column("label").to_pylist())
    split = np.array(t.column("split").to_pylist())
    return load_features(ws), gold, np.flatnonzero(split == "test"), np.flatnonzero(split != "test")


def run(args) -> dict:
    import torch

    from mmal.learners import make_learner

    torch.set_num_threads(args.threads)
    out = {"config": {"budgets": args.budgets, "seeds": args.seeds, "threads": args.threads, "learners": LEARNERS,
                      "default": DEFAULT, "load_avg_start": os.getloadavg()}, "datasets": {}}
    keys = args.learners or list(LEARNERS)
    for ds in args.datasets:
        feats, gold, test, cand = dataset(ds)
        res = {k: {str(b): {"accuracy": [], "fit_seconds": []} for b in args.budgets} for k in keys}
        for si, seed in enumerate(args.seeds):
            for b in args.budgets:
                lab = np.random.default_rng(seed).choice(cand, b, replace=False)
                order = keys[si % len(keys):] + keys[: si % len(keys)]  # rotate who goes first
                for k in order:
                    name, params = learner_params(k, "audio" in feats)
                    L = make_learner(name, seed=seed, **params)
                    t0 = time.perf_counter()
                    L.fit(feats, gold, lab)
                    sec = time.perf_counter() - t0
                    acc = float((L.predict_proba(feats, test).argmax(1) == gold[test]).mean())
                    res[k][str(b)]["accuracy"].append(acc)
                    res[k][str(b)]["fit_seconds"].append(sec)
                    print(f"{ds} seed {seed} n={b} {k:<22} acc {acc:.3f}  fit {sec:.2f} s", flush=True)
        for k in keys:
            for b in args.budgets:
                r = res[k][str(b)]
                r["mean"], r["std"] = float(np.mean(r["accuracy"])), float(np.std(r["accuracy"]))
                r["fit_seconds_median"] = float(np.median(r["fit_seconds"]))
        out["datasets"][ds] = {"n_items": int(len(gold)), "n_test": int(len(test)), "n_candidates": int(len(cand)),
                               "modalities": sorted(feats), "results": res,
                               "targets": targets(res, args.budgets) if {DEFAULT, "linear", "late-fusion/vlmae"} <= set(res) else None}
    out["config"]["load_avg_end"] = os.getloadavg()
    out["peak_rss_gb"] = peak_rss(args, keys)
    return out


def merge(old: dict, new: dict, budgets) -> dict:
    """``old`` results with the learners of ``new`` replaced (same seeds, budgets, labeled sets).

    Each learner keeps a ``provenance`` entry: the load averages of the run that measured it.
    Accuracies do not depend on load, and every run draws the same labeled sets
    (``default_rng(seed).choice``), so learners measured in different runs stay paired.
    """
    if old.get("config", {}).get("seeds") != new["config"]["seeds"] or old["config"].get("budgets") != new["config"]["budgets"]:
        raise SystemExit("--merge: the existing file has other seeds or budgets; re-run everything instead")
    out = json.loads(json.dumps(old))
    prov_old = out.setdefault("provenance", {})
    run_info = {"load_avg_start": new["config"]["load_avg_start"], "load_avg_end": new["config"]["load_avg_end"],
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for ds, d in new["datasets"].items():
        tgt = out["datasets"].setdefault(ds, {k: v for k, v in d.items() if k != "results"} | {"results": {}})
        for k, r in d["results"].items():
            tgt["results"][k] = r
            prov_old.setdefault(ds, {})[k] = run_info
        tgt["targets"] = targets(tgt["results"], budgets)
        out.setdefault("peak_rss_gb", {}).setdefault(ds, {}).update(new["peak_rss_gb"].get(ds, {}))
    out["config"]["learners"] = LEARNERS
    return out


def targets(res: dict, budgets) -> dict:
    """The issue's targets, checked on these numbers (paired by seed against `linear`)."""
    from scipy.stats import ttest_rel

    d, lin = res[DEFAULT], res["linear"]
    means = [d[str(b)]["mean"] for b in budgets]
    out = {"default_ge_linear": {str(b): d[str(b)]["mean"] >= lin[str(b)]["mean"] for b in budgets},
           "vlmae_ge_linear_200_400": {str(b): res["late-fusion/vlmae"][str(b)]["mean"] >= lin[str(b)]["mean"]
                                       for b in budgets if b in (200, 400)},
           "default_std_200": d["200"]["std"] if "200" in d else None,
           "largest_step_drop": float(max([0.0] + [means[i] - means[i + 1] for i in range(len(means) - 1)])),
           "default_fit_seconds_200": d["200"]["fit_seconds_median"] if "200" in d else None,
           "paired_t_vs_linear": {}}
    for b in budgets:
        a, c = np.array(d[str(b)]["accuracy"]), np.array(lin[str(b)]["accuracy"])
        if len(a) > 1 and np.any(a != c):
            t = ttest_rel(a, c)
            out["paired_t_vs_linear"][str(b)] = {"mean_diff": float((a - c).mean()), "t": float(t.statistic), "p": float(t.pvalue)}
    return out


def _rss_child(ds, key, budget, q):
    from mmal.learners import make_learner

    feats, gold, _, cand = dataset(ds)
    name, params = learner_params(key, "audio" in feats)
    L = make_learner(name, seed=0, **params)
    L.fit(feats, gold, np.random.default_rng(0).choice(cand, budget, replace=False))
    L.score(feats)
    q.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2)


def peak_rss(args, keys=None) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = {}
    for ds in args.datasets:
        out[ds] = {}
        for k in keys or LEARNERS:
            q = ctx.Queue()
            p = ctx.Process(target=_rss_child, args=(ds, k, max(args.budgets), q))
            p.start()
            p.join()
            out[ds][k] = round(q.get(), 3) if p.exitcode == 0 else None
    return out


SK_BASELINES = ("lr-c10", "lr-c10-balanced", "lr-cv", "lr-cv-balanced")
CV_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def unit_pooled(feats, rows) -> np.ndarray:
    """Concatenated per-modality pooled embeddings, each row L2-normalised (zeros where absent)."""
    out = []
    for m in sorted(feats):
        x = np.asarray(feats[m].pooled[rows], np.float64)
        nrm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, nrm, out=np.zeros_like(x), where=nrm > 1e-12)
        x[~np.asarray(feats[m].present[rows], bool)] = 0.0
        out.append(x)
    return np.concatenate(out, 1)


def sk_probs(kind, x_tr, y_tr, x_te, n_classes, seed) -> tuple[np.ndarray, dict]:
    """Test probabilities ``[n, C]`` of a scikit-learn baseline and what it chose."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    w = "balanced" if kind.endswith("balanced") else None
    info = {}
    counts = np.bincount(y_tr, minlength=n_classes)
    if kind.startswith("lr-cv") and counts[counts > 0].min() >= 3:
        lr = LogisticRegressionCV(Cs=list(CV_CS), cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                                  scoring="neg_log_loss", class_weight=w, max_iter=2000, random_state=seed)
        lr.fit(x_tr, y_tr)
        info["C"] = float(lr.C_[0])
    else:  # LogisticRegressionCV cannot fold a class with < 3 labels: a user falls back to the plain fit
        lr = LogisticRegression(C=10.0, class_weight=w, max_iter=2000, random_state=seed).fit(x_tr, y_tr)
        info["C"] = 10.0 if kind.startswith("lr-c10") else "fallback 10"
    p = np.zeros((len(x_te), n_classes))
    p[:, lr.classes_] = lr.predict_proba(x_te)
    return p, info


def task_metrics(y, probs, binary: bool) -> dict:
    """Metrics computed with scikit-learn here (not mmal's): binary AUC / AP / R@P80, else macro-F1 / accuracy."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_recall_curve, roc_auc_score

    if binary:
        s = probs[:, 1]
        prec, rec, _ = precision_recall_curve(y, s)
        ok = prec >= 0.8
        return {"auc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s)),
                "r_at_p80": float(rec[ok].max()) if ok.any() else 0.0}
    pred = probs.argmax(1)
    return {"macro_f1": float(f1_score(y, pred, labels=np.arange(probs.shape[1]), average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(y, pred))}


def draw_labels(cand, gold, b, seed) -> np.ndarray:
    """``b`` random candidates; redrawn (next sub-seed) until at least two classes are present."""
    for k in range(100):
        lab = np.random.default_rng([seed, k] if k else seed).choice(cand, b, replace=False)
        if len(np.unique(gold[lab])) >= 2:
            return lab
    raise SystemExit(f"no labeled set of {b} with two classes")


def versus_sklearn(args) -> dict:
    """The default learner against the scikit-learn baselines (module docstring)."""
    import torch
    from scipy.stats import ttest_rel

    from mmal.learners import make_learner

    torch.set_num_threads(args.threads)
    mine = args.learners or ["auto", "late-fusion"]
    keys = mine + list(SK_BASELINES)
    out = {"config": {"budgets": args.budgets, "binary_extra_budget": 800, "seeds": args.seeds, "threads": args.threads,
                      "mmal": mine, "baselines": list(SK_BASELINES), "cv_Cs": list(CV_CS),
                      "load_avg_start": os.getloadavg()}, "datasets": {}}
    for ds in args.datasets:
        feats, gold, test, cand = dataset(ds)
        binary = int(gold.max()) == 1
        C = int(gold.max()) + 1
        budgets = [b for b in args.budgets + ([800] if binary else []) if b <= len(cand)]
        mets = ("r_at_p80", "auc", "average_precision") if binary else ("macro_f1", "accuracy")
        res = {k: {str(b): {m: [] for m in mets} | {"fit_seconds": [], "chosen": []} for b in budgets} for k in keys}
        x_all = unit_pooled(feats, np.arange(len(gold)))
        t_ds = time.perf_counter()
        for si, seed in enumerate(args.seeds):
            for b in budgets:
                lab = draw_labels(cand, gold, b, seed)
                order = keys[si % len(keys):] + keys[: si % len(keys)]  # rotate who goes first
                for k in order:
                    t0 = time.perf_counter()
                    if k in SK_BASELINES:
                        p, info = sk_probs(k, x_all[lab], gold[lab], x_all[test], C, seed)
                        chosen = info["C"]
                    else:
                        L = make_learner(k, seed=seed)
                        h = L.fit(feats, gold, lab)
                        p = L.predict_proba(feats, test)
                        chosen = h.get("auto", {}).get("chosen", k)
                    sec = time.perf_counter() - t0
                    m = task_metrics(gold[test], np.asarray(p, np.float64), binary)
                    r = res[k][str(b)]
                    for name in mets:
                        r[name].append(m[name])
                    r["fit_seconds"].append(sec)
                    r["chosen"].append(chosen)
                    print(f"{ds} seed {seed} n={b} {k:<16} " + " ".join(f"{n} {m[n]:.3f}" for n in mets)
                          + f" fit {sec:.2f} s ({chosen})", flush=True)
        cells = {}
        for b in budgets:
            cell = {}
            for name in mets:
                best = max(SK_BASELINES, key=lambda k: np.mean(res[k][str(b)][name]))
                a = np.array(res["auto"][str(b)][name]) if "auto" in res else None
                c = np.array(res[best][str(b)][name])
                row = {"best_baseline": best, "best_baseline_mean": float(c.mean()),
                       "best_baseline_std": float(c.std())}
                if a is not None:
                    d = a - c
                    p = float(ttest_rel(a, c).pvalue) if len(a) > 1 and np.any(d != 0) else 1.0
                    row |= {"auto_mean": float(a.mean()), "auto_std": float(a.std()), "mean_diff": float(d.mean()),
                            "p": p, "within_half_point": bool(a.mean() >= c.mean() - 0.005),
                            "significantly_above": bool(d.mean() > 0 and p < 0.05)}
                cell[name] = row
            cells[str(b)] = cell
        for k in keys:
            for b in budgets:
                r = res[k][str(b)]
                for name in mets:
                    r[name + "_mean"], r[name + "_std"] = float(np.mean(r[name])), float(np.std(r[name]))
                r["fit_seconds_median"] = float(np.median(r["fit_seconds"]))
        out["datasets"][ds] = {"n_items": int(len(gold)), "n_test": int(len(test)), "n_candidates": int(len(cand)),
                               "task": "binary" if binary else "multiclass", "n_classes": C,
                               "positive_rate": float(gold.mean()) if binary else None,
                               "modalities": sorted(feats), "budgets": budgets, "results": res, "cells": cells,
                               "seconds": time.perf_counter() - t_ds}
        print(json.dumps({ds: cells}, indent=1, default=float), flush=True)
    out["config"]["load_avg_end"] = os.getloadavg()
    return out


def relevance_dataset(name: str):
    """``(RelevanceData, test pairs, candidate pairs)`` of a relevance dataset, built and prepared once."""
    from mmal.data.datasets import build
    from mmal.workspace import Workspace, init_workspace

    scratch = ROOT / "bench" / "scratch" / "learner"
    data = scratch / f"data-{name}"
    items = data / "items.parquet"
    if not items.exists():
        build(name, data, seed=0, progress=False)
    wsdir = scratch / f"ws-{name}"
    if not (wsdir / "mmal.toml").exists():
        init_workspace(wsdir, items, force=True, task="relevance")
    ws = Workspace(wsdir)
    d = ws.task.load_features(ws)
    split = np.asarray(d.splits).astype(str)
    return d, np.flatnonzero((split == "test") & (d.labels >= 0)), np.flatnonzero((split != "test") & (d.labels >= 0))


def versus_cosine(args) -> dict:
    """Relevance: the untrained cosine, the probe and auto-relevance at each budget (AUC, Spearman here)."""
    import torch
    from scipy.stats import spearmanr, ttest_rel
    from sklearn.metrics import roc_auc_score

    from mmal.learners import make_learner

    torch.set_num_threads(args.threads)
    keys = args.learners or ["cosine", "probe", "auto-relevance"]
    out = {"config": {"budgets": args.budgets, "seeds": args.seeds, "learners": keys, "load_avg_start": os.getloadavg()},
           "datasets": {}}
    for ds in args.datasets:
        d, test, cand = relevance_dataset(ds)
        y = d.labels
        res = {k: {str(b): {"auc": [], "spearman": [], "chosen": [], "fit_seconds": []} for b in args.budgets} for k in keys}
        for si, seed in enumerate(args.seeds):
            for b in args.budgets:
                lab = draw_labels(cand, y, b, seed)
                for k in keys[si % len(keys):] + keys[: si % len(keys)]:
                    t0 = time.perf_counter()
                    L = make_learner(k, seed=seed)
                    h = L.fit(d, y, lab)
                    sc = np.asarray(L.score(d, test)["scores"], np.float64)
                    r = res[k][str(b)]
                    r["auc"].append(float(roc_auc_score(y[test] >= 2, sc)))
                    r["spearman"].append(float(spearmanr(sc, y[test]).statistic))
                    r["chosen"].append(h.get("auto", {}).get("chosen", k))
                    r["fit_seconds"].append(time.perf_counter() - t0)
                    print(f"{ds} seed {seed} n={b} {k:<15} auc {r['auc'][-1]:.3f} spearman {r['spearman'][-1]:.3f} "
                          f"({r['chosen'][-1]})", flush=True)
        cells = {}
        for b in args.budgets:
            cells[str(b)] = {}
            for m in ("auc", "spearman"):
                row = {k: {"mean": float(np.mean(res[k][str(b)][m])), "std": float(np.std(res[k][str(b)][m]))} for k in keys}
                if "cosine" in keys:
                    c = np.array(res["cosine"][str(b)][m])
                    for k in keys:
                        a = np.array(res[k][str(b)][m])
                        if k != "cosine" and np.any(a != c):
                            row[k]["p_vs_cosine"] = float(ttest_rel(a, c).pvalue)
                        row[k]["ge_cosine"] = bool(a.mean() >= c.mean())
                cells[str(b)][m] = row
        out["datasets"][ds] = {"n_pairs": int(len(y)), "n_test": int(len(test)), "n_candidates": int(len(cand)),
                               "results": res, "cells": cells}
        print(json.dumps({ds: cells}, indent=1), flush=True)
    out["config"]["load_avg_end"] = os.getloadavg()
    return out


def timing(args) -> dict:
    """Fit seconds of each learner at each ``--timing-budget``, alternating learners, in this process.

    Separate from the accuracy run so it can be repeated on a quiet machine
    (``--timing``): the accuracy numbers do not depend on load, the seconds do. The
    scikit-learn baselines (``lr-*`` keys) are timed as a user runs them (library thread
    defaults). A budget above the dataset's non-test items draws from all its items (a
    timing of the fit only; recorded as ``drawn_from``).
    """
    import torch

    from mmal.learners import make_learner

    torch.set_num_threads(args.threads)
    out = {"budgets": args.timing_budgets, "threads": args.threads, "seeds": args.seeds,
           "load_avg_start": os.getloadavg(), "datasets": {}}
    for ds in args.datasets:
        feats, gold, _, cand = dataset(ds)
        C = int(gold.max()) + 1
        x_all = unit_pooled(feats, np.arange(len(gold)))
        make_learner("linear").fit(feats, gold, cand[:20])  # imports, warm caches
        keys = args.learners or list(LEARNERS)
        per = {}
        for b in args.timing_budgets:
            if b > len(gold):
                print(f"{ds}: {b} labels > its {len(gold)} items, not timed", flush=True)
                continue
            pool = cand if b <= len(cand) else np.arange(len(gold))
            res = {k: [] for k in keys}
            loads = []
            for si, seed in enumerate(args.seeds):
                lab = np.random.default_rng(seed).choice(pool, b, replace=False)
                for k in keys[si % len(keys):] + keys[: si % len(keys)]:
                    t0 = time.perf_counter()
                    if k in SK_BASELINES:
                        sk_probs(k, x_all[lab], gold[lab], x_all[:1], C, seed)
                    else:
                        name, params = learner_params(k, "audio" in feats) if k in LEARNERS else (k, {})
                        make_learner(name, seed=seed, **params).fit(feats, gold, lab)
                    res[k].append(time.perf_counter() - t0)
                    loads.append(os.getloadavg()[0])
                    print(f"{ds} n={b} seed {seed} {k:<16} {res[k][-1]:.2f} s (load {loads[-1]:.2f})", flush=True)
            per[str(b)] = {"drawn_from": "non-test items" if pool is cand else "all items (timing only)",
                           "load_avg_1min": [min(loads), max(loads)],
                           "learners": {k: {"seconds": v, "median": float(np.median(v))} for k, v in res.items()}}
        out["datasets"][ds] = per
    out["load_avg_end"] = os.getloadavg()
    return out


def head_scales(args) -> dict:
    """The audio scale each default fit chooses by cross-validation (no training: the choice
    runs before it), for every (dataset, seed, budget) of the accuracy run."""
    from mmal.learners import make_learner

    out = {}
    for ds in args.datasets:
        feats, gold, _, cand = dataset(ds)
        out[ds] = {}
        for b in args.budgets:
            if b > len(cand):
                continue
            vals = []
            for seed in args.seeds:
                lab = np.random.default_rng(seed).choice(cand, b, replace=False)
                L = make_learner("late-fusion", seed=seed, train={"epochs": 1})
                vals.append(L.fit(feats, gold, lab)["head_scale"]["value"])
            out[ds][str(b)] = vals
            print(ds, b, vals, flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=None, help="default: tuxpaint,synthetic-video,oxygen-icons,tuxpaint-binary,"
                    "oxygen-icons-binary (tuxpaint-relevance with --relevance)")
    ap.add_argument("--relevance", action="store_true", help="relevance learners against the untrained cosine "
                    "(bench/results/learner_relevance.json; --datasets tuxpaint-relevance)")
    ap.add_argument("--variants", action="store_true", help="mmal's learner variants against each other (the earlier "
                    "bench; bench/results/learner_variants.json)")
    ap.add_argument("--budgets", default="50,100,200,400")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--timing", action="store_true", help="only time fits at --timing-budgets (bench/results/learner_timing.json)")
    ap.add_argument("--timing-budgets", default="200", help="comma list of label counts to time (--timing)")
    ap.add_argument("--learners", default=None, help="comma list of LEARNERS keys (default all)")
    ap.add_argument("--head-scale", action="store_true", help="only record the cross-validated audio scale of each "
                    "default fit (bench/results/learner_head_scale.json)")
    ap.add_argument("--merge", action="store_true", help="replace only these learners' results in the existing --out file")
    a = ap.parse_args(argv)
    a.datasets = (a.datasets or ("tuxpaint-relevance" if a.relevance else
                                 "tuxpaint,synthetic-video,oxygen-icons,tuxpaint-binary,oxygen-icons-binary")).split(",")
    a.budgets = [int(x) for x in a.budgets.split(",")]
    a.seeds = [int(x) for x in a.seeds.split(",")]
    a.learners = a.learners.split(",") if a.learners else None
    a.timing_budgets = [int(x) for x in a.timing_budgets.split(",")]
    a.out = a.out or str(ROOT / "bench" / "results" / ("learner_timing.json" if a.timing else
                                                       "learner_head_scale.json" if a.head_scale else
                                                       "learner_variants.json" if a.variants else
                                                       "learner_relevance.json" if a.relevance else "learner.json"))
    if not (a.timing or a.head_scale or a.variants):
        res = versus_cosine(a) if a.relevance else versus_sklearn(a)
        if Path(a.out).exists():  # one run per dataset: keep the other datasets' entries
            old = json.loads(Path(a.out).read_text())
            runs = old.get("runs", {})
            runs.update({ds: res["config"] for ds in res["datasets"]})
            res = {"config": res["config"], "runs": runs, "datasets": {**old.get("datasets", {}), **res["datasets"]}}
        else:
            res["runs"] = {ds: res["config"] for ds in res["datasets"]}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1, default=float))
        print(a.out)
        return
    known = set(LEARNERS) | ({"auto", *SK_BASELINES} if a.timing else set())
    if a.learners and set(a.learners) - known:
        raise SystemExit(f"--learners: unknown {sorted(set(a.learners) - known)}; known: {sorted(known)}")
    res = timing(a) if a.timing else head_scales(a) if a.head_scale else run(a)
    if a.merge and not a.timing and Path(a.out).exists():
        res = merge(json.loads(Path(a.out).read_text()), res, a.budgets)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    print(a.out)


if __name__ == "__main__":
    main()
