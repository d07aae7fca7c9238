"""``mmal report DIR``: one HTML page per round of a workspace, plus an index.

For round ``n`` the page shows

- the round's model on the labeled test items (``rounds/<n>/pool`` and ``metrics.json``):
  the task's metrics with their meaning (binary: AUC, AP, R@P on the positive class;
  multiclass: accuracy, balanced accuracy, macro-F1, one-vs-rest AUC; relevance: AUC of
  {0,1} vs {2,3}, Spearman, NDCG@10), per-class precision / recall / support and the
  confusion matrix, with class names;
- per-modality figures when the round has them: test accuracy of each unimodal head
  (pool extras ``probs:<modality>``) and the Shapley contributions a BMMAL batch records;
- the batch selected for round ``n`` (from round ``n-1``'s model): strategy, its class mix
  (annotators' labels and the model's predictions), a grid of the selected items with
  image, text and audio player, why each was picked, and for LSB the seed bad case beside
  its neighbours (000 Table 3);
- caveats wherever a figure rests on few items (``min_items``).

The computations (:func:`per_class`, :func:`confusion`, :func:`batch_class_mix`,
:func:`caveats`) are pure functions; :func:`write_workspace_report` does the I/O.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmal.select.registry import reason_is_seed
from mmal.workspace import state
from mmal.workspace.workspace import Workspace

HERE = Path(__file__).resolve().parent
#: Below this many items a figure gets a caveat (a proportion from 30 items has a standard
#: error up to about 0.09).
MIN_ITEMS = 30
METRIC_HELP = {
    "accuracy": "share of test items whose most probable class is the label",
    "balanced_accuracy": "recall of each class present, averaged with equal weight per class",
    "macro_f1": "F1 of every class, averaged with equal weight per class (all classes)",
    "auc_ovr": "one-vs-rest ROC AUC of each class's probability, averaged over the classes present",
    "auc": "ROC AUC of the positive-class score (binary: p of class 1; relevance: score of {2,3} vs {0,1})",
    "average_precision": "area under the precision-recall curve of the positive class",
    "r_at_p80": "recall at 80% precision on the positive class (000 §4.3; the binary headline)",
    "r_at_p50": "recall at 50% precision on the positive class",
    "r_at_p90": "recall at 90% precision on the positive class",
    "f1": "F1 of the positive class at p(class 1) >= 0.5",
    "max_beta_variance": "largest Beta(TP+1, FP+1) variance over the R@P operating points (000 eq. 12)",
    "spearman": "rank correlation of the relevance score and the level (the relevance headline)",
    "pearson": "linear correlation of the relevance score and the level",
    "ndcg@10": "NDCG@10 per query, averaged over the queries with a relevant pair",
    "expected_level_error": "mean |E[y] - y| over the levels (000 eq. 11; the levels are ordered)",
}


# ---- pure computations ----------------------------------------------------------------------
def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix ``M[t, p]`` = number of items of true class t predicted as p."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def per_class(m: np.ndarray) -> list[dict]:
    """Per class c from the confusion matrix: precision = M[c,c] / sum_t M[t,c], recall =
    M[c,c] / sum_p M[c,p], support = sum_p M[c,p]; NaN where the denominator is 0."""
    out = []
    for c in range(m.shape[0]):
        tp, pred_c, true_c = m[c, c], m[:, c].sum(), m[c, :].sum()
        out.append({"class": c, "precision": tp / pred_c if pred_c else math.nan,
                    "recall": tp / true_c if true_c else math.nan, "support": int(true_c), "predicted": int(pred_c)})
    return out


def batch_class_mix(labels, n_classes: int) -> dict:
    """Counts per class of a batch's labels (``-1`` or None = not labeled yet)."""
    lab = [(-1 if x is None else int(x)) for x in labels]
    return {"counts": [sum(1 for x in lab if x == c) for c in range(n_classes)],
            "unlabeled": sum(1 for x in lab if x < 0), "total": len(lab)}


def caveats(*, n_test: int | None = None, lookalike_holdout: float | None = None, n_batch_labeled: int | None = None,
            per_class_support: dict | None = None, min_items: int = MIN_ITEMS) -> list[str]:
    """Human-readable warnings for figures that rest on fewer than ``min_items`` items."""
    out = []
    if n_test is not None and n_test < min_items:
        out.append(f"The metrics come from only {n_test} labeled test items (< {min_items}): one item moves accuracy by "
                   f"{1 / max(n_test, 1):.3f}; read them as rough.")
    if lookalike_holdout is not None and lookalike_holdout < min_items:
        out.append(f"The lookalike AUC rests on about {lookalike_holdout:.0f} held-out labeled items (< {min_items}); "
                   "it can swing widely from one round to the next.")
    if n_batch_labeled is not None and 0 < n_batch_labeled < min_items:
        out.append(f"The batch's class mix counts {n_batch_labeled} labeled items (< {min_items}).")
    small = [k for k, v in (per_class_support or {}).items() if 0 < v < 10]
    if small:
        out.append(f"Per-class precision and recall of {', '.join(small)} rest on fewer than 10 test items each.")
    empty = [k for k, v in (per_class_support or {}).items() if v == 0]
    if empty:
        out.append(f"No labeled test item of {', '.join(empty)}: its recall is undefined (shown as –).")
    return out


def modality_contributions(info: dict) -> list[dict]:
    """Every ``mean_contribution`` block (BMMAL Shapley shares, 002 eq. 3.12) in a batch's
    info, the top level and the parts of a mix: ``[{"strategy", "pool": {m: share},
    "selected": {m: share} | None, "weight": {m: w} | None}]``."""
    out = []

    def visit(d, name):
        if not isinstance(d, dict):
            return
        if isinstance(d.get("mean_contribution"), dict):
            out.append({"strategy": name, "pool": d["mean_contribution"], "selected": d.get("mean_contribution_selected"),
                        "weight": d.get("mean_weight")})
        for p in d.get("parts") or []:
            if isinstance(p, dict):
                visit(p.get("info"), p.get("strategy", name))

    visit(info, info.get("spec", "") if isinstance(info, dict) else "")
    return out


def lookalike_aucs(info: dict) -> list[dict]:
    """``[{"strategy", "auc", "n_holdout"?}]`` for every lookalike fit recorded in a batch's info."""
    out = []

    def visit(d, name):
        if not isinstance(d, dict):
            return
        if "lookalike_auc" in d:
            out.append({"strategy": name, "auc": d["lookalike_auc"], "n_holdout": d.get("lookalike_n_holdout")})
        for p in d.get("parts") or []:
            if isinstance(p, dict):
                visit(p.get("info"), p.get("strategy", name))

    visit(info, info.get("spec", "") if isinstance(info, dict) else "")
    return out


def selection_notes(info: dict) -> list[str]:
    """The ``note`` / ``shortfall`` a strategy recorded, at the top level and in each part of a mix."""
    out = []

    def visit(d, name):
        if not isinstance(d, dict):
            return
        if d.get("note"):
            out.append(f"{name}: {d['note']}" if name else str(d["note"]))
        elif d.get("shortfall") and not d.get("parts"):
            out.append(f"{name}: {d['shortfall']} items short of its quota" if name else f"{d['shortfall']} items short")
        for p in d.get("parts") or []:
            if isinstance(p, dict):
                visit(p.get("info"), p.get("strategy", ""))

    visit(info, "")
    return list(dict.fromkeys(out))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x, digits: int = 3) -> str:
    """A number for the page; ``–`` for missing / NaN (never a fake ``± 0``)."""
    return f"{x:.{digits}f}" if _finite(x) else "–"


# ---- I/O -------------------------------------------------------------------------------------
def _thumb(path, size: int = 112) -> str | None:
    from mmal.report.html import image_data_uri

    return image_data_uri(path, size, fmt="JPEG")


def _frames_thumb(path, n_frames: int = 3, size: int = 112) -> str | None:
    try:
        from PIL import Image

        from mmal.data.media import load_video_frames

        frames = load_video_frames(path, n_frames)
        frames = [f.copy() for f in frames]
        for f in frames:
            f.thumbnail((size, size))
        strip = Image.new("RGB", (sum(f.width for f in frames) + 2 * (len(frames) - 1), max(f.height for f in frames)), "white")
        x = 0
        for f in frames:
            strip.paste(f, (x, 0))
            x += f.width + 2
        buf = io.BytesIO()
        strip.save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001
        return None


def _audio_src(path, embed_max_bytes: int) -> str | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    if p.stat().st_size <= embed_max_bytes:
        import mimetypes

        mime = mimetypes.guess_type(p.name)[0] or "audio/wav"
        return f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode()
    return p.resolve().as_uri()


@dataclass
class _Items:
    pos: dict
    cols: dict = field(default_factory=dict)

    @classmethod
    def of(cls, ws: Workspace):
        t = ws.items
        ids = t.column("id").to_pylist()
        return cls({k: i for i, k in enumerate(ids)},
                   {c: t.column(c).to_pylist() for c in ("text", "image", "video", "audio") if c in t.column_names})

    def get(self, item_id, col):
        i = self.pos.get(item_id)
        return None if i is None or col not in self.cols else self.cols[col][i]


def _rounds(ws: Workspace) -> list[int]:
    rs = set(state.rounds(ws))
    rdir = ws.dir / "rounds"
    if rdir.is_dir():
        rs |= {int(p.name) for p in rdir.iterdir() if p.is_dir() and p.name.isdigit()}
    return sorted(rs)


def _load_pool(ws: Workspace, rnd: int):
    from mmal.workspace.pool_io import load_pool

    folder = ws.round_dir(rnd) / "pool"
    return load_pool(folder) if (folder / "ids.parquet").exists() else None


def _labels_as_of(ws: Workspace, rnd: int) -> dict[str, int]:
    """Latest label per item among rounds <= rnd (what round ``rnd``'s model could know)."""
    return state.labels_as_of(ws, rnd)


def _model_section(ws, rnd, names, items_split, min_items):
    pool = _load_pool(ws, rnd)
    metrics_path = ws.round_dir(rnd) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    sec = {"has_pool": pool is not None, "metrics": None, "per_class": None, "confusion": None, "n_test": None,
           "unimodal": [], "caveats": []}
    if metrics:
        keys = [k for k in METRIC_HELP if k in metrics and not isinstance(metrics[k], (dict, list))]
        sec["metrics"] = [(k, fmt(metrics[k]), METRIC_HELP[k]) for k in keys]
        sec["r_at_p"] = [(k[len("r_at_p"):], fmt(metrics[k])) for k in sorted(metrics)
                         if k.startswith("r_at_p") and k[len("r_at_p"):].isdigit()]
    if pool is not None:
        labels = ws.current_labels()
        test = [i for i, k in enumerate(pool.ids.tolist()) if items_split.get(k) == "test" and k in labels]
        n_classes = max(len(names), pool.n_classes)
        if test:
            y = np.array([labels[pool.ids[i]] for i in test], np.int64)
            probs = np.asarray(pool.probs[test])
            m = confusion(y, probs.argmax(1), n_classes)
            sec["n_test"] = len(test)
            sec["confusion"] = m.tolist()
            sec["per_class"] = [{**r, "name": names[r["class"]], "precision_s": fmt(r["precision"]), "recall_s": fmt(r["recall"])}
                                for r in per_class(m)]
            for key in sorted(pool.extras):
                if key.startswith("probs:"):
                    acc = float((np.asarray(pool.extras[key][test]).argmax(1) == y).mean())
                    sec["unimodal"].append((key.split(":", 1)[1], fmt(acc)))
            sec["caveats"] = caveats(n_test=len(test), min_items=min_items,
                                     per_class_support={names[r["class"]]: r["support"] for r in per_class(m)})
    elif metrics and "n_test" in metrics:
        sec["n_test"] = metrics["n_test"]
        sec["caveats"] = caveats(n_test=int(metrics["n_test"]), min_items=min_items)
    history = ws.round_dir(rnd) / "history.json"
    if history.exists():
        h = json.loads(history.read_text())
        sec["history"] = {"epochs": len(h.get("epochs", [])), "best_epoch": h.get("best_epoch"), "stopped_early": h.get("stopped_early")}
    return sec


def _lsb_holdout_estimate(ws: Workspace, rnd: int, items_split, holdout: float = 0.25) -> float:
    """Held-out items of the lookalike fit of a round-``rnd`` batch, when the batch info does
    not record it: ``ceil(holdout * L)`` with L the labeled non-test items of round ``rnd-1``
    (``lookalike_fit``'s default ``holdout = 0.25``)."""
    n_lab = sum(1 for k in _labels_as_of(ws, rnd - 1) if items_split.get(k) != "test")
    return float(math.ceil(holdout * n_lab))


def _batch_sections(ws, rnd, names, items, items_split, min_items, embed_audio_max_bytes):
    batches = [(b.batch_id, b.strategy, b.budget, b.info) for b in state.batches(ws, rnd)]
    if not batches:
        return []
    prev_pool = _load_pool(ws, rnd - 1)
    prev_pos = None if prev_pool is None else {k: i for i, k in enumerate(prev_pool.ids.tolist())}
    lab_rnd = state.round_labels(ws, rnd)
    known_before = _labels_as_of(ws, rnd - 1)
    n_frames = int(ws.setting("encode", "n_frames"))
    thumbs: dict = {}

    def view(item_id):
        if item_id not in thumbs:
            img = items.get(item_id, "image")
            vid = items.get(item_id, "video")
            v = {"id": item_id, "text": items.get(item_id, "text"),
                 "image": _thumb(img) if img else (_frames_thumb(vid, n_frames) if vid else None),
                 "audio": _audio_src(items.get(item_id, "audio"), embed_audio_max_bytes), "pred": None}
            if prev_pos is not None and item_id in prev_pos:
                p = np.asarray(prev_pool.probs[prev_pos[item_id]], np.float64)
                c = int(p.argmax())
                v["pred"], v["conf"] = (names[c] if c < len(names) else str(c)), fmt(float(p[c]), 2)
            thumbs[item_id] = v
        return thumbs[item_id]

    out = []
    for batch_id, strategy, budget, info in batches:
        rows = state.batch_items(ws, batch_id)
        labels = [lab_rnd.get(r[0]) for r in rows]
        mix = batch_class_mix(labels, len(names))
        pred_mix = None
        if prev_pos is not None:
            preds = [int(np.asarray(prev_pool.probs[prev_pos[r[0]]]).argmax()) for r in rows if r[0] in prev_pos]
            pred_mix = batch_class_mix(preds, len(names))["counts"]
        grid, seeds = [], {}
        for (item_id, rank, strat, score, reason), lab in zip(rows, labels):
            v = view(item_id)
            is_lsb = reason_is_seed(strat) and bool(reason) and reason in items.pos
            grid.append({**v, "rank": rank + 1, "strategy": strat, "score": fmt(score), "reason": reason,
                         "label": None if lab is None else names[int(lab)] if int(lab) < len(names) else str(lab),
                         "seed": reason if is_lsb else None})
            if is_lsb:
                seeds.setdefault(reason, []).append(grid[-1])
        table3 = []
        for seed_id, neigh in seeds.items():
            s = dict(view(seed_id))
            sl = known_before.get(seed_id)
            s["label"] = None if sl is None else (names[sl] if sl < len(names) else str(sl))
            table3.append({"seed": s, "neighbours": neigh})
        looks = lookalike_aucs(info)
        cav = []
        for lk in looks:
            n_h = lk["n_holdout"] if lk.get("n_holdout") is not None else _lsb_holdout_estimate(ws, rnd, items_split)
            lk["n_holdout_s"] = f"{n_h:.0f}" + ("" if lk.get("n_holdout") is not None else " (estimated: 25% of the labeled items)")
            lk["auc_s"] = fmt(lk["auc"])
            cav += caveats(lookalike_holdout=n_h, min_items=min_items)
        n_lab = mix["total"] - mix["unlabeled"]
        cav += caveats(n_batch_labeled=n_lab, min_items=min_items)
        cav += [f"Selection note: {n}" for n in selection_notes(info)]
        if info.get("shortfall"):
            cav.append(f"The batch is {info['shortfall']} items short of its budget {budget}.")
        cav = list(dict.fromkeys(cav))
        out.append({"batch_id": batch_id, "strategy": strategy, "budget": budget, "n": len(rows), "mix": mix,
                    "pred_mix": pred_mix, "grid": grid, "table3": table3, "lookalike": looks,
                    "contrib": modality_contributions(info), "caveats": cav,
                    "strategies": {s: sum(1 for r in rows if r[2] == s) for s in dict.fromkeys(r[2] for r in rows)}})
    return out


def write_workspace_report(directory, *, min_items: int = MIN_ITEMS, embed_audio_max_bytes: int = 256 * 1024) -> Path:
    """Write ``DIR/reports/round-<n>.html`` for every round and ``DIR/reports/index.html``;
    return the index's path.

    ``min_items``: figures from fewer items get a caveat. ``embed_audio_max_bytes``: audio
    files up to this size are embedded (the page stands alone), larger ones are linked.
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    ws = Workspace(directory)
    out_dir = ws.dir / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    items = _Items.of(ws)
    items_split = state.item_splits(ws)
    rounds = _rounds(ws)
    n_classes = ws.n_classes
    for r in rounds:
        pool = _load_pool(ws, r)
        if pool is not None:
            n_classes = max(n_classes, pool.n_classes)
    names = ws.class_names(n_classes)
    summary = []
    for r in rounds:
        model = _model_section(ws, r, names, items_split, min_items)
        batches = _batch_sections(ws, r, names, items, items_split, min_items, embed_audio_max_bytes)
        n_labeled = sum(1 for k in _labels_as_of(ws, r) if items_split.get(k) != "test")
        page = env.get_template("workspace_round.html").render(
            ws=str(ws.dir), round=r, rounds=rounds, names=names, model=model, batches=batches, n_labeled=n_labeled,
            min_items=min_items, confusion_max=max([max(row) for row in model["confusion"]] + [1]) if model["confusion"] else 1)
        path = out_dir / f"round-{r}.html"
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
        acc = next((v for k, v, _ in (model["metrics"] or []) if k == "accuracy"), "–")
        mf1 = next((v for k, v, _ in (model["metrics"] or []) if k == "macro_f1"), "–")
        summary.append({"round": r, "n_labeled": n_labeled, "n_test": model["n_test"], "accuracy": acc, "macro_f1": mf1,
                        "batches": [(b["batch_id"], b["strategy"], b["n"]) for b in batches], "caveat": bool(model["caveats"])})
    index = out_dir / "index.html"
    index.write_text(env.get_template("workspace_index.html").render(ws=str(ws.dir), summary=summary, names=names,
                                                                      min_items=min_items), encoding="utf-8")
    return index
