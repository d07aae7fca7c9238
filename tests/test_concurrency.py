"""4 `mmal select`s and 4 `mmal label`s started at once: one batch per round, every label once."""

import os
import sqlite3
import subprocess
import sys

import numpy as np

from annot_ws import make_ws, save_pool


def test_four_selects_four_labels(tmp_path):
    from mmal.pool import Selection
    from mmal.workspace.annotate import record_batch

    ws = make_ws(tmp_path, n_pool=80)
    sent = [f"p{k}" for k in range(40)]
    record_batch(ws, Selection(ids=np.array(sent), strategy="random", score=np.zeros(40), reason=None), budget=40, round_=1)
    save_pool(ws, 1, seed=1)  # the round-1 model's scores: the next select opens round 2
    files, want = [], set()
    for j in range(4):
        f = tmp_path / f"labels{j}.csv"
        part = sent[10 * j:10 * (j + 1)]
        f.write_text("id,label\n" + "".join(f"{i},{(k + j) % 3}\n" for k, i in enumerate(part)))
        want |= {(i, 1, (k + j) % 3) for k, i in enumerate(part)}
        files.append(f)
    env = dict(os.environ, MMAL_PROGRESS="0")
    cmds = [["select", str(ws.dir), "--strategy", "entropy", "--budget", "5"]] * 4 + [["label", str(ws.dir), str(f)] for f in files]
    procs = [subprocess.Popen([sys.executable, "-m", "mmal.cli", *c], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    rcs = [p.returncode for p in procs]
    sel_rcs, lab_rcs = rcs[:4], rcs[4:]
    assert lab_rcs == [0, 0, 0, 0], [o[1] for o in outs[4:]]
    assert sorted(sel_rcs) == [0, 2, 2, 2], [o[1] for o in outs[:4]]
    for (out, err), rc in zip(outs[:4], sel_rcs):
        if rc == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "round 2 already has 1 batch" in lines[0] and "Traceback" not in err
    con = sqlite3.connect(ws.dir / "state.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT round, COUNT(*) FROM batches GROUP BY round ORDER BY round").fetchall() == [(1, 1), (2, 1)]
    picked = [r[0] for r in con.execute("SELECT item_id FROM batch_items JOIN batches USING (batch_id) WHERE round = 2")]
    assert len(picked) == 5 and len(set(picked)) == 5
    got = con.execute("SELECT item_id, round, label FROM labels WHERE round = 1").fetchall()
    con.close()
    assert set(got) == want, (want - set(got), set(got) - want, [o[0] for o in outs[4:]], [f.read_text() for f in files])
    assert len(got) == 40
