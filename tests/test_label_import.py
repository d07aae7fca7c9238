"""Batches, exports and label import: transactional, idempotent, crash-safe."""

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
    from mmal.select.types import Selection
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
    assert paths["csv"].read_text().splitlines()[0].startswith("id,round,batch,rank,strategy,score,reason")
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

    from mmal.select.types import Selection
    from mmal.workspace.annotate import record_batch

    big_ids = np.array([f"i{k}" for k in range(20, 3000)])
    record_batch(ws, Selection(ids=big_ids, strategy="random", score=np.zeros(len(big_ids)), reason=None), budget=len(big_ids), round_=1)
    first = tmp_path / "first.csv"
    first.write_text("id,label\ni10,1\ni11,2\n")
    import_labels(ws, first)
    before = labels_in_db(ws)
    big = tmp_path / "big.csv"
    big.write_text("id,label\n" + "".join(f"i{k},{k % 3}\n" for k in range(20, 3000)))
    env = dict(os.environ, MMAL_TEST_IMPORT_DELAY="0.002", MMAL_PROGRESS="0")
    proc = subprocess.Popen([sys.executable, "-m", "mmal.cli", "label", str(ws.dir), str(big)], env=env,
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
