"""Regenerate docs/report.png and docs/serve.png: a small Tux Paint workspace taken through
two rounds, its `mmal report` page for round 1 and its `mmal serve` page, screenshotted in
headless Chromium.

    PYTHONPATH=src python scripts/report_screenshot.py [--out /tmp/report-demo] [--png docs/report.png]

Text tower only (fast); images and audio are shown, not encoded. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/mmal-report-demo")
    ap.add_argument("--png", default=str(ROOT / "docs" / "report.png"))
    ap.add_argument("--serve-png", default=str(ROOT / "docs" / "serve.png"), help="screenshot of `mmal serve` on the same workspace")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--spec", default="entropy:0.5,lsb-knn:0.5")
    a = ap.parse_args(argv)

    import pyarrow.parquet as pq
    import tomli_w

    from mmal.data.datasets import build
    from mmal.engine import encode_workspace
    from mmal.loop.workspace_round import evaluate_workspace, score_workspace, select_workspace, train_workspace
    from mmal.report.workspace import write_workspace_report
    from mmal.workspace import Workspace, init_workspace
    from mmal.workspace.annotate import import_labels

    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    items = build("tuxpaint", out / "data", n=a.n, seed=0, progress=False)
    table = pq.read_table(items)
    t = table.to_pylist()
    names = sorted({r["category"] for r in t})
    gold = {r["id"]: r["label"] for r in t}
    # the dataset carries gold labels everywhere (for simulation); an AL workspace has an unlabeled pool
    import pyarrow as pa

    labels = [None if r["split"] == "pool" else r["label"] for r in t]
    table = table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int64()))
    items = items.with_name("items_al.parquet")
    pq.write_table(table, items)
    ws_dir = out / "ws"
    ws = init_workspace(ws_dir, items)
    cfg = ws.config
    cfg["task"]["label_names"] = names
    cfg["task"]["n_classes"] = len(names)
    cfg["encoders"] = {"text": "text:minilm"}
    cfg.setdefault("model", {}).update({"fusion": "none"})  # the default late-fusion learner, text only
    cfg.setdefault("train", {}).update({"epochs": 100})
    (ws_dir / "mmal.toml").write_text(tomli_w.dumps(cfg))
    encode_workspace(ws_dir, progress=False)
    for rnd in range(2):
        train_workspace(ws_dir, progress=False)
        score_workspace(ws_dir, progress=False)
        evaluate_workspace(ws_dir)
        if rnd == 1:
            break
        res = select_workspace(ws_dir, a.spec, a.budget)
        con = sqlite3.connect(ws_dir / "state.sqlite")
        sel = [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = ? ORDER BY rank", (res["batch"],))]
        con.close()
        with open(out / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "label", "annotator"])
            for i in sel[:-2]:
                w.writerow([i, names[gold[i]], "demo"])
        import_labels(Workspace(ws_dir), out / "labels.csv")
    index = write_workspace_report(ws_dir)
    page = index.parent / "round-1.html"
    sys.path.insert(0, str(ROOT / "tests"))
    from test_serve_browser import chromium_driver

    drv = chromium_driver(1280, 2600)
    try:
        drv.get(page.as_uri())
        h = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(1280, min(int(h) + 40, 3400))
        Path(a.png).parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(a.png)
    finally:
        drv.quit()
    if a.serve_png:  # the review page of the round-1 batch (10 of 12 labeled): the first unlabeled card is highlighted
        from serve_support import server

        with server(ws_dir, "--annotator", "demo") as (_, base, _tok):
            drv = chromium_driver(1280, 1000)
            try:
                drv.get(base + "/")
                drv.execute_script("return document.body.dataset.ready")
                drv.save_screenshot(a.serve_png)
            finally:
                drv.quit()
    from PIL import Image

    for png in filter(None, (a.png, a.serve_png)):
        with Image.open(png) as im:  # 256 colours: a third of the bytes, same look for a page
            im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    print(page)
    print(a.png, a.serve_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
