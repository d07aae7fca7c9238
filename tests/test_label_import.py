"""Batches, exports and label import: transactional, idempotent, crash-safe."""

from pathlib import Path
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import run_cli, write_items


@pytest.fixture
def ws(tmp_path):
    from mmal.pool import Selection
    from mmal.workspace import init_workspace
    from mmal.workspace.annotate import record_batch

    rows = [{"id": f"i{k}", "label": (k % 3) if k < 6 else None, "split": "train" if k < 6 else "pool", "text": f"item {k}"} for k in range(3000)]
    w = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows))
    sel = Selection(ids=np.array(["i10", "i11", "i12"]), strategy="entropy", score=np.array([0.9, 0.8, 0.7]), reason=np.array(["", "", ""]))
    record_batch(w, sel, budget=3, round_=1)
    return w


def labels_in_db(w):
    con = sqlite3.connect(w.dir / "state.sqlite")
    try:
        return sorted(con.execute("SELECT item_id, round, label, source FROM labels").fetchall())
    finally:
        con.close()


def test_export_formats(ws):
    from mmal.workspace.annotate import export_batch

    paths = export_batch(ws, 1)
    import csv as _csv

    assert next(_csv.reader(open(paths["csv"], newline="")))[:7] == ["id", "round", "batch", "rank", "strategy", "score", "reason"]
    rows = [json.loads(x) for x in paths["jsonl"].read_text().splitlines()]
    assert [r["id"] for r in rows] == ["i10", "i11", "i12"] and rows[0]["text"] == "item 10"
    tasks = json.loads(paths["labelstudio"].read_text())
    assert tasks[0]["data"]["item_id"] == "i10" and tasks[0]["data"]["text"] == "item 10"


def test_import_csv_idempotent(ws, tmp_path):
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "labels.csv"
    f.write_text("id,label\ni10,2\ni11,0\ni12,\n")
    s1 = import_labels(ws, f)
    assert (s1["inserted"], s1["skipped"]) == (2, 1)
    snap = labels_in_db(ws)
    assert ("i10", 1, 2, str(f.resolve())) in snap  # round taken from the batch that holds the item
    s2 = import_labels(ws, f)
    assert (s2["inserted"], s2["updated"], s2["unchanged"]) == (0, 0, 2)
    assert labels_in_db(ws) == snap


def test_import_labelstudio(ws, tmp_path):
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "export.json"
    f.write_text(json.dumps([
        {"data": {"item_id": "i10"}, "annotations": [{"completed_by": 7, "result": [{"type": "choices", "value": {"choices": ["1"]}}]}]},
        {"data": {"item_id": "i11"}, "annotations": []},
    ]))
    s = import_labels(ws, f)
    assert s["inserted"] == 1 and s["skipped"] == 1
    assert ws.current_labels()["i10"] == 1


@pytest.mark.parametrize("content,words", [
    ("id,label\ni10,1\nnope,2\n", ["row 2", "'id'", "nope"]),
    ("id,label\ni10,1\ni11,7\n", ["row 2", "'label'", "out of range"]),
    ("id,label\ni10,1\ni11,cat\n", ["row 2", "'label'", "cat"]),
])
def test_bad_row_imports_nothing(ws, tmp_path, content, words):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    before = labels_in_db(ws)
    r = run_cli("label", ws.dir, f)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]
    assert labels_in_db(ws) == before


def test_kill9_mid_import_keeps_db_consistent(ws, tmp_path):
    from mmal.workspace.annotate import import_labels

    from mmal.pool import Selection
    from mmal.workspace.annotate import record_batch

    big_ids = np.array([f"i{k}" for k in range(20, 3000)])
    record_batch(ws, Selection(ids=big_ids, strategy="random", score=np.zeros(len(big_ids)), reason=None), budget=len(big_ids), round_=1)
    first = tmp_path / "first.csv"
    first.write_text("id,label\ni10,1\ni11,2\n")
    import_labels(ws, first)
    before = labels_in_db(ws)
    big = tmp_path / "big.csv"
    big.write_text("id,label\n" + "".join(f"i{k},{k % 3}\n" for k in range(20, 3000)))
    env = dict(os.environ, MMAL_PROGRESS="0")
    helper = Path(__file__).with_name("slow_import.py")
    proc = subprocess.Popen([sys.executable, str(helper), str(ws.dir), str(big), "0.002"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = tmp_path / "big.csv.importing"
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), "import transaction never started"
    time.sleep(0.5)  # well inside the ~6 s transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(ws.dir / "state.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    after = labels_in_db(ws)
    assert after == before  # nothing of the killed import, nothing earlier lost
    # the same file imports cleanly afterwards
    s = import_labels(ws, big)
    assert s["inserted"] == 2980
    assert set(before) <= set(labels_in_db(ws))


# ---- label imports refuse wrong data (one line, exit 2, nothing imported) ----
def _refused(ws, f, words, extra=()):
    from annot_ws import digest

    before = digest(ws.dir)
    r = run_cli("label", ws.dir, f, *extra)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(f) in lines[0] or str(f.resolve()) in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert digest(ws.dir) == before


def _ls(task_data, annotations):
    return {"id": 1, "data": task_data, "annotations": annotations}


BAD_FILES = [
    ("dup.csv", "id,label\ni10,1\ni11,2\ni10,0\n", ["row 3", "'label'", "i10", "row 1"]),
    ("test.csv", None, None),  # built in the test: a batch item moved to the test split
    ("unbatched.csv", "id,label\ni10,1\ni50,2\n", ["row 2", "i50", "no batch", "--allow-unbatched"]),
    ("round_big.csv", "id,label,round\ni10,1,999999\n", ["row 1", "'round'", "999999"]),
    ("round_neg.csv", "id,label,round\ni10,1,-3\n", ["row 1", "'round'", "-3"]),
    ("empty.csv", "", ["empty"]),
    ("cols.csv", "item,lbl\ni10,1\n", ["'item', 'lbl'", "expected 'id'", "'label'"]),
    ("ls_str.json", json.dumps([_ls({"item_id": "i10"}, [{"result": [{"type": "choices", "value": {"choices": "12"}}]}])]),
     ["row 1", "choices", "'12'"]),
    ("ls_unknown.json", json.dumps([_ls({"item_id": "i10"}, [{"result": [{"type": "choices", "value": {"choices": ["12"]}}]}])]),
     ["row 1", "'label'", "out of range"]),
    ("ls_data_str.json", json.dumps([{"data": "i10", "annotations": []}]), ["row 1", "'data'", "str"]),
    ("ls_ann_str.json", json.dumps([_ls({"item_id": "i10"}, "x")]), ["row 1", "'annotations'", "str"]),
    ("ls_ann_null.json", json.dumps([_ls({"item_id": "i10"}, [None])]), ["row 1", "'annotations[0]'", "NoneType"]),
    ("ls_res_dict.json", json.dumps([_ls({"item_id": "i10"}, [{"result": {"value": 1}}])]), ["row 1", "result", "dict"]),
    ("line.jsonl", '{"id": "i10", "label": 1}\n[1,2]\n', ["row 2", "JSON object", "list"]),
]


@pytest.mark.parametrize("name,content,words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_import_refuses(ws, tmp_path, name, content, words):
    if name == "test.csv":
        con = sqlite3.connect(ws.dir / "state.sqlite")
        con.execute("UPDATE items SET split='test' WHERE id='i11'")  # i11: a batch item made a test item
        con.commit()
        con.close()
        content, words = "id,label\ni10,1\ni11,2\n", ["row 2", "i11", "test split", "gold"]
    f = tmp_path / name
    f.write_text(content)
    _refused(ws, f, words)


def test_bom_csv_accepted(ws, tmp_path):
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeffid,label\r\ni10,2\r\ni11,0\r\n".encode("utf-8"))
    s = import_labels(ws, f)
    assert s["inserted"] == 2
    assert {(r[0], r[1], r[2]) for r in labels_in_db(ws) if r[1] == 1} == {("i10", 1, 2), ("i11", 1, 0)}


def test_identical_duplicate_rows_count_once(ws, tmp_path):
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "dup_same.csv"
    f.write_text("id,label\ni10,1\ni10,1\n")
    assert import_labels(ws, f)["inserted"] == 1


def test_unbatched_with_flag_goes_to_round0(ws, tmp_path):
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "u.csv"
    f.write_text("id,label\ni50,2\n")
    s = import_labels(ws, f, allow_unbatched=True)
    assert s["inserted"] == 1 and ("i50", 0, 2) in {r[:3] for r in labels_in_db(ws)}


def test_class_names_and_new_class(tmp_path):
    from annot_ws import make_ws
    from mmal.errors import LabelImportError
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import import_labels, label_names

    ws = make_ws(tmp_path, label_names=["cat", "dog", "Tom & Jerry"])
    res = select_workspace(ws.dir, "entropy", 4)
    items = [r["id"] for r in map(json.loads, open(res["exports"]["jsonl"]))]
    f = tmp_path / "names.csv"
    f.write_text(f"id,label\n{items[0]},dog\n{items[1]},Tom & Jerry\n{items[2]},0\n")
    assert import_labels(ws, f)["inserted"] == 3
    got = {r[0]: r[2] for r in labels_in_db(ws) if r[1] == 1}
    assert got == {items[0]: 1, items[1]: 2, items[2]: 0}
    g = tmp_path / "new.csv"
    g.write_text(f"id,label\n{items[3]},bird\n")
    with pytest.raises(LabelImportError, match=r"row 1: field 'label': 'bird' is not a class.*--allow-new-classes"):
        import_labels(ws, g)
    s = import_labels(ws, g, allow_new_classes=True)
    assert s["new_classes"] == ["bird"] and "train" in s["warnings"][0]
    ws2 = Workspace(ws.dir)
    assert label_names(ws2) == ["cat", "dog", "Tom & Jerry", "bird"] and ws2.n_classes == 4
    assert {r[0]: r[2] for r in labels_in_db(ws2) if r[1] == 1}[items[3]] == 3
    assert json.loads((ws2.round_dir(1) / "STALE.json").read_text())["reason"].startswith("added class(es) 'bird'")


def test_csv_export_neutralises_formulas_and_round_trips(tmp_path):
    import csv as _csv

    from annot_ws import make_ws
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import import_labels

    evil = {k: v for k, v in enumerate(['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"])}
    ws = make_ws(tmp_path, n_pool=6, text=evil)
    res = select_workspace(ws.dir, "entropy", 6)
    rows = list(_csv.DictReader(open(res["exports"]["csv"], newline="")))
    assert sorted(r["text"] for r in rows) == sorted("'" + v for v in evil.values())
    for r in rows:
        assert r["text"][0] == "'"
    # the export, labeled in a spreadsheet, imports back by item id
    f = tmp_path / "back.csv"
    with open(f, "w", newline="") as fh:
        w = _csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "label": "1"})
    assert import_labels(ws, f)["inserted"] == 6


def test_gold_test_label_not_overwritten(tmp_path):
    """A real test-split item (gold label 0 from the items file): an import for it is refused."""
    from annot_ws import make_ws

    w = make_ws(tmp_path, n_pool=5, n_test=3)
    f = tmp_path / "gold.csv"
    f.write_text("id,label\nx0,2\n")
    _refused(w, f, ["row 1", "'x0'", "test split", "gold"], extra=())
    assert w.current_labels()["x0"] == 0


def test_unbatched_with_flag_and_existing_round(ws, tmp_path):
    from mmal.errors import LabelImportError
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "u1.csv"
    f.write_text("id,label,round\ni51,1,1\n")
    with pytest.raises(LabelImportError, match="row 1: field 'round': 1 is not a round in which item 'i51' was selected"):
        import_labels(ws, f)
    assert import_labels(ws, f, allow_unbatched=True)["inserted"] == 1
    assert ("i51", 1, 1) in {r[:3] for r in labels_in_db(ws)}
    g = tmp_path / "u2.csv"
    g.write_text("id,label,round\ni52,1,999999\n")
    with pytest.raises(LabelImportError, match="row 1: field 'round': 999999"):
        import_labels(ws, g, allow_unbatched=True)
