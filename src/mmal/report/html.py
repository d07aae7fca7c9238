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

R_AT_P = ("40", "50", "60", "70", "80", "90")


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


def curves(results) -> dict:
    """strategy -> (n_labeled [R+1], mean acc, std acc) over seeds."""
    out = {}
    for spec, d in results["strategies"].items():
        runs = [v["rounds"] for v in d["per_seed"].values()]
        n = [r["n_labeled"] for r in runs[0]]
        acc = np.array([[r["test"]["accuracy"] for r in run] for run in runs])
        out[spec] = (n, acc.mean(0), acc.std(0))
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


def table1(results) -> list[tuple]:
    """(strategy, mean batch multi-class loss, std over seeds) — 000 Table 1 analog."""
    rows = []
    for spec, d in results["strategies"].items():
        per_seed = []
        for v in d["per_seed"].values():  # rounds that selected nothing have no batch loss (NaN)
            losses = np.array([r["batch_multiclass_loss"] for r in v["rounds"][1:]], float)
            per_seed.append(float(losses[np.isfinite(losses)].mean()) if np.isfinite(losses).any() else np.nan)
        per_seed = np.array(per_seed)
        rows.append((spec, float(per_seed[np.isfinite(per_seed)].mean()) if np.isfinite(per_seed).any() else np.nan,
                     _std(per_seed)))
    return rows


def table2(results) -> list[dict]:
    """Final-round test metrics (equal budget), mean ± std over seeds — 000 Table 2 analog."""
    rows = []
    for spec, d in results["strategies"].items():
        finals = [v["rounds"][-1]["test"] for v in d["per_seed"].values()]
        row = {"strategy": spec, "n_labeled": d["per_seed"][next(iter(d["per_seed"]))]["rounds"][-1]["n_labeled"]}
        for k in ("accuracy", "macro_f1", "auc", "f1", "max_beta_variance"):
            vals = np.array([f.get(k, np.nan) for f in finals], float)
            row[k] = (float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan, _std(vals))
        for p in R_AT_P:
            vals = np.array([f.get("r_at_p", {}).get(p, np.nan) for f in finals], float)
            row[f"R@P{p}"] = (float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan, _std(vals))
        aubcs = [v["aubc"] for v in d["per_seed"].values()]
        row["aubc"] = (float(np.mean(aubcs)), _std(aubcs))
        rows.append(row)
    return rows


def win_matrix(results, *, metric: str = "accuracy", confidence: float = 0.9):
    """Pairwise win matrix (002 Fig. 3.4): W[i, j] = rounds where strategy i beats j.

    For every round r >= 1 and pair (i, j), a two-sided paired t-test over seeds of the
    test ``metric`` at the given ``confidence`` (0.9 -> p < 0.1); i wins when the test
    rejects equality and i's mean is higher. Seeds pair naturally: both strategies of a
    seed share the initial labeled set and the round-0 model.

    Returns ``(names, W [S, S] int, n_rounds)``.
    """
    from scipy import stats

    names = list(results["strategies"])
    seeds = sorted(set.intersection(*[set(d["per_seed"]) for d in results["strategies"].values()]))
    vals = {n: np.array([[r["test"][metric] for r in results["strategies"][n]["per_seed"][s]["rounds"]] for s in seeds], float)
            for n in names}  # [seeds, rounds]
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
                if np.allclose(d, d[0]):  # zero variance: a t-test is undefined; count a strict, constant lead
                    W[i, j] += int(d[0] > 0)
                    continue
                p = stats.ttest_rel(x, y).pvalue
                if p < 1 - confidence and x.mean() > y.mean():
                    W[i, j] += 1
    return names, W, n_rounds


def _n_seeds(results) -> int:
    return min((len(d["per_seed"]) for d in results["strategies"].values()), default=0)


ONE_SEED_NOTE = "One seed only: a paired test over seeds is impossible, so no win matrix is given (run several seeds)."


def markdown_win_matrix(results, **kw) -> str:
    if _n_seeds(results) < 2:
        return ONE_SEED_NOTE + "\n"
    names, W, n_rounds = win_matrix(results, **kw)
    lines = [f"Rows beat columns in this many of {n_rounds} rounds (paired two-sided t-test over seeds, 0.9):", "",
             "| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        lines.append(f"| `{n}` | " + " | ".join("–" if i == j else str(W[i, j]) for j in range(len(names))) + " |")
    return "\n".join(lines) + "\n"


def markdown_rounds(results) -> str:
    """Per round: labels, multimodal test accuracy, unimodal-head accuracy and mean Φ (002 Fig. 3.1–3.3)."""
    lines = ["| strategy | round | labels | accuracy | unimodal accuracy | mean Φ (BMMAL) |", "|---|---|---|---|---|---|"]
    for spec, d in results["strategies"].items():
        runs = list(d["per_seed"].values())
        for r in range(len(runs[0]["rounds"])):
            recs = [run["rounds"][r] for run in runs if r < len(run["rounds"])]
            acc = np.array([x["test"]["accuracy"] for x in recs])
            uni, phi = {}, {}
            for x in recs:
                for m, v in (x.get("unimodal_test_accuracy") or {}).items():
                    uni.setdefault(m, []).append(v)
                for m, v in (x.get("modality_contribution") or {}).items():
                    phi.setdefault(m, []).append(v)
            fmt = lambda dd: ", ".join(f"{m} {np.mean(v):.3f}" for m, v in sorted(dd.items())) or "–"  # noqa: E731
            lines.append(f"| `{spec}` | {r} | {recs[0]['n_labeled']} | {_fmt(acc.mean(), _std(acc))} | {fmt(uni)} | {fmt(phi)} |")
    return "\n".join(lines) + "\n"


def markdown_tables(results) -> str:
    """The two tables as Markdown (for docs/results)."""
    lines = ["| strategy | batch multi-class loss (eq. 11) |", "|---|---|"]
    for spec, m, s in table1(results):
        lines.append(f"| `{spec}` | {_fmt(m, s)} |")
    lines += ["", "| strategy | labels | accuracy | macro-F1 | AUC | F1 | R@P50 | R@P70 | R@P90 | AUBC |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table2(results):
        lines.append(
            f"| `{r['strategy']}` | {r['n_labeled']} | {_fmt(*r['accuracy'])} | {_fmt(*r['macro_f1'])} | {_fmt(*r['auc'])} | "
            f"{_fmt(*r['f1'])} | {_fmt(*r['R@P50'])} | {_fmt(*r['R@P70'])} | {_fmt(*r['R@P90'])} | {_fmt(*r['aubc'])} |"
        )
    return "\n".join(lines) + "\n"


def write_report(results, path, case_study=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec, (n, m, s) in curves(results).items():
        ax.plot(n, m, marker="o", label=spec)
        ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.set_xlabel("labeled items")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    curve_png = _png(fig)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mmal simulation report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
        ".case td{text-align:left;vertical-align:top}.small{color:#666;font-size:90%}</style></head><body>",
        "<h1>mmal simulation report</h1>",
        f"<p class='small'>items: {html.escape(str(cfg.get('items')))} — {cfg.get('n_items')} items, {cfg.get('n_candidates')} candidates, "
        f"{cfg.get('n_test')} test; modalities {', '.join(cfg.get('modalities', []))}; init {cfg['init']}, budget {cfg['budget']} × "
        f"{cfg['rounds']} rounds; seeds {cfg['seeds']}; model {html.escape(str(cfg.get('model')))}; {cfg.get('seconds', '?')} s</p>",
        "<h2>Learning curves</h2>", f"<img src='{curve_png}'>",
        "<h2>Batch multi-class loss by strategy (000 Table 1 analog)</h2>",
        "<p class='small'>Mean |E<sub>p</sub>[y] − y| of each selected batch under the model that selected it, once labeled "
        "(000 eq. 11); higher = the batch holds more of the model's mistakes. Mean ± std over seeds of the per-round mean.</p>",
        "<table><tr><th>strategy</th><th>multi-class loss</th></tr>",
    ]
    for spec, m, s in table1(results):
        parts.append(f"<tr><td>{html.escape(spec)}</td><td>{_fmt(m, s)}</td></tr>")
    parts.append("</table><h2>Test metrics at equal budget (000 Table 2 analog)</h2>")
    hdr = ["strategy", "labels", "accuracy", "macro-F1", "AUC", "F1"] + [f"R@P{p}" for p in R_AT_P] + ["max β-var", "AUBC"]
    parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in hdr) + "</tr>")
    for r in table2(results):
        cells = [html.escape(r["strategy"]), str(r["n_labeled"])] + [_fmt(*r[k]) for k in ("accuracy", "macro_f1", "auc", "f1")]
        cells += [_fmt(*r[f"R@P{p}"]) for p in R_AT_P] + [_fmt(*r["max_beta_variance"], digits=5), _fmt(*r["aubc"])]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if _n_seeds(results) < 2:
        parts.append(f"<h2>Pairwise win matrix (002 Fig. 3.4)</h2><p class='small'>{ONE_SEED_NOTE}</p>")
    else:
        names, W, n_rounds = win_matrix(results)
        parts.append(f"<h2>Pairwise win matrix (002 Fig. 3.4)</h2><p class='small'>Row beats column in this many of {n_rounds} rounds "
                     "(test accuracy, paired two-sided t-test over seeds at 0.9).</p><table><tr><th></th>"
                     + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")
        for i, n in enumerate(names):
            parts.append(f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{'–' if i == j else W[i, j]}</td>" for j in range(len(names))) + "</tr>")
        parts.append("</table>")
    extra = _extra_sections(results)
    parts.extend(extra)
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


def _item_html(it) -> str:
    ok = "✓" if it["pred"] == it["label"] else "✗"
    return (f"<div style='display:inline-block;width:190px;margin:4px'>{_thumb(it.get('image'))}<br>"
            f"<b>{html.escape(str(it['id']))}</b><br>{html.escape(str(it.get('text') or ''))[:80]}<br>"
            f"<span class='small'>label {it['label']} · pred {it['pred']} ({it['p_pred']:.2f}) {ok}</span></div>")


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
