"""`select` as one unit: lock, exports before commit, several batches per round, dry run, shortfall."""

from pathlib import Path
import json
import os
import subprocess
import sqlite3
import sys
import time

import numpy as np
import pytest

from annot_ws import db_rows, digest, make_ws, save_pool
from conftest import run_cli


def entropy_top(ids, probs, exclude, k):
    """Independent reference: the k highest-entropy ids outside ``exclude`` (ties to the lower row)."""
    p = np.asarray(probs, np.float64)
    h = -(p * np.log(np.clip(p, 1e-12, None))).sum(1)
    rows = [i for i in range(len(ids)) if ids[i] not in exclude]
    rows.sort(key=lambda i: (-h[i], i))
    return [str(ids[i]) for i in rows[:k]]


def batches(ws):
    con = sqlite3.connect(ws.dir / "state.sqlite")
    try:
        out = {}
        for bid, rnd in con.execute("SELECT batch_id, round FROM batches ORDER BY batch_id"):
            out[bid] = (rnd, [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id=? ORDER BY rank", (bid,))])
        return out
    finally:
        con.close()


def test_select_records_batch_with_exports(tmp_path):
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path)
    ids, probs = np.asarray(ws.items.column("id").to_pylist()), np.load(ws.round_dir(0) / "pool" / "probs.npy")
    res = select_workspace(ws.dir, "entropy", 7)
    test_or_labeled = {i for i in ids if i.startswith(("t", "x"))}
    assert batches(ws) == {1: (1, entropy_top(ids, probs, test_or_labeled, 7))}
    for p in res["exports"].values():
        assert os.path.getsize(p) > 0
    assert res["round"] == 1 and res["shortfall"] == 0 and res["warnings"] == []


def test_second_select_needs_append_and_is_disjoint(tmp_path):
    from mmal.errors import WorkspaceError
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path)
    select_workspace(ws.dir, "entropy", 5)
    before = digest(ws.dir)
    with pytest.raises(WorkspaceError, match=r"round 1 already has 1 batch.*--append"):
        select_workspace(ws.dir, "entropy", 5)
    assert digest(ws.dir) == before
    res = select_workspace(ws.dir, "entropy", 5, append=True)
    b = batches(ws)
    assert res["round"] == 1 and [v[0] for v in b.values()] == [1, 1]
    ids, probs = np.asarray(ws.items.column("id").to_pylist()), np.load(ws.round_dir(0) / "pool" / "probs.npy")
    excl = {i for i in ids if i.startswith(("t", "x"))} | set(b[1][1])
    assert b[2][1] == entropy_top(ids, probs, excl, 5)
    assert not set(b[1][1]) & set(b[2][1])
    # selection.parquet of the round holds both batches
    import pyarrow.parquet as pq

    t = pq.read_table(ws.round_dir(1) / "selection.parquet")
    assert t.column("id").to_pylist() == b[1][1] + b[2][1]


def test_dry_run_records_nothing(tmp_path):
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path)
    before = digest(ws.dir)
    dry = select_workspace(ws.dir, "entropy", 6, dry_run=True)
    assert digest(ws.dir) == before and not (ws.dir / "exports").exists() or not any((ws.dir / "exports").iterdir())
    real = select_workspace(ws.dir, "entropy", 6)
    assert dry["ids"] == batches(ws)[real["batch"]][1]
    # a dry run of another strategy on the same scored pool, after the batch: still records nothing
    before = digest(ws.dir)
    select_workspace(ws.dir, "margin", 6, dry_run=True)
    assert digest(ws.dir) == before


def test_budget_larger_than_pool_says_so(tmp_path):
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path, n_pool=9)
    res = select_workspace(ws.dir, "entropy", 50)
    assert res["n_selected"] == 9 and res["n_selectable"] == 9 and res["shortfall"] == 41
    assert res["warnings"] == ["budget 50 is larger than the 9 selectable items; selected 9"]
    from mmal.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match="nothing left to select"):
        select_workspace(ws.dir, "entropy", 5, append=True)


@pytest.mark.parametrize("budget", [0, -3, True])
def test_bad_budget(tmp_path, budget):
    from mmal.errors import ConfigError
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path, n_pool=5)
    with pytest.raises(ConfigError, match="--budget must be a positive integer"):
        select_workspace(ws.dir, "entropy", budget)


def test_export_failure_leaves_no_batch_and_export_round_recovers(tmp_path):
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import export_round

    ws = make_ws(tmp_path)
    (ws.dir / "exports").rmdir() if (ws.dir / "exports").is_dir() else None
    (ws.dir / "exports").write_text("in the way")
    before = digest(ws.dir)
    r = run_cli("select", ws.dir, "--strategy", "entropy", "--budget", "5")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "exports" in lines[0], r.stderr
    assert digest(ws.dir) == before and batches(ws) == {}
    (ws.dir / "exports").unlink()
    res = select_workspace(ws.dir, "entropy", 5)  # the select re-runs
    csv_path = res["exports"]["csv"]
    first = open(csv_path).read()
    os.unlink(csv_path)
    out = export_round(ws.dir, 1)
    assert out["batches"] == {1: res["exports"]}
    assert open(csv_path).read() == first
    from mmal.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match=r"round 7 has no batch \(rounds with batches: 1\)"):
        export_round(ws.dir, 7)


def test_lock_timeout_names_holder(tmp_path):
    from mmal.errors import WorkspaceError
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.lock import workspace_lock

    ws = make_ws(tmp_path)
    with workspace_lock(ws.dir, "test-holder"):
        t0 = time.monotonic()
        with pytest.raises(WorkspaceError) as e:
            select_workspace(ws.dir, "entropy", 5, lock_timeout=0.3)
        assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and "`test-holder`" in msg and "busy" in msg
    assert batches(ws) == {}
    select_workspace(ws.dir, "entropy", 5)  # released: works


def test_select_waits_for_running_import(tmp_path):
    """A select started during a long label import must not pick the items being labeled."""
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path)
    ids = np.asarray(ws.items.column("id").to_pylist())
    # the 20 items being labeled are the most uncertain of the pool: a select that does not wait picks them
    sent = [f"p{k}" for k in range(20)]
    probs = np.tile(np.array([[0.98, 0.01, 0.01]], np.float32), (len(ids), 1))
    probs[np.isin(ids, sent)] = 1 / 3
    save_pool(ws, 0, probs=probs)
    lab = tmp_path / "labels.csv"
    lab.write_text("id,label\n" + "".join(f"{i},{k % 3}\n" for k, i in enumerate(sent)))
    env = dict(os.environ, MMAL_PROGRESS="0")
    helper = Path(__file__).with_name("slow_import.py")
    proc = subprocess.Popen([sys.executable, str(helper), str(ws.dir), str(lab), "0.1", "--allow-unbatched"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = tmp_path / "labels.csv.importing"
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()
    res = select_workspace(ws.dir, "entropy", 10)  # waits for the import's lock
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    chosen = batches(ws)[res["batch"]][1]
    assert len(chosen) == 10 and not set(chosen) & set(sent)
    assert {r[0] for r in db_rows(ws.dir)["labels"] if r[1] == 0 and r[0].startswith("p")} == set(sent)


def test_items_awaiting_labels_are_not_sent_again(tmp_path):
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path, n_pool=12)
    first = select_workspace(ws.dir, "entropy", 5)
    save_pool(ws, 1, seed=3)  # trained and scored again before the batch was labeled
    second = select_workspace(ws.dir, "entropy", 50)
    b = batches(ws)
    assert second["round"] == 2 and not set(b[first["batch"]][1]) & set(b[second["batch"]][1])
    assert second["n_selectable"] == 7 and second["shortfall"] == 43
