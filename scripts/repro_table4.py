"""Reproduce 000 Table 4 on Tux Paint: no audio vs avg-pool vs VLMAE, random vs audio-sensitive test set.

Audio-sensitive test set (built here, documented in docs/results/table4_tuxpaint.md):
each test item that has a spoken description gets a twin whose caption is replaced by
the generic phrase "a picture", whose image is degraded (downscaled to 6x6 px, upscaled
back, blended 70% towards mid-grey), and whose audio is the same recording. Models train
on the clean train+pool items (all labeled) and are evaluated on both test sets.

The learner is the default ``late-fusion``: the three conditions differ only in
how audio reaches the fused linear layer (``fusion`` = none / avgpool / vlmae). Each seed
trains the three on the same items; a paired t-test over seeds compares the conditions.

Usage: python scripts/repro_table4.py [--data DIR] [--seeds 0,1,2,3,4] [--learner late-fusion] [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GENERIC = "a picture"


def build_audio_sensitive(items_path: Path, out_dir: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    t = pq.read_table(items_path).to_pylist()
    base = items_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "degraded").mkdir(exist_ok=True)
    rows = []
    for r in t:
        r = {k: r[k] for k in ("id", "label", "split", "text", "image", "audio")}
        for c in ("image", "audio"):
            if r[c]:
                r[c] = str((base / r[c]).resolve())
        rows.append(r)
        if r["split"] == "test" and r["audio"]:
            img = Image.open(r["image"]).convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img).convert("RGB")
            small = img.resize((6, 6), Image.BILINEAR).resize(img.size, Image.NEAREST)
            grey = Image.new("RGB", img.size, (128, 128, 128))
            deg = Image.blend(small, grey, 0.7)
            p = (out_dir / "degraded" / (r["id"] + ".png")).resolve()
            deg.save(p)
            rows.append({"id": "as:" + r["id"], "label": r["label"], "split": "test", "text": GENERIC, "image": str(p), "audio": r["audio"]})
    path = out_dir / "items.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="demo/tuxpaint", help="folder of a built tuxpaint dataset (built if missing)")
    ap.add_argument("--work", default="demo/table4")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--learner", default="late-fusion", help="late-fusion (default) or fusion")
    args = ap.parse_args(argv)
    from mmal.data.datasets import build
    from mmal.engine import encode_workspace
    from mmal.features.pipeline import load_features
    from mmal.loop.core import train_model
    from mmal.metrics.multiclass import multiclass_metrics
    from mmal.workspace import Workspace, init_workspace

    data = Path(args.data)
    if not (data / "items.parquet").exists():
        build("tuxpaint", data, seed=0)
    work = Path(args.work)
    items = build_audio_sensitive(data / "items.parquet", work / "items")
    wsdir = work / "ws"
    ws = Workspace(wsdir) if (wsdir / "mmal.toml").exists() else init_workspace(wsdir, items, force=True)
    encode_workspace(wsdir, progress=False)
    t = ws.items
    ids = np.array(t.column("id").to_pylist())
    gold = np.array(t.column("label").to_pylist())
    split = np.array(t.column("split").to_pylist())
    feats = load_features(ws)
    train = np.flatnonzero(split != "test")
    twin = np.char.startswith(ids.astype(str), "as:")
    test_random = np.flatnonzero((split == "test") & ~twin)
    test_audio = np.flatnonzero(twin)
    n_classes = int(gold.max()) + 1
    rows = []
    t0 = time.time()
    for fusion in ("none", "avgpool", "vlmae"):
        for seed in [int(s) for s in args.seeds.split(",")]:
            model, hist = train_model(feats, gold, train, n_classes, learner=args.learner,
                                      model_overrides={"fusion": fusion}, seed=seed)
            for name, idx in (("random", test_random), ("audio-sensitive", test_audio)):
                m = multiclass_metrics(gold[idx], model.predict_proba(feats, idx))
                m.pop("per_class", None), m.pop("confusion", None)
                rows.append({"fusion": fusion, "seed": seed, "test": name, **m})
            print(f"{fusion} seed {seed}: {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table4_tuxpaint.json").write_text(json.dumps({"rows": rows, "n_train": int(len(train)), "n_test_random": int(len(test_random)),
                                                          "n_test_audio_sensitive": int(len(test_audio)), "seconds": round(time.time() - t0),
                                                          "learner": args.learner}, indent=1, default=float))
    keys = [("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("macro_f1", "macro-F1"),
            ("auc_ovr", "AUC (one vs rest)")]

    def get(r, k):
        if "." in k:
            a, b = k.split(".")
            return r[a][b]
        return r[k]

    lines = ["| test set | fusion | " + " | ".join(h for _, h in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for test in ("random", "audio-sensitive"):
        for fusion in ("none", "avgpool", "vlmae"):
            sel = [r for r in rows if r["test"] == test and r["fusion"] == fusion]
            cells = []
            for k, _ in keys:
                v = np.array([get(r, k) for r in sel], float)
                cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
            lines.append(f"| {test} | {fusion} | " + " | ".join(cells) + " |")
    from scipy.stats import ttest_rel

    lines += ["", "Paired t-test over seeds (accuracy, same seed = same training set):", "",
              "| test set | comparison | mean difference | p |", "|---|---|---|---|"]
    for test in ("random", "audio-sensitive"):
        acc = {f: np.array([r["accuracy"] for r in rows if r["test"] == test and r["fusion"] == f]) for f in ("none", "avgpool", "vlmae")}
        for a, b in (("vlmae", "avgpool"), ("vlmae", "none"), ("avgpool", "none")):
            d = acc[a] - acc[b]
            p = float(ttest_rel(acc[a], acc[b]).pvalue) if len(d) > 1 and np.any(d != 0) else float("nan")
            lines.append(f"| {test} | {a} − {b} | {d.mean():+.3f} | {p:.3f} |")
    table = "\n".join(lines)
    (out / "table4_tuxpaint.table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
