"""``mmal labelstudio-backend``: the Label Studio ML backend over a workspace.

The unit tests drive the HTTP app in-process (Starlette's test client) on a tiny text-only
workspace with synthetic cached features (``text_ws``) and the cheap ``linear`` learner.
The last test connects the backend to a real Label Studio (``tests/labelstudio_server.py``)
and runs the round trip: annotations through Label Studio's API arrive as labels, Start
Training trains, scores and selects, and Label Studio stores the next round's predictions.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import threading
import time

import numpy as np
import pytest

from conftest import run_cli, write_items
from text_ws import _fake_features, _rows

TOKEN = "s3cret-token"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"mmal:{TOKEN}".encode()).decode()}
BUDGET = 3


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory):
    """16 items (6 pool), text features only, linear learner; round 0 scored, batch 1 of 3 selected."""
    from mmal.loop.workspace_round import score_workspace, select_workspace, train_workspace
    from mmal.workspace import init_workspace

    tmp = tmp_path_factory.mktemp("mlb")
    ws = init_workspace(tmp / "ws", write_items(tmp / "src", _rows()))
    ws.config.setdefault("model", {})["learner"] = "linear"
    ws.save_config()
    _fake_features(ws.dir)
    train_workspace(ws.dir, progress=False)
    score_workspace(ws.dir, progress=False)
    select_workspace(ws.dir, "entropy", BUDGET)
    return ws.dir


@pytest.fixture
def ws_dir(base_ws, tmp_path):
    shutil.copytree(base_ws, tmp_path / "ws")
    return tmp_path / "ws"


def client(ws_dir, job=None, **kw):
    from starlette.testclient import TestClient

    from mmal.serve.ml_backend import LabelStudioBackend
    from mmal.serve.ml_backend_app import create_backend_app

    backend = LabelStudioBackend(ws_dir, budget=BUDGET, job=job)
    c = TestClient(create_backend_app(backend, token=TOKEN, **kw), raise_server_exceptions=False)
    c.backend = backend
    return c


def sql(ws_dir, query, args=()):
    con = sqlite3.connect(ws_dir / "state.sqlite")
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def batch_ranks(ws_dir) -> dict[str, int]:
    """item -> rank in the latest batch, read from the database."""
    return dict(sql(ws_dir, "SELECT item_id, rank FROM batch_items WHERE batch_id = (SELECT MAX(batch_id) FROM batches)"))


def pool_argmax(ws_dir, rnd) -> dict[str, int]:
    from mmal.workspace.pool_io import load_pool

    pool = load_pool(ws_dir / "rounds" / str(rnd) / "pool")
    return {k: int(np.argmax(p)) for k, p in zip(pool.ids.tolist(), np.asarray(pool.probs))}


def class_names(ws_dir) -> list[str]:
    from mmal.workspace import Workspace

    return Workspace(ws_dir).class_names(2)


def one_line_error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) >= {"error"} and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


def choice_event(action, task_id, ann_id, item, choice, round_=1, project=7):
    return {"action": action, "project": {"id": project, "title": "p"},
            "task": {"id": task_id, "data": {"item_id": item, "round": round_, "text": "x"}},
            "annotation": {"id": ann_id, "completed_by": 3, "was_cancelled": False,
                           "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                       "value": {"choices": [choice]}}]}}


# ---- auth, errors --------------------------------------------------------------------------
def test_auth_is_required_on_every_route(ws_dir):
    c = client(ws_dir)
    for method, path in (("GET", "/health"), ("POST", "/predict"), ("POST", "/webhook"), ("GET", "/nope")):
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"mmal:wrong").decode()},
                        {"Authorization": "Basic " + base64.b64encode(f"other:{TOKEN}".encode()).decode()},
                        {"Authorization": "Basic !!notbase64"}, {"Authorization": "Bearer wrong"}):
            r = c.request(method, path, headers=headers, json={"action": "START_TRAINING"})
            one_line_error(r, 401)
            assert r.headers["www-authenticate"].startswith("Basic")
    assert c.backend.jobs.latest() is None  # the refused START_TRAINING started nothing
    assert c.get("/health", headers=AUTH).status_code == 200
    assert c.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_bad_requests_are_json_errors(ws_dir):
    c = client(ws_dir, max_body_bytes=2000)
    assert "no route /nope" in one_line_error(c.get("/nope", headers=AUTH), 404)
    assert "GET is not allowed" in one_line_error(c.get("/predict", headers=AUTH), 405)
    assert "not JSON" in one_line_error(c.post("/webhook", headers=AUTH, content=b"{nope"), 400)
    assert "not JSON" in one_line_error(c.post("/webhook", headers=AUTH, content=b""), 400)
    assert "not UTF-8" in one_line_error(c.post("/webhook", headers=AUTH, content=b'{"a": "\xff"}'), 400)
    assert "JSON object, got a JSON list" in one_line_error(c.post("/webhook", headers=AUTH, json=[1]), 400)
    assert "field 'action'" in one_line_error(c.post("/webhook", headers=AUTH, json={"action": 5}), 400)
    msg = one_line_error(c.post("/webhook", headers=AUTH, json={"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}), 400)
    assert "field 'task'" in msg
    big = {"action": "PROJECT_UPDATED", "pad": "x" * 3000}
    assert "larger than 2000 bytes" in one_line_error(c.post("/webhook", headers=AUTH, json=big), 413)
    # without Content-Length (a chunked body): refused once it passes the cap
    chunks = (b'{"pad": "' + b"x" * 900 + b'"' if i == 0 else b"y" * 900 for i in range(4))
    assert "larger than" in one_line_error(c.post("/webhook", headers=AUTH, content=chunks), 413)
    assert "field 'tasks'" in one_line_error(c.post("/predict", headers=AUTH, json={"tasks": []}), 400)
    assert "field 'tasks[0].data'" in one_line_error(c.post("/predict", headers=AUTH, json={"tasks": [{"id": 1}]}), 400)
    # an action the backend does not act on is acknowledged, not refused
    r = c.post("/webhook", headers=AUTH, json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert r.status_code == 200 and r.json() == {"status": "ignored", "action": "PROJECT_UPDATED"}


def test_webhook_annotation_errors_name_the_field(ws_dir):
    c = client(ws_dir)
    item = next(iter(batch_ranks(ws_dir)))
    names = class_names(ws_dir)
    r = c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", 1, 10, item, "no-such-class"))
    msg = one_line_error(r, 400)
    assert "annotation 10 of task 1" in msg and "field 'label'" in msg and "'no-such-class'" in msg
    r = c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", 2, 11, "nope", names[0]))
    assert "unknown item id 'nope'" in one_line_error(r, 400)
    ev = choice_event("ANNOTATION_CREATED", 3, 12, item, names[0])
    ev["annotation"]["result"][0]["value"]["choices"] = names  # two choices for a single-choice control
    assert "exactly one choice" in one_line_error(c.post("/webhook", headers=AUTH, json=ev), 400)
    assert sql(ws_dir, "SELECT COUNT(*) FROM labels WHERE source LIKE 'label-studio%'") == [(0,)]


# ---- predict -------------------------------------------------------------------------------
def test_predict_serves_the_scored_pool_in_batch_order(ws_dir):
    from annot_ws import digest

    c = client(ws_dir)
    before = digest(ws_dir)
    ranks = batch_ranks(ws_dir)
    assert sorted(ranks.values()) == list(range(BUDGET))
    pool_items = [r[0] for r in sql(ws_dir, "SELECT id FROM items WHERE split = 'pool' ORDER BY id")]
    other = [i for i in pool_items if i not in ranks][:2]
    tasks = [{"id": 100 + k, "data": {"item_id": i}} for k, i in enumerate(list(ranks) + other)]
    r = c.post("/predict", headers=AUTH, json={"tasks": tasks, "label_config": "<View/>"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "mmal-round-0" and len(body["results"]) == len(tasks)
    top, names = pool_argmax(ws_dir, 0), class_names(ws_dir)
    for t, res in zip(tasks, body["results"]):
        item = t["data"]["item_id"]
        assert res["model_version"] == "mmal-round-0"
        assert res["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                  "value": {"choices": [names[top[item]]]}}]
        assert res["score"] == (ranks[item] / BUDGET if item in ranks else 1.0)
    ordered = [t["data"]["item_id"] for t, _ in sorted(zip(tasks, body["results"]), key=lambda p: p[1]["score"])]
    assert ordered[:BUDGET] == sorted(ranks, key=ranks.get)  # ascending score = mmal's order, batch first
    assert digest(ws_dir) == before  # /predict reads; it never trains or writes


def test_predict_unknown_tasks(ws_dir):
    c = client(ws_dir)
    item = next(iter(batch_ranks(ws_dir)))
    r = c.post("/predict", headers=AUTH, json={"tasks": [{"id": 5, "data": {"item_id": "ghost"}}, {"id": 6, "data": {}}]})
    msg = one_line_error(r, 404)
    assert "task 5" in msg and "'ghost'" in msg and "other 1 tasks" in msg
    r = c.post("/predict", headers=AUTH, json={"tasks": [{"id": 5, "data": {"item_id": "ghost"}},
                                                        {"id": 6, "data": {"item_id": item}}]})
    assert r.status_code == 200
    ghost, known = r.json()["results"]
    assert ghost == {"result": [], "score": None, "model_version": "mmal-round-0"}
    assert known["result"][0]["value"]["choices"] == [class_names(ws_dir)[pool_argmax(ws_dir, 0)[item]]]


def test_predict_before_any_score_is_409(ws_dir):
    shutil.rmtree(ws_dir / "rounds" / "0" / "pool")
    c = client(ws_dir)
    item = next(iter(batch_ranks(ws_dir)))
    assert "no scored pool yet" in one_line_error(c.post("/predict", headers=AUTH, json={"tasks": [{"data": {"item_id": item}}]}), 409)
    assert c.post("/setup", headers=AUTH, json={"project": "1.1"}).json() == {"model_version": None}


def test_setup_checks_the_labeling_config(ws_dir):
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import export_round

    cfg = open(export_round(ws_dir, 1)["batches"][1]["labelstudio_config"]).read()
    c = client(ws_dir)
    r = c.post("/setup", headers=AUTH, json={"project": "3.17", "schema": cfg, "hostname": "http://x", "access_token": "t"})
    assert r.status_code == 200 and r.json() == {"model_version": "mmal-round-0"}
    names = Workspace(ws_dir).class_names(2)
    from xml.sax.saxutils import quoteattr

    wrong = cfg.replace(f"value={quoteattr(names[1])}", 'value="dog"')
    assert wrong != cfg
    msg = one_line_error(c.post("/setup", headers=AUTH, json={"schema": wrong}), 400)
    assert "'dog'" in msg and repr(names[1]) in msg
    assert "no <Choices" in one_line_error(c.post("/setup", headers=AUTH, json={"schema": "<View><Text name='t' value='$t'/></View>"}), 400)
    assert "not XML" in one_line_error(c.post("/setup", headers=AUTH, json={"schema": "<View"}), 400)


# ---- webhook: labels -----------------------------------------------------------------------
def test_annotation_created_updated_deleted(ws_dir):
    c = client(ws_dir)
    names = class_names(ws_dir)
    a, b = list(batch_ranks(ws_dir))[:2]
    src = "label-studio project 7 annotation 21"

    def label_rows():
        return sql(ws_dir, "SELECT item_id, round, label, source, annotator FROM labels WHERE source LIKE 'label-studio%' "
                           "ORDER BY item_id")

    r = c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", 1, 21, a, names[1]))
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert label_rows() == [(a, 1, 1, src, "3")]
    again = c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", 1, 21, a, names[1])).json()
    assert (again["stored"], again["unchanged"]) == (0, 1)  # idempotent, as `mmal label`
    c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", 2, 22, b, names[0]))
    r = c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_UPDATED", 1, 21, a, names[0]))
    assert r.json()["stored"] == 1
    assert label_rows() == sorted([(a, 1, 0, src, "3"), (b, 1, 0, "label-studio project 7 annotation 22", "3")])
    # Label Studio's delete event carries only the annotation ids
    r = c.post("/webhook", headers=AUTH, json={"action": "ANNOTATIONS_DELETED", "project": {"id": 7},
                                               "annotations": [{"id": 21}]})
    assert r.status_code == 200 and r.json()["removed"] == 1 and r.json()["items"] == [a]
    assert label_rows() == [(b, 1, 0, "label-studio project 7 annotation 22", "3")]
    hist = sql(ws_dir, "SELECT round, old_label, new_label, source FROM label_history WHERE item_id = ? ORDER BY seq", (a,))
    assert hist == [(1, None, 1, src), (1, 1, 0, src), (1, 0, None, src + " (deleted)")]
    # the same annotation id in another project is another annotation: nothing of project 7 goes
    c.post("/webhook", headers=AUTH, json={"action": "ANNOTATIONS_DELETED", "project": {"id": 8}, "annotations": [{"id": 22}]})
    assert len(label_rows()) == 1
    # a label that someone else changed since is not removed by the annotation's deletion
    from mmal.workspace import Workspace
    from mmal.workspace.state import put_labels

    put_labels(Workspace(ws_dir), [(b, 1, 1)], source="serve")
    c.post("/webhook", headers=AUTH, json={"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": [{"id": 22}]})
    assert sql(ws_dir, "SELECT label, source FROM labels WHERE item_id = ? AND round = 1", (b,)) == [(1, "serve")]


def test_bulk_annotations_created(ws_dir):
    c = client(ws_dir)
    names = class_names(ws_dir)
    items = list(batch_ranks(ws_dir))[:2]
    evs = [choice_event("ANNOTATIONS_CREATED", 60 + k, 70 + k, i, names[k]) for k, i in enumerate(items)]
    body = {"action": "ANNOTATIONS_CREATED", "project": {"id": 7}, "annotation": [e["annotation"] for e in evs],
            "task": [e["task"] for e in evs]}
    r = c.post("/webhook", headers=AUTH, json=body)
    assert r.status_code == 200 and r.json()["stored"] == 2, r.text
    got = sql(ws_dir, "SELECT item_id, label, source FROM labels WHERE source LIKE 'label-studio%' ORDER BY item_id")
    assert got == sorted((i, k, f"label-studio project 7 annotation {70 + k}") for k, i in enumerate(items))
    body["task"] = body["task"][:1]
    assert "2 annotations but 1 tasks" in one_line_error(c.post("/webhook", headers=AUTH, json=body), 400)


def test_skipped_annotation_clears_its_label(ws_dir):
    c = client(ws_dir)
    item = next(iter(batch_ranks(ws_dir)))
    c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", 1, 30, item, class_names(ws_dir)[0]))
    ev = choice_event("ANNOTATION_UPDATED", 1, 30, item, class_names(ws_dir)[0])
    ev["annotation"]["was_cancelled"] = True
    assert c.post("/webhook", headers=AUTH, json=ev).json()["removed"] == 1
    assert sql(ws_dir, "SELECT COUNT(*) FROM labels WHERE item_id = ? AND round = 1", (item,)) == [(0,)]


# ---- webhook: training ---------------------------------------------------------------------
def test_second_start_training_is_busy_and_status_reports_the_job(ws_dir):
    gate, entered = threading.Event(), threading.Event()

    def job(on_stage):
        on_stage("train")
        entered.set()
        assert gate.wait(30)
        return {"round": 1, "batch": 2}

    c = client(ws_dir, job=job)
    assert c.get("/status", headers=AUTH).json()["job"] is None
    r = c.post("/webhook", headers=AUTH, json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 200 and r.json() == {"job": "mmal-train-1", "status": "started"}
    assert entered.wait(10)
    busy = c.post("/webhook", headers=AUTH, json={"action": "START_TRAINING"})
    assert "already running (mmal-train-1, stage train)" in one_line_error(busy, 409)
    assert busy.json()["job"]["job"] == "mmal-train-1"
    st = c.get("/status", headers=AUTH).json()["job"]
    assert (st["job"], st["status"], st["stage"]) == ("mmal-train-1", "started", "train")
    assert c.post("/job_status", headers=AUTH, json={"job": "mmal-train-1"}).json()["job_status"] == "started"
    gate.set()
    c.backend.jobs.wait(10)
    st = c.get("/health", headers=AUTH).json()["job"]
    assert st["status"] == "finished" and st["result"] == {"round": 1, "batch": 2} and st["finished_at"] >= st["started_at"]
    r = c.post("/webhook", headers=AUTH, json={"action": "START_TRAINING"})  # free again
    assert r.json()["job"] == "mmal-train-2"
    c.backend.jobs.wait(10)
    assert "not known" in one_line_error(c.post("/job_status", headers=AUTH, json={"job": "mmal-train-9"}), 410)


def test_failed_job_reports_its_one_line_error(ws_dir):
    from mmal.errors import ConfigError

    def job(on_stage):
        raise ConfigError("no labeled items\nsecond line")

    c = client(ws_dir, job=job)
    c.post("/webhook", headers=AUTH, json={"action": "START_TRAINING"})
    c.backend.jobs.wait(10)
    st = c.get("/status", headers=AUTH).json()["job"]
    assert (st["status"], st["error"], st["result"]) == ("failed", "no labeled items", None)


def test_start_training_trains_scores_and_selects(ws_dir):
    c = client(ws_dir)
    names = class_names(ws_dir)
    first = batch_ranks(ws_dir)
    for k, item in enumerate(first):
        c.post("/webhook", headers=AUTH, json=choice_event("ANNOTATION_CREATED", k, 40 + k, item, names[k % 2]))
    r = c.post("/webhook", headers=AUTH, json={"action": "START_TRAINING", "project": {"id": 7}})
    assert r.status_code == 200
    c.backend.jobs.wait(120)
    job = c.get("/status", headers=AUTH).json()["job"]
    assert job["status"] == "finished", job
    res = job["result"]
    assert (res["round"], res["batch"], res["batch_round"], res["model_version"]) == (1, 2, 2, "mmal-round-1")
    assert (ws_dir / "rounds" / "1" / "model.pt").exists() and (ws_dir / "rounds" / "1" / "pool" / "ids.parquet").exists()
    second = batch_ranks(ws_dir)
    assert len(second) == BUDGET and not set(second) & set(first)  # the next batch, new items
    tasks = [{"id": k, "data": {"item_id": i}} for k, i in enumerate(list(second) + list(first))]
    body = c.post("/predict", headers=AUTH, json={"tasks": tasks}).json()
    top = pool_argmax(ws_dir, 1)
    assert body["model_version"] == "mmal-round-1"
    for t, p in zip(tasks, body["results"]):
        item = t["data"]["item_id"]
        assert p["score"] == (second[item] / BUDGET if item in second else 1.0)
        assert p["result"][0]["value"]["choices"] == [names[top[item]]]
    assert c.get("/versions", headers=AUTH).json()["versions"] == ["mmal-round-0", "mmal-round-1"]


# ---- CLI -----------------------------------------------------------------------------------
def test_cli_refuses_bad_options(ws_dir):
    r = run_cli("labelstudio-backend", ws_dir, "--budget", "0", "--port", "0")
    assert r.returncode == 2 and "--budget must be >= 1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("labelstudio-backend", ws_dir, "--learner", "nope", "--port", "0")
    assert r.returncode == 2 and "learner 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("labelstudio-backend", ws_dir.parent / "missing", "--port", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---- the round trip against a real Label Studio ----------------------------------------------
def _poll(fn, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = fn()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _backend_get(url, path):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url + path, headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError):
        return None


@pytest.mark.slow
def test_round_trip_with_real_label_studio(ws_dir, tmp_path, monkeypatch):
    """Connect the backend to a real Label Studio, annotate through its API, train from it,
    and see the next round's predictions stored in Label Studio."""
    import os
    import subprocess
    import sys
    import urllib.parse

    import labelstudio_server as lss

    data = tmp_path / "ls-data"
    try:
        exe = lss.fresh_data_dir(data)
    except lss.RegistryUnreachable as e:
        pytest.skip(str(e))
    # Label Studio refuses an ML backend (ML_BLOCK_LOCAL_IP) and a webhook (SSRF_PROTECTION_ENABLED)
    # on a loopback address unless told otherwise (docs/labelstudio.md)
    monkeypatch.setenv("ML_BLOCK_LOCAL_IP", "false")
    monkeypatch.setenv("SSRF_PROTECTION_ENABLED", "false")
    port = lss.free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "backend.log", "w")
    backend = subprocess.Popen([sys.executable, "-m", "mmal.cli", "labelstudio-backend", str(ws_dir), "--port", str(port),
                                "--budget", str(BUDGET)], env=dict(os.environ, MMAL_BACKEND_TOKEN=TOKEN, MMAL_PROGRESS="0"),
                               stdout=log, stderr=subprocess.STDOUT)
    srv = lss.Server(exe, data, tmp_path / "ls.log")
    names = class_names(ws_dir)
    first = batch_ranks(ws_dir)
    try:
        _poll(lambda: _backend_get(url, "/health"), 60, "the backend")
        srv.wait_healthy(300)
        c = lss.Client(srv.url).login()
        exports = ws_dir / "exports"
        proj = c.request("POST", "/api/projects", {"title": "mmal backend",
                                                   "label_config": (exports / "batch-0001.labelstudio-config.xml").read_text()})
        pid = proj["id"]
        c.request("POST", f"/api/projects/{pid}/import", json.loads((exports / "batch-0001.labelstudio.json").read_text()))
        ml = c.request("POST", "/api/ml", {"url": url, "project": pid, "title": "mmal", "auth_method": "BASIC_AUTH",
                                           "basic_auth_user": "mmal", "basic_auth_pass": TOKEN})
        assert ml["state"] == "CO" and ml["model_version"] == "mmal-round-0", ml  # /health and /setup answered
        # Label Studio made the webhook <url>/webhook itself; it sends the headers stored with it
        hooks = c.request("GET", f"/api/webhooks/?project={pid}")
        (hook,) = [h for h in hooks if h["url"] == url + "/webhook"]
        c.request("PATCH", f"/api/webhooks/{hook['id']}/", {"headers": AUTH})
        tasks = c.request("GET", f"/api/tasks?project={pid}&page_size=100")
        by_item = {t["data"]["item_id"]: t["id"] for t in (tasks["tasks"] if isinstance(tasks, dict) else tasks)}
        assert set(by_item) == set(first)
        want, ann = {}, {}
        for k, item in enumerate(first):
            want[item] = k % 2
            a = c.request("POST", f"/api/tasks/{by_item[item]}/annotations", {
                "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                            "value": {"choices": [names[want[item]]]}}], "was_cancelled": False})
            ann[item] = a["id"]

        def ls_labels():
            return {r[0]: (r[1], r[2]) for r in sql(ws_dir, "SELECT item_id, label, source FROM labels WHERE round = 1 "
                                                            "AND source LIKE 'label-studio%'")}

        expect = {i: (want[i], f"label-studio project {pid} annotation {ann[i]}") for i in first}
        _poll(lambda: ls_labels() == expect, 30, "the annotations to arrive as labels")
        a, b, d = list(first)
        c.request("PATCH", f"/api/annotations/{ann[a]}/", {"result": [{"from_name": "label", "to_name": "text",
                                                                      "type": "choices", "value": {"choices": [names[1 - want[a]]]}}]})
        expect[a] = (1 - want[a], expect[a][1])
        _poll(lambda: ls_labels() == expect, 30, "the updated annotation")
        c.request("DELETE", f"/api/annotations/{ann[d]}/", raw=True)
        del expect[d]
        _poll(lambda: ls_labels() == expect, 30, "the deleted annotation's label to go")
        hist = sql(ws_dir, "SELECT old_label, new_label FROM label_history WHERE item_id = ? ORDER BY seq", (d,))
        assert hist[-1] == (want[d], None)

        c.request("POST", f"/api/ml/{ml['id']}/train", {}, raw=True)  # Label Studio sends START_TRAINING to /webhook
        job = _poll(lambda: ((_backend_get(url, "/status") or {}).get("job") or {}).get("status") in ("finished", "failed")
                    and _backend_get(url, "/status")["job"], 240, "the training job")
        assert job["status"] == "finished", job
        assert job["result"]["model_version"] == "mmal-round-1"
        second = batch_ranks(ws_dir)
        assert len(second) == BUDGET and not set(second) & set(first)
        # the new batch into the project without its file's predictions: Label Studio asks /predict for them
        new_tasks = json.loads(open(job["result"]["tasks_file"]).read())
        for t in new_tasks:
            t.pop("predictions", None)
        c.request("POST", f"/api/projects/{pid}/import", new_tasks)
        c.request("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
                  {"selectedItems": {"all": True, "excluded": []}})
        preds = c.request("GET", f"/api/predictions/?project={pid}")
        tasks = c.request("GET", f"/api/tasks?project={pid}&page_size=100")
        item_of = {t["id"]: t["data"]["item_id"] for t in (tasks["tasks"] if isinstance(tasks, dict) else tasks)}
        new = {item_of[p["task"]]: p for p in preds if p["model_version"] == "mmal-round-1"}
        assert set(new) == set(first) | set(second)  # every task got the next round's prediction
        top = pool_argmax(ws_dir, 1)
        for item, p in new.items():
            assert p["result"][0]["value"]["choices"] == [names[top[item]]]
            assert p["score"] == pytest.approx(second[item] / BUDGET if item in second else 1.0)
        ordered = sorted(new, key=lambda i: new[i]["score"])
        assert ordered[:BUDGET] == sorted(second, key=second.get)  # ascending score: the new batch, in mmal's order
        # the Data Manager's "Prediction score" averages the predictions of the project's model version:
        # switched to the new round, its ascending order is the new batch in mmal's order, then the rest
        c.request("PATCH", f"/api/projects/{pid}", {"model_version": "mmal-round-1"})
        q = urllib.parse.quote(json.dumps({"ordering": ["tasks:predictions_score"], "selectedItems": {"all": True, "excluded": []}}))
        dm = c.request("GET", f"/api/tasks?project={pid}&page_size=100&fields=all&query={q}")
        dm = dm["tasks"] if isinstance(dm, dict) else dm
        assert [item_of[t["id"]] for t in dm][:BUDGET] == sorted(second, key=second.get)
        assert [t["predictions_score"] for t in dm] == pytest.approx(sorted(new[i]["score"] for i in new))
    finally:
        srv.stop()
        backend.terminate()
        try:
            backend.wait(timeout=20)
        except subprocess.TimeoutExpired:
            backend.kill()
            backend.wait(timeout=20)
        log.close()
    assert srv.proc.poll() is not None and backend.poll() is not None
