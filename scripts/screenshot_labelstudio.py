"""Regenerate docs/labelstudio_order.png: Label Studio's Data Manager listing the tasks in the
order of mmal's prediction score, after one round through ``mmal labelstudio-backend``.

    PYTHONPATH=src python scripts/screenshot_labelstudio.py [--out /tmp/mmal-ls-demo] [--png docs/labelstudio_order.png]

A 40-item text workspace (MiniLM text tower, linear learner) selects a batch; a real Label
Studio (the test suite's cached one, ``tests/labelstudio_server.py``) gets the batch, the
backend and its webhook; the batch is annotated through Label Studio's API, *Start Training*
runs the next round, the new batch is imported and Label Studio retrieves the predictions;
the Data Manager, ordered by prediction score ascending, is screenshotted in headless
Chromium. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ["animal", "vehicle"]
WORDS = {"animal": ["cat", "dog", "horse", "rabbit", "tiger", "owl", "goat", "whale", "fox", "frog"],
         "vehicle": ["bus", "truck", "tram", "bicycle", "scooter", "ferry", "tractor", "van", "taxi", "train"]}
ADJ = ["small", "big"]


def rows() -> list[dict]:
    """40 text items of two classes: 6 labeled train items, 4 test items, 30 in the pool."""
    out = []
    for c in CLASSES:
        for k, w in enumerate(WORDS[c]):
            for a in ADJ:
                split = "train" if k < 3 and a == ADJ[0] else ("test" if k == len(WORDS[c]) - 1 else "pool")
                out.append({"id": f"{w}-{a}", "text": f"a photo of a {a} {w}", "split": split, "gold": c})
    return out


def write_items(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rs = rows()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [r["id"] for r in rs], "text": [r["text"] for r in rs], "split": [r["split"] for r in rs],
                             "label": [None if r["split"] == "pool" else r["gold"] for r in rs]}), path)
    return path


def _get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _wait(fn, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            got = fn()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/mmal-ls-demo")
    ap.add_argument("--png", default=str(ROOT / "docs" / "labelstudio_order.png"))
    ap.add_argument("--budget", type=int, default=6)
    a = ap.parse_args(argv)

    import tomli_w

    import labelstudio_server as lss
    from mmal.engine import encode_workspace
    from mmal.loop.workspace_round import score_workspace, select_workspace, train_workspace
    from mmal.workspace import init_workspace
    from test_serve_browser import chromium_driver

    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    ws = init_workspace(out / "ws", write_items(out / "data" / "items.parquet"))
    cfg = ws.config
    cfg["encoders"] = {"text": "text:minilm"}
    cfg.setdefault("model", {})["learner"] = "linear"
    (ws.dir / "mmal.toml").write_text(tomli_w.dumps(cfg))
    encode_workspace(ws.dir, progress=False)
    train_workspace(ws.dir, progress=False)
    score_workspace(ws.dir, progress=False)
    select_workspace(ws.dir, "entropy", a.budget)
    gold = {r["id"]: r["gold"] for r in rows()}

    token = secrets.token_urlsafe(16)
    port = lss.free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(ML_BLOCK_LOCAL_IP="false", SSRF_PROTECTION_ENABLED="false")  # a loopback backend (docs/labelstudio.md)
    backend = subprocess.Popen([sys.executable, "-m", "mmal.cli", "labelstudio-backend", str(ws.dir), "--port", str(port),
                                "--budget", str(a.budget)], env=dict(os.environ, MMAL_BACKEND_TOKEN=token, MMAL_PROGRESS="0"))
    exe = lss.fresh_data_dir(out / "ls-data")
    srv = lss.Server(exe, out / "ls-data", out / "ls.log")
    try:
        _wait(lambda: _get(url + "/health", token), 60, "the backend")
        srv.wait_healthy(300)
        c = lss.Client(srv.url).login()
        exports = ws.dir / "exports"
        pid = c.request("POST", "/api/projects", {"title": "mmal: next batch first",
                                                  "label_config": (exports / "batch-0001.labelstudio-config.xml").read_text()})["id"]
        c.request("POST", f"/api/projects/{pid}/import", json.loads((exports / "batch-0001.labelstudio.json").read_text()))
        ml = c.request("POST", "/api/ml", {"url": url, "project": pid, "title": "mmal", "auth_method": "BASIC_AUTH",
                                           "basic_auth_user": "mmal", "basic_auth_pass": token})
        basic = "Basic " + base64.b64encode(f"mmal:{token}".encode()).decode()
        for h in c.request("GET", f"/api/webhooks/?project={pid}"):
            if h["url"] == url + "/webhook":
                c.request("PATCH", f"/api/webhooks/{h['id']}/", {"headers": {"Authorization": basic}})
        tasks = c.request("GET", f"/api/tasks?project={pid}&page_size=100")
        for t in tasks["tasks"] if isinstance(tasks, dict) else tasks:
            c.request("POST", f"/api/tasks/{t['id']}/annotations", {"result": [
                {"from_name": "label", "to_name": "text", "type": "choices",
                 "value": {"choices": [gold[t["data"]["item_id"]]]}}], "was_cancelled": False})
        con = sqlite3.connect(ws.dir / "state.sqlite")
        _wait(lambda: con.execute("SELECT COUNT(*) FROM labels WHERE source LIKE 'label-studio%'").fetchone()[0] == a.budget,
              30, "the annotations")
        con.close()
        c.request("POST", f"/api/ml/{ml['id']}/train", {}, raw=True)
        job = _wait(lambda: (lambda j: j if j and j["status"] != "started" else None)(_get(url + "/status", token)["job"]),
                    300, "the training job")
        if job["status"] != "finished":
            raise SystemExit(f"training failed: {job['error']}")
        new = json.loads(Path(job["result"]["tasks_file"]).read_text())
        for t in new:
            t.pop("predictions", None)  # Label Studio asks /predict for them
        c.request("POST", f"/api/projects/{pid}/import", new)
        c.request("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
                  {"selectedItems": {"all": True, "excluded": []}})
        c.request("PATCH", f"/api/projects/{pid}", {"model_version": job["result"]["model_version"], "show_collab_predictions": True})
        hide = ["inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators", "annotations_results",
                "annotations_ids", "file_upload", "storage_filename", "created_at", "updated_at", "updated_by",
                "avg_lead_time", "draft_exists", "predictions_results", "data.round", "data.strategy", "data.reason"]
        hidden = [f"tasks:{k}" for k in hide]
        view = c.request("POST", "/api/dm/views/", {"project": pid, "data": {
            "title": "mmal order", "ordering": ["tasks:predictions_score"],
            "hiddenColumns": {"explore": hidden, "labeling": hidden}}})
        drv = chromium_driver(1200, 1080)
        try:
            drv.get(srv.url + "/user/login/")
            drv.find_element("name", "email").send_keys(lss.USER)
            drv.find_element("name", "password").send_keys(lss.PASSWORD)
            drv.find_element("css selector", "button[type=submit], input[type=submit]").click()
            _wait(lambda: "/user/login" not in drv.current_url, 60, "the login")
            drv.get(f"{srv.url}/projects/{pid}/data?tab={view['id']}")
            _wait(lambda: drv.page_source.count("mmal-round-1") >= 2 * a.budget, 60, "the Data Manager's rows")
            time.sleep(2)  # images and fonts settle
            Path(a.png).parent.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(a.png)
        finally:
            drv.quit()
    finally:
        srv.stop()
        backend.terminate()
        backend.wait(timeout=20)
    from PIL import Image

    with Image.open(a.png) as im:  # 256 colours: a third of the bytes, same look for a page
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(a.png, optimize=True)
    print(a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
