"""Label Studio both ways: config and tasks out, JSON / JSON_MIN / CSV exports back in.

The last test runs the round trip against a real Label Studio (installed in its own cached
virtualenv by ``tests/labelstudio_server.py``)."""

import csv
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from annot_ws import save_pool
from conftest import write_items


@pytest.fixture
def media_ws(tmp_path, media_dir):
    """Mixed modalities, each item lacking some: text+image, text+audio, video only, text only."""
    from mmal.workspace import Workspace, init_workspace

    src = tmp_path / "src"
    (src / "m").mkdir(parents=True)
    for f in ("a.png", "b.png", "a.wav", "b.wav", "v.mp4"):
        shutil.copy(media_dir / f, src / "m" / f)
    rows = [
        {"id": "t0", "label": 0, "split": "train", "text": "a red square", "image": "m/a.png"},
        {"id": "t1", "label": 1, "split": "train", "text": "a blue square", "image": "m/b.png"},
        {"id": "p0", "label": None, "split": "pool", "text": "hello & <b>bold</b>", "image": "m/a.png"},
        {"id": "p1", "label": None, "split": "pool", "text": "tone", "audio": "m/a.wav"},
        {"id": "p2", "label": None, "split": "pool", "video": "m/v.mp4"},
        {"id": "p3", "label": None, "split": "pool", "text": "only text"},
    ]
    ws = init_workspace(tmp_path / "ws", write_items(src, rows))
    ws.config["task"]["label_names"] = ["Tom & Jerry", '"/><Script>alert(1)</Script>']
    ws.save_config()
    ws = Workspace(ws.dir)
    save_pool(ws, 0, n_classes=2)
    return ws


def test_config_and_tasks(media_ws):
    from mmal.loop.workspace_round import select_workspace

    res = select_workspace(media_ws.dir, "entropy", 4)
    cfg = open(res["exports"]["labelstudio_config"]).read()
    root = ET.fromstring(cfg)  # valid XML despite the hostile class names
    objects = {el.get("name"): (el.tag, el.get("value")) for el in root if el.tag != "Choices"}
    assert objects == {"image": ("Image", "$image"), "video": ("Video", "$video"), "audio": ("Audio", "$audio"),
                       "text": ("Text", "$text")}
    choices = root.find("Choices")
    assert [c.get("value") for c in choices] == ["Tom & Jerry", '"/><Script>alert(1)</Script>']
    assert root.find(".//Script") is None and choices.get("toName") == "text"
    tasks = json.load(open(res["exports"]["labelstudio"]))
    assert {t["data"]["item_id"] for t in tasks} == {"p0", "p1", "p2", "p3"}
    by = {t["data"]["item_id"]: t["data"] for t in tasks}
    for d in by.values():  # every variable the config uses is in every task
        assert {"image", "video", "audio", "text"} <= set(d)
    assert by["p2"]["text"] == "" and by["p3"]["image"] == "" and by["p3"]["audio"] == ""
    assert by["p0"]["image"] == "/data/local-files/?d=m/a.png"  # relative to the media root (items folder)
    assert by["p2"]["video"] == "/data/local-files/?d=m/v.mp4"
    rows = {r["id"]: r for r in map(json.loads, open(res["exports"]["jsonl"]))}
    assert rows["p1"]["audio"] == "m/a.wav"


def test_media_url_template_and_root_policy(media_ws, tmp_path):
    from mmal.errors import WorkspaceError
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import export_round

    select_workspace(media_ws.dir, "entropy", 4)
    out = export_round(media_ws.dir, 1, media_url="http://127.0.0.1:8765/media/{id}")
    tasks = json.load(open(out["batches"][1]["labelstudio"]))
    by = {t["data"]["item_id"]: t["data"] for t in tasks}
    assert by["p0"]["image"] == "http://127.0.0.1:8765/media/p0"
    # media root set explicitly: a path outside it (../) is refused, naming the item
    with pytest.raises(WorkspaceError, match=r"item 'p\d': media path .* is outside the media root"):
        export_round(media_ws.dir, 1, media_root=str(tmp_path / "src" / "m" / "sub"))
    out = export_round(media_ws.dir, 1, media_root=str(tmp_path / "src" / "m"))
    rows = {r["id"]: r for r in map(json.loads, open(out["batches"][1]["jsonl"]))}
    assert rows["p0"]["image"] == "a.png"


def _ls_exports(tasks, labels):
    """Hand-built Label Studio 1.x exports (JSON, JSON_MIN, CSV) for ``labels``: {item id: choice}."""
    full, mini = [], []
    for k, t in enumerate(tasks, start=1):
        d = t["data"]
        ch = labels.get(d["item_id"])
        ann = [] if ch is None else [{"id": 100 + k, "completed_by": 1, "was_cancelled": False, "lead_time": 1.5,
                                       "result": [{"id": "r", "type": "choices", "from_name": "label", "to_name": "text",
                                                   "origin": "manual", "value": {"choices": [ch]}}]}]
        full.append({"id": 900 + k, "data": d, "annotations": ann, "predictions": [], "meta": t.get("meta", {})})
        if ch is not None:
            mini.append({**d, "id": 900 + k, "label": ch, "annotator": 1, "annotation_id": 100 + k,
                         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "lead_time": 1.5})
    return full, mini


def test_import_all_three_export_formats(media_ws, tmp_path):
    from annot_ws import db_rows
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import import_labels

    res = select_workspace(media_ws.dir, "entropy", 4)
    tasks = json.load(open(res["exports"]["labelstudio"]))
    want = {"p0": "Tom & Jerry", "p1": '"/><Script>alert(1)</Script>', "p2": "Tom & Jerry"}
    full, mini = _ls_exports(tasks, want)
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "min.json").write_text(json.dumps(mini))
    cols = sorted({k for r in mini for k in r})
    with open(tmp_path / "ls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(mini)
    names = ["Tom & Jerry", '"/><Script>alert(1)</Script>']
    expect = {(i, 1, names.index(c)) for i, c in want.items()}
    for name in ("full.json", "min.json", "ls.csv"):
        s = import_labels(media_ws, tmp_path / name)
        got = {r[:3] for r in db_rows(media_ws.dir)["labels"] if r[1] == 1}
        assert got == expect, name
        assert s["inserted"] + s["unchanged"] == 3


def test_csv_uses_item_id_not_task_id(media_ws, tmp_path):
    """Label Studio's CSV has its own task ``id``; an item whose id equals another task id must not be confused."""
    from mmal.errors import LabelImportError
    from mmal.workspace.annotate import import_labels

    from mmal.loop.workspace_round import select_workspace

    select_workspace(media_ws.dir, "entropy", 4)
    f = tmp_path / "ls.csv"
    f.write_text("annotation_id,annotator,id,item_id,label,round\n5,1,p3,p0,Tom & Jerry,1\n")
    import_labels(media_ws, f)
    assert media_ws.current_labels()["p0"] == 0 and "p3" not in media_ws.current_labels()
    g = tmp_path / "ls2.csv"
    g.write_text("annotation_id,annotator,id,item_id,label\n5,1,17,nope,Tom & Jerry\n")
    with pytest.raises(LabelImportError, match=r"row 1: field 'item_id': unknown item id 'nope'"):
        import_labels(media_ws, g)


@pytest.mark.slow
def test_round_trip_against_real_label_studio(media_ws, tmp_path):
    """Our tasks and config into a real Label Studio through its API, annotations posted,
    JSON / JSON_MIN / CSV exported, and each export imported into a copy of the workspace."""
    import time

    import labelstudio_server as lss
    from annot_ws import db_rows
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import import_labels

    try:
        exe = lss.ensure_venv()
    except lss.RegistryUnreachable as e:
        pytest.skip(str(e))
    tpl = lss.ensure_template(exe)
    data = tmp_path / "ls-data"
    shutil.copytree(tpl, data)
    res = select_workspace(media_ws.dir, "entropy", 4)
    tasks = json.load(open(res["exports"]["labelstudio"]))
    config = open(res["exports"]["labelstudio_config"]).read()
    srv = lss.Server(exe, data, tmp_path / "ls.log")
    try:
        t_start = srv.wait_healthy(300)
        c = lss.Client(srv.url).login()
        proj = c.request("POST", "/api/projects", {"title": "mmal round trip", "label_config": config})
        imp = c.request("POST", f"/api/projects/{proj['id']}/import", tasks)
        assert imp["task_count"] == len(tasks) == 4
        got = c.request("GET", f"/api/tasks?project={proj['id']}&page_size=100")
        ls_tasks = got["tasks"] if isinstance(got, dict) else got
        by_item = {t["data"]["item_id"]: t for t in ls_tasks}
        assert set(by_item) == {"p0", "p1", "p2", "p3"}
        assert by_item["p2"]["data"]["text"] == ""  # the empty variable survived the import
        names = ["Tom & Jerry", '"/><Script>alert(1)</Script>']
        want = {"p0": names[1], "p1": names[0], "p2": names[0]}  # p3 stays unannotated
        for item, choice in want.items():
            c.request("POST", f"/api/tasks/{by_item[item]['id']}/annotations", {
                "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}],
                "was_cancelled": False})
        exports = {}
        for fmt, suffix in (("JSON", ".json"), ("JSON_MIN", ".json"), ("CSV", ".csv")):
            body = c.request("GET", f"/api/projects/{proj['id']}/export?exportType={fmt}", raw=True)
            exports[fmt] = tmp_path / f"ls-export-{fmt.lower()}{suffix}"
            exports[fmt].write_bytes(body)
    finally:
        srv.stop()
    assert srv.proc.poll() is not None
    expect = {(i, 1, names.index(ch)) for i, ch in want.items()}
    for fmt, f in exports.items():
        ws_copy = tmp_path / f"ws-{fmt}"
        shutil.copytree(media_ws.dir, ws_copy)
        s = import_labels(Workspace(ws_copy), f)
        assert s["inserted"] == 3, (fmt, s)
        assert {r[:3] for r in db_rows(ws_copy)["labels"] if r[1] == 1} == expect, fmt
        again = import_labels(Workspace(ws_copy), f)
        assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 3), fmt
    print(f"label studio healthy after {t_start:.1f} s")


def test_export_settings_from_mmal_toml(media_ws):
    """``[export] media_url`` in mmal.toml passes the config check and sets the task URLs."""
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import export_round

    media_ws.config["export"] = {"media_url": "http://127.0.0.1:9999/media/{id}"}
    media_ws.save_config()
    select_workspace(media_ws.dir, "entropy", 4)
    out = export_round(Workspace(media_ws.dir).dir, 1)
    by = {t["data"]["item_id"]: t["data"] for t in json.load(open(out["batches"][1]["labelstudio"]))}
    assert by["p1"]["audio"] == "http://127.0.0.1:9999/media/p1" and by["p3"]["audio"] == ""


@pytest.fixture
def relevance_ws(tmp_path):
    """A relevance workspace: two queries, gold levels 0 and 3 on train, four pool pairs, a scored pool."""
    from mmal.workspace import Workspace, init_workspace

    rows = [{"id": "t0", "label": 0, "split": "train", "query": "a cat", "text": "a dog runs"},
            {"id": "t1", "label": 3, "split": "train", "query": "a cat", "text": "a cat sleeps"}]
    rows += [{"id": f"p{k}", "label": None, "split": "pool", "query": ("a cat", "a dog")[k % 2], "text": f"clip {k}"}
             for k in range(4)]
    ws = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows))
    save_pool(ws, 0, n_classes=4)
    return Workspace(ws.dir)


def test_relevance_config_names_each_level_and_imports_back_to_it(relevance_ws, tmp_path):
    from annot_ws import db_rows
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import import_labels

    res = select_workspace(relevance_ws.dir, "entropy", 3)
    root = ET.fromstring(open(res["exports"]["labelstudio_config"]).read())
    choices = [c.get("value") for c in root.find("Choices")]
    assert len(choices) == 4 and len(set(choices)) == 4 and not any(c.isdigit() for c in choices)
    (header,) = root.findall("Header")  # the legend: every level number beside its name, in order
    legend = header.get("value")
    assert all(f"{k} {name}" in legend for k, name in enumerate(choices))
    assert [legend.index(f"{k} {name}") for k, name in enumerate(choices)] == sorted(
        legend.index(f"{k} {name}") for k, name in enumerate(choices))
    tasks = json.load(open(res["exports"]["labelstudio"]))
    picked = [t["data"]["item_id"] for t in tasks]
    want = dict(zip(picked, (choices[2], choices[0], choices[3])))  # annotators click names
    full, mini = _ls_exports(tasks, want)
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "min.json").write_text(json.dumps(mini))
    expect = {(i, 1, choices.index(name)) for i, name in want.items()}  # the level = the choice's place
    for name in ("full.json", "min.json"):
        import_labels(relevance_ws, tmp_path / name)
        assert {r[:3] for r in db_rows(relevance_ws.dir)["labels"] if r[1] == 1} == expect, name


def test_relevance_unknown_choice_is_one_line_naming_file_row_field(relevance_ws, tmp_path):
    from conftest import run_cli
    from mmal.loop.workspace_round import select_workspace

    res = select_workspace(relevance_ws.dir, "entropy", 3)
    tasks = json.load(open(res["exports"]["labelstudio"]))
    first = tasks[0]["data"]["item_id"]
    _, mini = _ls_exports(tasks, {first: "great"})
    f = tmp_path / "min.json"
    f.write_text(json.dumps(mini))
    r = run_cli("label", relevance_ws.dir, f)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert str(f) in line and "row 1" in line and "field 'label'" in line and "'great'" in line
    assert first not in relevance_ws.current_labels()
