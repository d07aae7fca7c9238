"""Render ``results.json`` of :func:`mmal.loop.simulate.simulate` as one self-contained HTML page.

Plots are PNGs embedded as base64; thumbnails of case-study items are embedded too, so
the page can be mailed around. Nothing here computes a metric: it only reads results.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_data_uri(path, size: int, fmt: str = "PNG") -> str | None:
    """A ``size``-px thumbnail of the image at ``path`` on white, as a ``data:`` URI; None when
    there is no path or the picture cannot be read (a broken picture must not break a report)."""
    if not path:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGBA")
            im.thumbnail((size, size))
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            buf = io.BytesIO()
            kw = {"quality": 85} if fmt == "JPEG" else {}
            Image.alpha_composite(bg, im).convert("RGB").save(buf, format=fmt, **kw)
        return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001
        return None


def _thumb(path, size=72) -> str:
    uri = image_data_uri(path, size)
    return f'<img src="{uri}" width="{size}">' if uri else ""


def _task(results):
    from mmal.tasks import get_task

    return get_task(results["config"].get("task", "multiclass"))


def _metric(results) -> str:
    return results["config"].get("metric") or _task(results).headline


def curves(results, metric: str | None = None) -> dict:
    """strategy -> (n_labeled [R+1], mean, std of the test ``metric`` over seeds; default the run's AUBC metric)."""
    metric = metric or _metric(results)
    tk = _task(results)
    out = {}
    for spec, d in results["strategies"].items():
        runs = [v["rounds"] for v in d["per_seed"].values()]
        n = [r["n_labeled"] for r in runs[0]]
        vals = np.array([[tk.curve_value(r["test"], metric) for r in run] for run in runs], float)
        out[spec] = (n, vals.mean(0), vals.std(0))
    return out


def _std(vals):
    """Std over seeds, or None with fewer than two finite values (a one-seed run shows no ±)."""
    v = np.asarray(vals, float)
    v = v[np.isfinite(v)]
    return float(np.std(v)) if len(v) > 1 else None


def _fmt(m, s=None, digits=3):
    if m is None or (isinstance(m, float) and np.isnan(m)):
        return "–"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def _mean(vals):
    v = np.asarray([np.nan if x is None else x for x in vals], float)
    return (float(np.nanmean(v)) if np.isfinite(v).any() else np.nan), _std(v)


def table1(results) -> list[tuple]:
    """(strategy, mean batch badness, std over seeds) — 000 Table 1 analog.

    The batch badness is the task's (:meth:`mmal.tasks.Task.badness`): 000 eq. 11 on ordered
    labels, ``1 - p(y)`` on classes; rounds that selected nothing have none.
    """
    rows = []
    for spec, d in results["strategies"].items():
        per_seed = []
        for v in d["per_seed"].values():
            b = np.array([np.nan if r.get("batch_badness") is None else r["batch_badness"] for r in v["rounds"][1:]], float)
            per_seed.append(float(b[np.isfinite(b)].mean()) if np.isfinite(b).any() else np.nan)
        m, s = _mean(per_seed)
        rows.append((spec, m, s))
    return rows


def table2(results) -> list[dict]:
    """Final-round test metrics of the task (equal budget) and the AUBC, mean ± std over seeds — 000 Table 2 analog."""
    tk = _task(results)
    rows = []
    for spec, d in results["strategies"].items():
        finals = [v["rounds"][-1]["test"] for v in d["per_seed"].values()]
        row = {"strategy": spec, "n_labeled": d["per_seed"][next(iter(d["per_seed"]))]["rounds"][-1]["n_labeled"]}
        for k, _ in tk.report_metrics:
            row[k] = _mean([f.get(k) for f in finals])
        row["aubc"] = _mean([v["aubc"] for v in d["per_seed"].values()])
        rows.append(row)
    return rows


def win_matrix(results, *, metric: str | None = None, confidence: float = 0.9):
    """Pairwise win matrix (002 Fig. 3.4): W[i, j] = rounds where strategy i beats j.

    For every round r >= 1 and pair (i, j), a two-sided paired t-test over seeds of the
    test ``metric`` (default the run's AUBC metric) at the given ``confidence`` (0.9 -> p <
    0.1); i wins when the test rejects equality and i's mean is higher. Seeds pair
    naturally: both strategies of a seed share the initial labeled set and the round-0 model.

    Returns ``(names, W [S, S] int, n_rounds)``.
    """
    from scipy import stats

    metric = metric or _metric(results)
    tk = _task(results)
    names = list(results["strategies"])
    seeds = sorted(set.intersection(*[set(d["per_seed"]) for d in results["strategies"].values()]))
    vals = {n: np.array([[tk.curve_value(r["test"], metric) for r in results["strategies"][n]["per_seed"][s]["rounds"]]
                         for s in seeds], float) for n in names}  # [seeds, rounds]
    n_rounds = min(v.shape[1] for v in vals.values()) - 1
    W = np.zeros((len(names), len(names)), int)
    if len(seeds) < 2:
        return names, W, n_rounds
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            for r in range(1, n_rounds + 1):
                x, y = vals[a][:, r], vals[b][:, r]
                d = x - y
                if not np.isfinite(d).all():
                    continue
                if np.allclose(d, d[0]):  # zero variance: a t-test is undefined; count a strict, constant lead
                    W[i, j] += int(d[0] > 0)
                    continue
                p = stats.ttest_rel(x, y).pvalue
                if p < 1 - confidence and x.mean() > y.mean():
                    W[i, j] += 1
    return names, W, n_rounds


def paired_vs(results, baseline: str = "random", metrics=None) -> dict:
    """AUBC difference to ``baseline`` per strategy and metric, paired by seed: mean, std, the two-sided
    paired t-test p-value (NaN with fewer than two seeds or zero variance) and the seed count;
    with fewer than 5 seeds also a ``caveat`` line (the test is indicative only)."""
    from scipy import stats

    metrics = list(metrics or [_metric(results)])
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
            if len(seeds) > 1 and np.isfinite(diff).all() and np.ptp(diff) > 0:
                p = float(stats.ttest_rel(x, y).pvalue)
            rec = {"diff": float(diff.mean()), "std": float(diff.std()), "p": p, "n_seeds": len(seeds)}
            if len(seeds) < 5:
                rec["caveat"] = ONE_SEED_NOTE if len(seeds) < 2 else FEW_SEEDS_NOTE
            out.setdefault(spec, {})[m] = rec
    return out


def _n_seeds(results) -> int:
    return min((len(d["per_seed"]) for d in results["strategies"].values()), default=0)


ONE_SEED_NOTE = "One seed only: a paired test over seeds is impossible, so no win matrix is given (run several seeds)."
FEW_SEEDS_NOTE = "Fewer than 5 seeds: treat the paired tests as indicative only."


def markdown_win_matrix(results, **kw) -> str:
    if _n_seeds(results) < 2:
        return ONE_SEED_NOTE + "\n"
    names, W, n_rounds = win_matrix(results, **kw)
    metric = kw.get("metric") or _metric(results)
    lines = [f"Rows beat columns in this many of {n_rounds} rounds (test {metric}, paired two-sided t-test over "
             f"{_n_seeds(results)} seeds, 0.9):", "",
             "| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        lines.append(f"| `{n}` | " + " | ".join("–" if i == j else str(W[i, j]) for j in range(len(names))) + " |")
    if _n_seeds(results) < 5:
        lines += ["", FEW_SEEDS_NOTE]
    return "\n".join(lines) + "\n"


def markdown_rounds(results) -> str:
    """Per round: labels, the run's metric, unimodal-head accuracy and mean Φ (002 Fig. 3.1–3.3)."""
    metric = _metric(results)
    tk = _task(results)
    lines = [f"| strategy | round | labels | {metric} | unimodal accuracy | mean Φ (BMMAL) |", "|---|---|---|---|---|---|"]
    for spec, d in results["strategies"].items():
        runs = list(d["per_seed"].values())
        for r in range(len(runs[0]["rounds"])):
            recs = [run["rounds"][r] for run in runs if r < len(run["rounds"])]
            val = np.array([tk.curve_value(x["test"], metric) for x in recs])
            uni, phi = {}, {}
            for x in recs:
                for m, v in (x.get("unimodal_test_accuracy") or {}).items():
                    uni.setdefault(m, []).append(v)
                for m, v in (x.get("modality_contribution") or {}).items():
                    phi.setdefault(m, []).append(v)
            fmt = lambda dd: ", ".join(f"{m} {np.mean(v):.3f}" for m, v in sorted(dd.items())) or "–"  # noqa: E731
            lines.append(f"| `{spec}` | {r} | {recs[0]['n_labeled']} | {_fmt(val.mean(), _std(val))} | {fmt(uni)} | {fmt(phi)} |")
    return "\n".join(lines) + "\n"


def markdown_tables(results) -> str:
    """The two tables as Markdown (for docs/results): batch badness, then final metrics and AUBC."""
    tk = _task(results)
    metric = _metric(results)
    lines = [f"| strategy | batch badness: {tk.badness_doc} |", "|---|---|"]
    for spec, m, s in table1(results):
        lines.append(f"| `{spec}` | {_fmt(m, s)} |")
    keys = [k for k, _ in tk.report_metrics]
    lines += ["", "| strategy | labels | " + " | ".join(lbl for _, lbl in tk.report_metrics) + f" | AUBC ({metric}) |",
              "|---|---|" + "---|" * (len(keys) + 1)]
    for r in table2(results):
        lines.append(f"| `{r['strategy']}` | {r['n_labeled']} | " + " | ".join(_fmt(*r[k]) for k in keys)
                     + f" | {_fmt(*r['aubc'])} |")
    return "\n".join(lines) + "\n"


def write_report(results, path, case_study=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    cfg = results["config"]
    tk = _task(results)
    metric = _metric(results)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec, (n, m, s) in curves(results).items():
        ax.plot(n, m, marker="o", label=spec)
        ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.set_xlabel("labeled items")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    curve_png = _png(fig)
    params = cfg["learner_params"] if "learner_params" in cfg else (cfg.get("model") or {})  # older results: all
    model_desc = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    if cfg.get("workspace"):
        where = f"workspace: {html.escape(str(cfg['workspace']))}, gold labels from {html.escape(str(cfg.get('gold')))}"
        if cfg.get("n_no_gold"):
            where += f" ({cfg['n_no_gold']} items without one left out)"
    else:
        where = f"items: {html.escape(str(cfg.get('items')))}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mmal simulation report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
        ".case td{text-align:left;vertical-align:top}.small{color:#666;font-size:90%}</style></head><body>",
        "<h1>mmal simulation report</h1>",
        f"<p class='small'>task {html.escape(tk.name)}; {where} — {cfg.get('n_items')} items, "
        f"{cfg.get('n_candidates')} candidates, {cfg.get('n_test')} test; modalities {', '.join(cfg.get('modalities', []))}; "
        f"{_classes_desc(cfg)}init {cfg['init']}, budget {cfg['budget']} × {cfg['rounds']} rounds; seeds {cfg['seeds']}; learner "
        f"{html.escape(str(cfg.get('learner')))} ({html.escape(model_desc)}); {cfg.get('seconds', '?')} s</p>",
        f"<h2>Learning curves (test {html.escape(metric)})</h2>", f"<img src='{curve_png}'>",
        "<h2>Batch badness by strategy (000 Table 1 analog)</h2>",
        f"<p class='small'>Per selected batch, {html.escape(tk.badness_doc)} under the model that selected it, once "
        "labeled; higher = the batch holds more of the model's mistakes. Mean ± std over seeds of the per-round mean.</p>",
        "<table><tr><th>strategy</th><th>batch badness</th></tr>",
    ]
    for spec, m, s in table1(results):
        parts.append(f"<tr><td>{html.escape(spec)}</td><td>{_fmt(m, s)}</td></tr>")
    parts.append(f"</table><h2>Test metrics at equal budget (000 Table 2 analog) and AUBC of {html.escape(metric)}</h2>")
    hdr = ["strategy", "labels"] + [lbl for _, lbl in tk.report_metrics] + ["AUBC"]
    parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in hdr) + "</tr>")
    for r in table2(results):
        cells = [html.escape(r["strategy"]), str(r["n_labeled"])]
        cells += [_fmt(*r[k], digits=5 if k == "max_beta_variance" else 3) for k, _ in tk.report_metrics]
        cells.append(_fmt(*r["aubc"]))
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    pv = paired_vs(results)
    if pv:
        parts.append(f"<h2>AUBC against random, paired by seed</h2><p class='small'>Mean ± std of the AUBC difference "
                     f"({html.escape(metric)}), two-sided paired t-test over {_n_seeds(results)} seeds"
                     + (f". {FEW_SEEDS_NOTE}" if _n_seeds(results) < 5 else "") + "</p><table><tr><th>strategy</th>"
                     "<th>Δ AUBC</th><th>p</th></tr>")
        for spec, d in pv.items():
            v = d[metric]
            parts.append(f"<tr><td>{html.escape(spec)}</td><td>{v['diff']:+.4f} ± {v['std']:.4f}</td>"
                         f"<td>{_fmt(v['p'], digits=3)}</td></tr>")
        parts.append("</table>")
    if _n_seeds(results) < 2:
        parts.append(f"<h2>Pairwise win matrix (002 Fig. 3.4)</h2><p class='small'>{ONE_SEED_NOTE}</p>")
    else:
        names, W, n_rounds = win_matrix(results)
        parts.append(f"<h2>Pairwise win matrix (002 Fig. 3.4)</h2><p class='small'>Row beats column in this many of {n_rounds} rounds "
                     f"(test {html.escape(metric)}, paired two-sided t-test over seeds at 0.9"
                     + (f"; {FEW_SEEDS_NOTE}" if _n_seeds(results) < 5 else "") + ").</p><table><tr><th></th>"
                     + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")
        for i, n in enumerate(names):
            parts.append(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{'–' if i == j else W[i, j]}</td>" for j in range(len(names))) + "</tr>")
        parts.append("</table>")
    parts.extend(_label_sections(results))
    parts.extend(_extra_sections(results))
    if case_study:
        parts.append("<h2>Case study: seed bad cases and their kNN neighbours (000 Table 3 style)</h2>")
        for spec, rows in case_study.items():
            parts.append(f"<h3>{html.escape(spec)}</h3><table class='case'><tr><th>seed bad case</th><th>neighbours selected from it</th></tr>")
            for row in rows:
                parts.append("<tr><td>" + _item_html(row["seed"]) + "</td><td>" + "".join(_item_html(x) for x in row["neighbours"]) + "</td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path


def _classes_desc(cfg) -> str:
    """``"classes cat, dog; "`` when the task names its classes (not only their numbers), else ``""``."""
    names = [str(n) for n in cfg.get("class_names") or []]
    if not names or names == [str(i) for i in range(len(names))]:
        return ""
    return f"classes {html.escape(', '.join(names))}; "


def _item_html(it) -> str:
    ok = "✓" if it["pred"] == it["label"] else "✗"
    lab, pred = it.get("label_name", it["label"]), it.get("pred_name", it["pred"])
    return (f"<div style='display:inline-block;width:190px;margin:4px'>{_thumb(it.get('image'))}<br>"
            f"<b>{html.escape(str(it['id']))}</b><br>{html.escape(str(it.get('text') or ''))[:80]}<br>"
            f"<span class='small'>label {html.escape(str(lab))} · pred {html.escape(str(pred))} ({it['p_pred']:.2f}) {ok}</span></div>")


def label_shares(results) -> dict:
    """Per strategy: share of each class (or level) among all selected items (rounds >= 1), mean over seeds."""
    out = {}
    for spec, d in results["strategies"].items():
        shares = []
        for v in d["per_seed"].values():
            c = np.sum([r["batch_labels"] for r in v["rounds"][1:] if r.get("batch_labels")], axis=0)
            if np.ndim(c) and c.sum() > 0:
                shares.append(c / c.sum())
        if shares:
            out[spec] = np.mean(shares, 0).tolist()
    return out


def _label_sections(results) -> list[str]:
    shares = label_shares(results)
    if not shares:
        return []
    names = results["config"].get("class_names") or [str(i) for i in range(len(next(iter(shares.values()))))]
    out = ["<h2>What the batches revealed</h2><p class='small'>Share of each class among the selected items "
           "(rounds ≥ 1), mean over seeds.</p><table><tr><th>strategy</th>"
           + "".join(f"<th>{html.escape(str(n))}</th>" for n in names) + "</tr>"]
    for spec, sh in shares.items():
        out.append(f"<tr><td>{html.escape(spec)}</td>" + "".join(f"<td>{x:.2f}</td>" for x in sh) + "</tr>")
    out.append("</table>")
    return out


def _extra_sections(results) -> list[str]:
    """Per-round modality contribution Φ and unimodal accuracy, when the run recorded them."""
    out = []
    rows = []
    for spec, d in results["strategies"].items():
        for seed, v in d["per_seed"].items():
            for r in v["rounds"]:
                if "modality_contribution" in r or "unimodal_test_accuracy" in r:
                    rows.append((spec, seed, r["round"], r.get("modality_contribution"), r.get("unimodal_test_accuracy")))
    if rows:
        out.append("<h2>Modality contribution Φ and unimodal accuracy per round</h2><table><tr><th>strategy</th><th>seed</th>"
                   "<th>round</th><th>mean Φ</th><th>unimodal test accuracy</th></tr>")
        for spec, seed, rnd, phi, uni in rows:
            fmt = lambda d: ", ".join(f"{k} {v:.3f}" for k, v in (d or {}).items())  # noqa: E731
            out.append(f"<tr><td>{html.escape(spec)}</td><td>{seed}</td><td>{rnd}</td><td>{fmt(phi)}</td><td>{fmt(uni)}</td></tr>")
        out.append("</table>")
    return out
