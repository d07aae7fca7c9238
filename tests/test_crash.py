"""50 `kill -9` trials at random moments across label import and select.

Each trial forks a child that runs the real ``import_labels`` or ``select_workspace`` on a
tiny text-only workspace and SIGKILLs it after a random delay drawn over the operation's
measured duration (so kills land before, inside and after the SQLite transaction and the
export writes). After every trial: ``PRAGMA integrity_check`` is ok; every acknowledged
label is stored with its value; a killed import is all-or-nothing; every visible batch
has all of its export files, matching its rows; no item is in two batches; and a re-run
of the killed operation completes.
"""

import csv
import os
import random
import signal
import sqlite3
import time

from annot_ws import make_ws

N_TRIALS = 50
EXPORTS = (".csv", ".jsonl", ".labelstudio.json", ".labelstudio-config.xml")


def _run_child(fn):
    """Fork; the child runs ``fn`` and writes b'A' (acknowledged) to a pipe. Returns (pid, read fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            fn()
            os.write(w, b"A")
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    os.close(w)
    return pid, r


def _kill_after(pid, r, delay):
    time.sleep(delay)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status = os.waitpid(pid, 0)
    acked = os.read(r, 1) == b"A"
    os.close(r)
    return acked, status


def _state(ws):
    con = sqlite3.connect(ws.dir / "state.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        labels = {(i, rnd): lab for i, rnd, lab in con.execute("SELECT item_id, round, label FROM labels")}
        batches = {b: [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id=? ORDER BY rank", (b,))]
                   for (b,) in con.execute("SELECT batch_id FROM batches")}
    finally:
        con.close()
    return labels, batches


def _check_batches(ws, batches):
    seen = set()
    for b, items in batches.items():
        assert items, f"batch {b} is empty"
        assert not seen & set(items), f"batch {b} repeats items"
        seen |= set(items)
        for suf in EXPORTS:  # visible => exported
            assert (ws.dir / "exports" / f"batch-{b:04d}{suf}").is_file(), (b, suf)
        with open(ws.dir / "exports" / f"batch-{b:04d}.csv", newline="") as f:
            assert [r["id"] for r in csv.DictReader(f)] == items


def test_kill9_trials(tmp_path):
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import import_labels

    ws = make_ws(tmp_path, n_pool=400, n_test=4)
    os.environ["MMAL_LOCK_TIMEOUT"] = "30"
    rng = random.Random(14)
    select_workspace(ws.dir, "entropy", 8)  # round 1 has a batch; later selects append to it
    acked_labels = {}
    # measured durations of one complete operation, to spread the kills over them
    t0 = time.monotonic()
    select_workspace(ws.dir, "entropy", 3, append=True)
    dur = {"select": time.monotonic() - t0}
    dur["label"] = dur["select"]
    kinds = {"select": 0, "label": 0, "acked": 0, "killed": 0}
    start = time.monotonic()
    for trial in range(N_TRIALS):
        labels, batches = _state(ws)
        op = rng.choice(["select", "label"])
        if op == "label":
            pending = [i for items in batches.values() for i in items if (i, 1) not in labels]
            if len(pending) < 4:
                op = "select"
        kinds[op] += 1
        if op == "label":
            chosen = rng.sample(pending, min(6, len(pending)))
            want = {(i, 1): rng.randrange(3) for i in chosen}
            f = tmp_path / f"labels{trial}.csv"
            f.write_text("id,label\n" + "".join(f"{i},{v}\n" for (i, _), v in want.items()))
            fn = lambda: import_labels(Workspace(ws.dir), f)  # noqa: E731
        else:
            fn = lambda: select_workspace(ws.dir, "entropy", 3, append=True)  # noqa: E731
        pid, r = _run_child(fn)
        t_op = time.monotonic()
        acked, status = _kill_after(pid, r, rng.uniform(0, 1.3 * dur[op]))
        if acked:
            dur[op] = 0.8 * dur[op] + 0.2 * (time.monotonic() - t_op)
        kinds["acked" if acked else "killed"] += 1
        labels2, batches2 = _state(ws)
        _check_batches(ws, batches2)
        for k, v in acked_labels.items():
            assert labels2.get(k) == v, f"trial {trial}: acknowledged label {k} lost"
        assert {k: v for k, v in labels2.items() if k in labels} == labels  # nothing earlier changed
        if op == "label":
            stored = {k: labels2.get(k) for k in want}
            assert stored == want or all(v is None for v in stored.values()), f"trial {trial}: half an import"
            if acked:
                assert stored == want
            else:  # re-run completes
                import_labels(Workspace(ws.dir), f)
                assert {k: _state(ws)[0].get(k) for k in want} == want
            acked_labels.update(want)
        else:
            new = set(batches2) - set(batches)
            assert len(new) <= 1 and (new or not acked)
            if not new:  # re-run completes
                select_workspace(ws.dir, "entropy", 3, append=True)
                labels3, batches3 = _state(ws)
                _check_batches(ws, batches3)
                assert len(batches3) == len(batches) + 1
    elapsed = time.monotonic() - start
    print(f"crash trials: {kinds}, {elapsed:.1f} s")
    assert kinds["select"] >= 10 and kinds["label"] >= 10
    assert kinds["killed"] >= 10  # the kills did land inside operations


def test_kill9_train_score_encode(tmp_path):
    """`kill -9` at random moments of train, score and encode (10 trials each).

    After every kill: the database passes ``integrity_check``; the round's checkpoint is either
    absent or loads; the scored pool is either absent or whole (ids, probs and embedding of the
    same length, probabilities summing to 1); the feature cache loads; a re-run completes.
    Features are synthetic for train/score (no tower); encode runs the real MiniLM tower,
    loaded once in this process before the forks.
    """
    import numpy as np

    from mmal.features.cache import FeatureCache, remember_fingerprint
    from mmal.engine import encode_workspace
    from mmal.features.pipeline import load_features
    from mmal.loop.workspace_round import score_workspace, train_workspace
    from mmal.loop.core import load_learner
    from mmal.workspace import Workspace
    from mmal.workspace.pool_io import load_pool

    ws = make_ws(tmp_path, n_pool=120, n_test=12, n_train=30)
    ids = ws.items.column("id").to_pylist()
    rng = np.random.default_rng(0)
    cls = np.array([int(i[1:]) % 3 for i in ids])
    pooled = rng.normal(size=(len(ids), 16)).astype(np.float32) + 2.0 * cls[:, None]
    cache = FeatureCache(ws.dir / "features")
    remember_fingerprint(cache, "text:minilm", {}, "fake0000")
    cache.write_chunk("fake0000", "text", ids, pooled, [p[None] for p in pooled], np.ones(len(ids), bool))

    def check_state():
        con = sqlite3.connect(ws.dir / "state.sqlite")
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()
        model = ws.dir / "rounds" / "0" / "model.pt"
        if model.exists():
            load_learner(model)
        pool_dir = ws.dir / "rounds" / "0" / "pool"
        if pool_dir.exists():
            pool = load_pool(pool_dir)
            assert len(pool.ids) == len(ids) == pool.probs.shape[0] == pool.embedding.shape[0]
            assert np.allclose(np.asarray(pool.probs).sum(1), 1, atol=1e-4)

    rnd = random.Random(7)
    t0 = time.monotonic()
    train_workspace(ws.dir, progress=False)
    dur = {"train": time.monotonic() - t0}
    t0 = time.monotonic()
    score_workspace(ws.dir, progress=False)
    dur["score"] = time.monotonic() - t0
    ops = {"train": lambda: train_workspace(ws.dir, progress=False), "score": lambda: score_workspace(ws.dir, progress=False)}
    killed = 0
    for trial in range(20):
        op = ("train", "score")[trial % 2]
        pid, r = _run_child(ops[op])
        acked, _ = _kill_after(pid, r, rnd.uniform(0, 1.3 * dur[op]))
        killed += not acked
        check_state()
        ops[op]()  # a re-run completes
        check_state()
    assert killed >= 5

    # encode: a real tower on a fresh workspace of 24 short texts, killed mid-way 10 times
    enc_ws = make_ws(tmp_path / "enc", n_pool=24, n_test=3, n_train=3)
    enc_ws.config["encoders"] = {"text": "text:minilm"}
    enc_ws.save_config()
    from mmal import encoders

    encoders.load("text:minilm")  # loaded before the forks; children reuse it
    enc_ws.config.setdefault("encode", {})["batch_size"] = 2
    enc_ws.save_config()
    t0 = time.monotonic()
    encode_workspace(enc_ws.dir, progress=False)
    dur_enc = time.monotonic() - t0
    import shutil

    shutil.rmtree(enc_ws.dir / "features")
    (enc_ws.dir / "features").mkdir()
    for trial in range(10):
        pid, r = _run_child(lambda: encode_workspace(enc_ws.dir, progress=False))
        _kill_after(pid, r, rnd.uniform(0, 1.2 * dur_enc))
        FeatureCache(enc_ws.dir / "features")  # opening the cache never fails
    encode_workspace(enc_ws.dir, progress=False)  # the re-run completes what is missing
    feats = load_features(Workspace(enc_ws.dir))
    assert len(feats["text"]) == enc_ws.items.num_rows and feats["text"].present.all()
