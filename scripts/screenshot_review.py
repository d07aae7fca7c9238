"""Regenerate docs/serve_dataset.png: the data-set view of `mmal serve` (filters, item table,
embedding map, an item opened from the map) on a small real Tux Paint workspace, in headless
Chromium.

    PYTHONPATH=src python scripts/screenshot_review.py [--out /tmp/mmal-review-demo] [--png docs/serve_dataset.png]

The workspace is the one of scripts/report_screenshot.py: 200 Tux Paint stamps, the text
tower only, two rounds (`entropy:0.5,lsb-knn:0.5`, budget 12, 10 of the 12 labeled), so the
round-1 scored pool holds at-selection probabilities and the suspect view has out-of-sample
predictions. Prints what the suspect view found. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_workspace(out: Path, n: int, budget: int, spec: str) -> Path:
    """init -> encode (text tower) -> train/score -> select -> label 10 of 12 -> train/score."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tomli_w

    from mmal.data.datasets import build
    from mmal.engine import encode_workspace
    from mmal.loop.workspace_round import score_workspace, select_workspace, train_workspace
    from mmal.workspace import Workspace, init_workspace
    from mmal.workspace.annotate import import_labels

    shutil.rmtree(out, ignore_errors=True)
    items = build("tuxpaint", out / "data", n=n, seed=0, progress=False)
    table = pq.read_table(items)
    t = table.to_pylist()
    names = sorted({r["category"] for r in t})
    gold = {r["id"]: r["label"] for r in t}
    labels = [None if r["split"] == "pool" else r["label"] for r in t]  # an AL workspace has an unlabeled pool
    table = table.set_column(table.column_names.index("label"), "label", pa.array(labels, pa.int64()))
    items = items.with_name("items_al.parquet")
    pq.write_table(table, items)
    ws_dir = out / "ws"
    ws = init_workspace(ws_dir, items)
    cfg = ws.config
    cfg["task"]["label_names"] = names
    cfg["task"]["n_classes"] = len(names)
    cfg["encoders"] = {"text": "text:minilm"}
    cfg.setdefault("model", {}).update({"fusion": "none"})
    cfg.setdefault("train", {}).update({"epochs": 100})
    (ws_dir / "mmal.toml").write_text(tomli_w.dumps(cfg))
    encode_workspace(ws_dir, progress=False)
    train_workspace(ws_dir, progress=False)
    score_workspace(ws_dir, progress=False)
    res = select_workspace(ws_dir, spec, budget)
    con = sqlite3.connect(ws_dir / "state.sqlite")
    sel = [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = ? ORDER BY rank", (res["batch"],))]
    con.close()
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "annotator"])
        for i in sel[:-2]:
            w.writerow([i, names[gold[i]], "demo"])
    import_labels(Workspace(ws_dir), out / "labels.csv")
    train_workspace(ws_dir, progress=False)
    score_workspace(ws_dir, progress=False)
    return ws_dir


def _wait(fn, what: str, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/mmal-review-demo")
    ap.add_argument("--png", default=str(ROOT / "docs" / "serve_dataset.png"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--spec", default="entropy:0.5,lsb-knn:0.5")
    ap.add_argument("--reuse", action="store_true", help="screenshot the workspace already in --out (skip building it)")
    a = ap.parse_args(argv)

    ws_dir = Path(a.out) / "ws" if a.reuse else build_workspace(Path(a.out), a.n, a.budget, a.spec)
    sys.path.insert(0, str(ROOT / "tests"))
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from serve_support import server
    from test_serve_browser import chromium_driver

    import httpx

    with server(ws_dir, "--annotator", "demo") as (_, base, _tok):
        sus = httpx.get(base + "/api/suspects").json()
        print(f"suspect view: {sus['n_labeled']} labeled, {sus['n_out_of_sample']} out of sample {sus['counts']}, "
              f"{sus['total']} suspects; top: {[(s['id'], s['label_name'], s['judged_pred_name'], s['self_confidence']) for s in sus['items'][:3]]}")
        drv = chromium_driver(1400, 900)
        try:
            drv.get(base + "/dataset?sort=conf")  # least confident first
            _wait(lambda: drv.execute_script("return document.body.dataset.ready === '1' && "
                                             "document.getElementById('map').dataset.ready === '1'"), "the page and its map")
            first = drv.find_element(By.CSS_SELECTOR, "#items tbody tr").get_attribute("data-item")
            x, y = drv.execute_script("return window.mmalMap.pixelOf(arguments[0])", first)
            ActionChains(drv).move_to_element_with_offset(drv.find_element(By.ID, "map"), int(x - 280), int(y - 220)).click().perform()
            _wait(lambda: drv.find_element(By.ID, "detail").get_attribute("data-item") == first, "the item panel")
            _wait(lambda: drv.execute_script("return document.body.dataset.pending === '0' && "
                                             "Array.from(document.images).every(i => i.complete || "
                                             "i.getBoundingClientRect().top > innerHeight)"), "the pictures on screen")
            Path(a.png).parent.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(a.png)
        finally:
            drv.quit()
    from PIL import Image

    with Image.open(a.png) as im:  # 256 colours: a third of the bytes, same look for a page
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(a.png, optimize=True)
    print(a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
