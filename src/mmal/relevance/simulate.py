"""Simulated active learning on relevance items: the set-up that :func:`mmal.loop.simulate.simulate` runs.

The round loop is the classification one (:func:`mmal.loop.simulate._run_rounds`): score ->
select -> reveal -> fit, every strategy of a seed starting from the same initial set and
round-0 model. For relevance items (a ``query`` column, levels 0..3):

- **learner**: a relevance learner (:mod:`mmal.relevance.learner`), ``probe`` by default: an
  MLP + hierarchical-softmax head over frozen MiniLM query / keyword-text vectors, fitted in
  well under a second, so a simulation of tens of fits per strategy runs on two CPU cores.
  ``hcmrm`` (the dual stream) works too but costs minutes per fit;
- **pool**: ``probs`` = the four-level distribution, so ``entropy`` is the level entropy and
  ``level-variance`` the ordinal variance (:mod:`mmal.relevance.al`); LSB's seed bad cases are
  scored by ``|E[y] - y|`` (000 eq. 11 with E[y] of 003 eq. 9; :func:`mmal.select.lsb.badness`);
- **batch loss** (000 Table 1 analog): mean ``|E[y] - y|`` over the selected batch once its
  levels are revealed (:func:`mmal.relevance.al.lsb_seed_scores`), i.e. eq. 11 on levels;
- **batch levels**: how many pairs of each level each batch revealed (``batch_levels``);
- **test metrics**: AUC ({0,1} vs {2,3}), Spearman, Pearson, NDCG@10 per query, level accuracy
  (:func:`mmal.relevance.workspace.relevance_test_metrics`); the curves and the AUBC are
  recorded for AUC (the run's ``aubc``) **and** Spearman (``aubc_by_metric``).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError

CURVE_METRICS = ("auc", "spearman")


def relevance_setup(items, out, strategies, *, learner=None, model=None, seeds=(0,), init: int, budget: int,
                    rounds: int, progress: bool = False):
    """The :class:`~mmal.loop.simulate.SimEnv` of a relevance simulation (module docstring).

    ``model``: settings of the relevance learner (e.g. ``{"head": "ordinal", "hidden": 32}``);
    ``None`` values are dropped. The items are validated into ``out/workspace`` (task
    relevance; reused when made from the same file) and the frozen features cached there.
    """
    from mmal.loop.simulate import SimEnv, _needs, initial_labeled, simulation_rows
    from mmal.relevance.al import lsb_seed_scores
    from mmal.relevance.learner import DEFAULT_RELEVANCE_LEARNER, level_probs_or_error, make_relevance_learner
    from mmal.relevance.workspace import relevance_data, relevance_test_metrics
    from mmal.workspace import Workspace, init_workspace

    out = Path(out)
    items = Path(items).resolve()
    for spec in strategies:
        need = _needs(spec)
        if need["coalitions"] or need["mc"] or need["unimodal"]:
            raise ConfigError(f"strategy {spec!r} needs modality coalitions, MC-dropout or unimodal heads, which the "
                              "relevance learners do not have; use random, entropy, level-variance, margin, "
                              "least-confidence, lsb-knn, lsb-lt, coreset or their mixes")
    wsdir = out / "workspace"
    ws = None
    if (wsdir / "mmal.toml").exists():
        ws = Workspace(wsdir)
        if ws.config["task"].get("items_source") != str(items) or ws.config["task"].get("type") != "relevance":
            ws = None
    if ws is None:
        ws = init_workspace(wsdir, items, task="relevance", force=True, progress=progress)
    ids, split, data = relevance_data(ws)
    gold = data.labels.copy()
    table = ws.items
    test_idx, cand = simulation_rows(items, split, gold, init + budget * rounds)
    name = learner or DEFAULT_RELEVANCE_LEARNER["simulate"]
    settings = {k: v for k, v in dict(model or {}).items() if v is not None}
    probe = make_relevance_learner(name, seed=0, **settings)  # unknown settings fail before any fit
    level_probs_or_error(probe.params["head"], "the uncertainty strategies' pool")
    qids = np.asarray(data.query_ids, dtype=object)

    def fit(rows, seed):
        m = make_relevance_learner(name, seed=seed, **settings)
        m.fit(data, gold, np.asarray(rows))
        return m

    def test_metrics(m):
        res = m.score(data, test_idx)
        return relevance_test_metrics(gold[test_idx], res["probs"], qids[test_idx], res["scores"]), {}

    def batch_loss(rows, probs):
        """000 eq. 11 on levels: mean |E[y] - y| of the batch under the model that selected it."""
        return float(lsb_seed_scores(probs, gold[rows]).mean())

    def batch_info(rows):
        """How many pairs of each level the batch revealed (levels 0..3)."""
        return {"batch_levels": np.bincount(gold[rows], minlength=4).tolist()}

    results = {"strategies": {s: {"per_seed": {}} for s in strategies}, "config": {
        "task": "relevance", "items": str(items), "strategies": list(strategies), "init": init, "budget": budget,
        "rounds": rounds, "seeds": list(seeds), "learner": name, "model": probe.config(), "n_items": len(ids),
        "n_test": int(len(test_idx)), "n_candidates": int(len(cand)), "n_classes": 4,
        "n_queries_test": int(len(set(qids[test_idx].tolist()))), "modalities": ["text"] + (["image"] if settings.get("visual") else []),
        "init_strategy": "random", "curve_metrics": list(CURVE_METRICS),
    }}
    return SimEnv(ids=ids, gold=gold, split=split, table=table, features=data, fit=fit, test_metrics=test_metrics,
                  initial=lambda seed: initial_labeled(cand, gold, init, seed), results=results,
                  curve_metrics=CURVE_METRICS, batch_loss=batch_loss, batch_info=batch_info,
                  report=write_relevance_report)


# ---- tables and report ---------------------------------------------------------------------------
FINAL_METRICS = ("auc", "spearman", "pearson", "ndcg@10", "accuracy")


def _ms(vals):
    v = np.asarray(vals, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), None
    return float(v.mean()), (float(v.std()) if len(v) > 1 else None)


def relevance_table(results) -> list[dict]:
    """Per strategy: final-round test metrics, AUBC of AUC and of Spearman, batch loss (mean ± std over seeds)."""
    from mmal.report.html import table1

    loss = {spec: (m, s) for spec, m, s in table1(results)}
    rows = []
    for spec, d in results["strategies"].items():
        runs = list(d["per_seed"].values())
        row = {"strategy": spec, "n_labeled": runs[0]["rounds"][-1]["n_labeled"], "batch_loss": loss[spec]}
        for k in FINAL_METRICS:
            row[k] = _ms([r["rounds"][-1]["test"].get(k, np.nan) for r in runs])
        for k in CURVE_METRICS:
            row[f"aubc_{k}"] = _ms([r.get("aubc_by_metric", {}).get(k, np.nan) for r in runs])
        rows.append(row)
    return rows


def batch_level_shares(results) -> dict:
    """Per strategy: share of each level among all selected pairs (rounds >= 1), mean over seeds."""
    out = {}
    for spec, d in results["strategies"].items():
        shares = []
        for v in d["per_seed"].values():
            c = np.sum([r["batch_levels"] for r in v["rounds"][1:] if "batch_levels" in r], axis=0)
            if np.ndim(c) and c.sum() > 0:
                shares.append(c / c.sum())
        if shares:
            out[spec] = np.mean(shares, 0).tolist()
    return out


def paired_vs(results, baseline: str = "random", metrics=CURVE_METRICS) -> dict:
    """AUBC difference to ``baseline`` per strategy and metric, paired by seed: mean, std and the
    two-sided paired t-test p-value (NaN with fewer than two seeds or zero variance)."""
    from scipy import stats

    out = {}
    if baseline not in results["strategies"]:
        return out
    base = results["strategies"][baseline]["per_seed"]
    for spec, d in results["strategies"].items():
        if spec == baseline:
            continue
        seeds = sorted(set(base) & set(d["per_seed"]))
        for m in metrics:
            x = np.array([d["per_seed"][s]["aubc_by_metric"][m] for s in seeds], float)
            y = np.array([base[s]["aubc_by_metric"][m] for s in seeds], float)
            diff = x - y
            p = float("nan")
            if len(seeds) > 1 and np.ptp(diff) > 0:
                p = float(stats.ttest_rel(x, y).pvalue)
            out.setdefault(spec, {})[m] = {"diff": float(diff.mean()), "std": float(diff.std()), "p": p,
                                           "n_seeds": len(seeds)}
    return out


def _fmt(ms, digits=3):
    m, s = ms
    if m is None or not np.isfinite(m):
        return "–"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_relevance_tables(results, baseline: str = "random") -> str:
    rows = relevance_table(results)
    lines = ["| strategy | labels | AUBC of AUC | AUBC of Spearman | AUC | Spearman | Pearson | NDCG@10 | level accuracy | "
             "batch loss mean abs(E[y] − y) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['strategy']}` | {r['n_labeled']} | {_fmt(r['aubc_auc'])} | {_fmt(r['aubc_spearman'])} | "
                     f"{_fmt(r['auc'])} | {_fmt(r['spearman'])} | {_fmt(r['pearson'])} | {_fmt(r['ndcg@10'])} | "
                     f"{_fmt(r['accuracy'])} | {_fmt(r['batch_loss'])} |")
    lines += ["", "Levels revealed by the selected batches (share of all selected pairs, mean over seeds; levels 0 / 1 / 2 / 3):", "",
              "| strategy | level 0 | level 1 | level 2 | level 3 |", "|---|---|---|---|---|"]
    for spec, sh in batch_level_shares(results).items():
        lines.append(f"| `{spec}` | " + " | ".join(f"{x:.2f}" for x in sh) + " |")
    pv = paired_vs(results, baseline)
    if pv:
        lines += ["", f"AUBC difference to `{baseline}`, paired by seed (mean ± std; two-sided paired t-test):", "",
                  "| strategy | Δ AUBC of AUC | p | Δ AUBC of Spearman | p |", "|---|---|---|---|---|"]
        for spec, d in pv.items():
            a, s = d["auc"], d["spearman"]
            lines.append(f"| `{spec}` | {a['diff']:+.4f} ± {a['std']:.4f} | {a['p']:.3g} | "
                         f"{s['diff']:+.4f} ± {s['std']:.4f} | {s['p']:.3g} |")
    return "\n".join(lines) + "\n"


def write_relevance_report(results, path, case_study=None) -> Path:
    """``report.html`` of a relevance simulation: AUC and Spearman curves, the table above, win matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmal.report.html import _n_seeds, _png, win_matrix

    path = Path(path)
    cfg = results["config"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, CURVE_METRICS):
        for spec, d in results["strategies"].items():
            runs = [v["rounds"] for v in d["per_seed"].values()]
            n = [r["n_labeled"] for r in runs[0]]
            v = np.array([[r["test"][metric] for r in run] for run in runs], float)
            ax.plot(n, v.mean(0), marker="o", label=spec)
            ax.fill_between(n, v.mean(0) - v.std(0), v.mean(0) + v.std(0), alpha=0.15)
        ax.set_xlabel("labeled pairs")
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    curve_png = _png(fig)
    rows = relevance_table(results)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mmal relevance simulation report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
        ".small{color:#666;font-size:90%}</style></head><body>",
        "<h1>mmal relevance simulation report</h1>",
        f"<p class='small'>items: {html.escape(str(cfg.get('items')))} — {cfg.get('n_items')} (query, video) pairs, "
        f"{cfg.get('n_candidates')} candidates, {cfg.get('n_test')} test pairs ({cfg.get('n_queries_test')} queries); "
        f"learner {html.escape(str(cfg.get('learner')))} {html.escape(str(cfg.get('model')))}; init {cfg['init']}, "
        f"budget {cfg['budget']} × {cfg['rounds']} rounds; seeds {cfg['seeds']}; {cfg.get('seconds', '?')} s</p>",
        "<h2>Learning curves (test AUC {0,1} vs {2,3}; test Spearman)</h2>", f"<img src='{curve_png}'>",
        "<h2>Final round and AUBC</h2><p class='small'>Mean ± std over seeds. Batch loss: mean |E[y] − y| of each "
        "selected batch under the model that selected it, once labeled (000 eq. 11 on levels).</p><table><tr>",
    ]
    hdr = ["strategy", "labels", "AUBC AUC", "AUBC Spearman", "AUC", "Spearman", "Pearson", "NDCG@10", "level acc.", "batch loss"]
    parts.append("".join(f"<th>{h}</th>" for h in hdr) + "</tr>")
    for r in rows:
        cells = [html.escape(r["strategy"]), str(r["n_labeled"])] + [_fmt(r[k]) for k in (
            "aubc_auc", "aubc_spearman", "auc", "spearman", "pearson", "ndcg@10", "accuracy", "batch_loss")]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if _n_seeds(results) >= 2:
        for metric in CURVE_METRICS:
            names, W, n_rounds = win_matrix(results, metric=metric)
            parts.append(f"<h2>Pairwise win matrix on test {metric}</h2><p class='small'>Row beats column in this many of "
                         f"{n_rounds} rounds (paired two-sided t-test over seeds at 0.9).</p><table><tr><th></th>"
                         + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")
            for i, n in enumerate(names):
                parts.append(f"<tr><td>{html.escape(n)}</td>" + "".join(
                    f"<td>{'–' if i == j else W[i, j]}</td>" for j in range(len(names))) + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
