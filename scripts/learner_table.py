"""Markdown tables of bench/learner.py's results (default vs scikit-learn; relevance vs the cosine).

    .venv/bin/python scripts/learner_table.py                 # -> stdout
    .venv/bin/python scripts/learner_table.py --out docs/results/learner.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"auto": "**auto** (default)", "late-fusion": "late-fusion", "lr-c10": "LR C=10", "lr-c10-balanced": "LR C=10 bal.",
         "lr-cv": "LR CV-C", "lr-cv-balanced": "LR CV-C bal."}


def _cell(r, m):
    return f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"


def classification(res: dict) -> list[str]:
    out = []
    for ds, d in res["datasets"].items():
        mets = ("r_at_p80", "auc", "average_precision") if d["task"] == "binary" else ("macro_f1", "accuracy")
        keys = [k for k in NAMES if k in d["results"]]
        cfg = res.get("runs", {}).get(ds, res["config"])
        out += [f"### {ds} ({d['task']}, {d['n_items']} items, {d['n_test']} test"
                + (f", {100 * d['positive_rate']:.1f} % positives" if d.get("positive_rate") else "") + ")", "",
                f"`bench/learner.py --datasets {ds}`; seeds {cfg['seeds']}; load average "
                f"{cfg['load_avg_start'][0]:.1f} → {cfg['load_avg_end'][0]:.1f}.", ""]
        for m in mets:
            out += [f"{m}:", "", "| labels | " + " | ".join(NAMES[k] for k in keys) + " | auto − best LR (p) |",
                    "|---|" + "---|" * (len(keys) + 1)]
            for b in d["budgets"]:
                c = d["cells"][str(b)][m]
                diff = f"{100 * c['mean_diff']:+.1f} pts vs {NAMES[c['best_baseline']]} (p = {c['p']:.3f})" if "mean_diff" in c else ""
                out.append(f"| {b} | " + " | ".join(_cell(d["results"][k][str(b)], m) for k in keys) + f" | {diff} |")
            out.append("")
        heads = ("r_at_p80", "auc") if d["task"] == "binary" else ("macro_f1",)  # the issue's comparison metrics
        cells = [d["cells"][str(b)][m] for b in d["budgets"] for m in heads if "mean_diff" in d["cells"][str(b)][m]]
        if cells:
            out += [f"Against the best scikit-learn pipeline of each cell ({', '.join(heads)}; {len(cells)} cells): "
                    f"within 0.5 points or above in {sum(c['within_half_point'] for c in cells)}, "
                    f"significantly above (paired t-test over seeds, p < 0.05) in "
                    f"{sum(c['significantly_above'] for c in cells)}, significantly below in "
                    f"{sum(c['mean_diff'] < 0 and c['p'] < 0.05 for c in cells)}.", ""]
        chosen = {}
        for b in d["budgets"]:
            ch = d["results"].get("auto", {}).get(str(b), {}).get("chosen", [])
            chosen[b] = ", ".join(f"{k} ×{ch.count(k)}" for k in sorted(set(ch), key=ch.index))
        out += ["auto chose: " + "; ".join(f"{b}: {v}" for b, v in chosen.items()), ""]
        secs = {b: d["results"]["auto"][str(b)]["fit_seconds_median"] for b in d["budgets"]} if "auto" in d["results"] else {}
        if secs:
            out += ["auto fit seconds (median, under the load above): "
                    + ", ".join(f"{b}: {v:.1f}" for b, v in secs.items()), ""]
    return out


def relevance(res: dict) -> list[str]:
    out = []
    for ds, d in res["datasets"].items():
        keys = list(d["results"])
        out += [f"### {ds} (relevance, {d['n_pairs']} pairs, {d['n_test']} test)", "",
                f"`bench/learner.py --relevance --datasets {ds}`", ""]
        for m in ("auc", "spearman"):
            out += [f"{m}:", "", "| labels | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for b, cell in d["cells"].items():
                row = []
                for k in keys:
                    c = cell[m][k]
                    p = f" (p = {c['p_vs_cosine']:.3f})" if "p_vs_cosine" in c else ""
                    row.append(f"{c['mean']:.3f} ± {c['std']:.3f}{p}")
                out.append(f"| {b} | " + " | ".join(row) + " |")
            out.append("")
        if "auto-relevance" in d["results"]:
            ch = {b: r["chosen"] for b, r in d["results"]["auto-relevance"].items()}
            out += ["auto-relevance chose: " + "; ".join(f"{b}: " + ", ".join(f"{k} ×{v.count(k)}" for k in sorted(set(v)))
                                                       for b, v in ch.items()), ""]
    return out


def fit_time(res: dict) -> list[str]:
    """Median fit seconds per (dataset, label count) from ``bench/learner.py --timing``."""
    if "budgets" not in res:  # an older file (one budget, another layout)
        return []
    out = [f"`bench/learner.py --timing --timing-budgets {','.join(str(b) for b in res['budgets'])}`, seeds "
           f"{res['seeds']}, learners alternating in one process; load average (1 min) {res['load_avg_start'][0]:.1f} "
           f"at the start, {res['load_avg_end'][0]:.1f} at the end.", ""]
    for ds, per in res["datasets"].items():
        keys = list(next(iter(per.values()))["learners"])
        out += [f"{ds}:", "", "| labels | drawn from | load (1 min) | " + " | ".join(keys) + " |",
                "|---|---|---|" + "---|" * len(keys)]
        for b, cell in per.items():
            lo, hi = cell["load_avg_1min"]
            out.append(f"| {b} | {cell['drawn_from']} | {lo:.1f}–{hi:.1f} | "
                       + " | ".join(f"{cell['learners'][k]['median']:.2f} s" for k in keys) + " |")
        out.append("")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    lines = ["# Learners against what a user would pick instead", ""]
    f = ROOT / "bench" / "results" / "learner.json"
    if f.exists():
        lines += ["## Classification: the default against scikit-learn logistic regression", ""]
        lines += classification(json.loads(f.read_text()))
    f = ROOT / "bench" / "results" / "learner_relevance.json"
    if f.exists():
        lines += ["## Relevance: against the untrained MiniLM cosine", ""]
        lines += relevance(json.loads(f.read_text()))
    f = ROOT / "bench" / "results" / "learner_timing.json"
    if f.exists() and fit_time(json.loads(f.read_text())):
        lines += ["## Fit time", ""]
        lines += fit_time(json.loads(f.read_text()))
    text = "\n".join(lines) + "\n"
    if a.out:
        keep = ""
        p = Path(a.out)
        if p.exists() and "## Reading the numbers" in p.read_text():
            keep = p.read_text()[p.read_text().index("## Reading the numbers"):]
        p.write_text(text + ("\n" + keep if keep else ""))
    print(text)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
