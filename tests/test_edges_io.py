"""The edges of workspace I/O: a full or read-only disk is "cannot write" (the path and the free
space), never "damaged, re-run `mmal init`"; a failed write records nothing and leaves no file
behind; documented commands and every `mmal.toml` key give one line naming the file and the
section; the review page caps request bodies; the CSV formula guard sees through leading
spaces; the feature cache can be read while another process consolidates it.

Workspaces are tiny and text-only (a scored pool written directly, or synthetic cached
features), so no encoder model is loaded. The disk errors are made two ways: in-process, by a
SQLite connection or a file write that raises the very error a full or read-only disk raises
(always runs); and for real, on a small tmpfs mounted for the test (skipped where mounting is
not permitted, e.g. without root).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from annot_ws import db_rows, digest, make_ws
from conftest import run_cli


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def cli(capsys, *args) -> tuple[int, str, str]:
    """The real CLI in this process (so that a monkeypatched error reaches it); (code, stdout, stderr)."""
    from mmal.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def labels_file(tmp_path: Path, rows: str = "id,label\np1,2\np2,0\n") -> Path:
    p = tmp_path / "labels.csv"
    p.write_text(rows)
    return p


def export_files(ws_dir: Path) -> list[str]:
    d = Path(ws_dir) / "exports"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# ---- a SQLite connection that fails the way a full or read-only disk makes it fail -------------
class _FailingConnection:
    """Wraps a real connection; the first statement starting with ``when`` raises ``error``."""

    def __init__(self, con, when: str, error: Exception):
        self._con, self._when, self._error = con, when, error

    def execute(self, sql, *args):
        if sql.strip().upper().startswith(self._when):
            raise self._error
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


def fail_sqlite(monkeypatch, when: str, error: Exception) -> None:
    """Workspace connections (``Workspace.db``) raise ``error`` at the first ``when`` statement."""
    import mmal.workspace.workspace as wsmod

    real = sqlite3.connect

    class _Sqlite:
        def __getattr__(self, name):
            return getattr(sqlite3, name)

        @staticmethod
        def connect(*a, **k):
            con = real(*a, **k)
            if "mode=rw" in str(a[0] if a else k.get("database", "")):
                return _FailingConnection(con, when, error)
            return con

    monkeypatch.setattr(wsmod, "sqlite3", _Sqlite())


def read_only_fs(monkeypatch) -> None:
    """``os.statvfs`` as on a file system mounted read-only (the test runs as root, where chmod stops nothing)."""
    import mmal.utils as utils

    real = os.statvfs

    class _St:
        def __init__(self, st):
            self._st = st
            self.f_flag = st.f_flag | os.ST_RDONLY

        def __getattr__(self, name):
            return getattr(self._st, name)

    monkeypatch.setattr(utils.os, "statvfs", lambda p: _St(real(p)))


FULL = sqlite3.OperationalError("database or disk is full")
READONLY = sqlite3.OperationalError("attempt to write a readonly database")
IOERR = sqlite3.OperationalError("disk I/O error")


def assert_cannot_write(line: str, path: Path, cause: str) -> None:
    assert str(path) in line and "cannot write" in line and cause in line, line
    assert "free of" in line, line  # the free space, from shutil.disk_usage
    assert "damaged" not in line and "mmal init" not in line and "--force" not in line, line


# ---- 1. wrong advice: cannot write is not damage --------------------------------------------------
@pytest.mark.parametrize("when,error,fs_read_only,cause", [
    ("COMMIT", FULL, False, "the disk is full"),
    ("BEGIN IMMEDIATE", READONLY, False, "read-only"),
    ("PRAGMA JOURNAL_MODE", IOERR, True, "the file system is read-only"),
    ("PRAGMA QUICK_CHECK", sqlite3.OperationalError("unable to open database file"), True, "the file system is read-only"),
])
def test_label_on_a_disk_that_refuses_writes(tmp_path, capsys, monkeypatch, when, error, fs_read_only, cause):
    ws = make_ws(tmp_path)
    labels = labels_file(tmp_path)
    before = db_rows(ws.dir)
    fail_sqlite(monkeypatch, when, error)
    if fs_read_only:
        read_only_fs(monkeypatch)
    import mmal.workspace.workspace as wsmod

    wsmod._CHECKED.clear()  # so that the opening check runs again in this process
    code, out, err = cli(capsys, "label", ws.dir, labels, "--allow-unbatched")
    assert code == 2, (out, err)
    assert_cannot_write(one_line(err), ws.dir / "state.sqlite", cause)
    monkeypatch.undo()
    assert db_rows(ws.dir) == before  # nothing was stored


def test_damaged_database_with_labels_never_advises_init(tmp_path):
    """A damaged database may hold labels imported since `mmal init`: re-running init is never the advice."""
    ws = make_ws(tmp_path)
    r = run_cli("label", ws.dir, labels_file(tmp_path), "--allow-unbatched")
    assert r.returncode == 0, r.stderr
    db = ws.dir / "state.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    r = run_cli("info", ws.dir)
    line = one_line(r.stderr)
    assert r.returncode == 2 and str(db) in line and "damaged" in line and "restore it from a backup" in line
    assert "or re-run `mmal init`" not in line and "would start again from the items file and lose" in line


def test_missing_items_table_advice_depends_on_the_labels(tmp_path):
    """With only the items file's labels, re-running init loses nothing and is offered; with two labels
    imported since, it is not, and the message says how many would be lost."""
    ws = make_ws(tmp_path)
    (ws.dir / "items.parquet").unlink()
    line = one_line(run_cli("info", ws.dir).stderr)
    assert "items.parquet" in line and "re-run `mmal init --force`" in line
    ws2 = make_ws(tmp_path / "second")
    assert run_cli("label", ws2.dir, labels_file(tmp_path), "--allow-unbatched").returncode == 0
    (ws2.dir / "items.parquet").unlink()
    line = one_line(run_cli("info", ws2.dir).stderr)
    assert "items.parquet" in line and "restore it from a backup" in line
    assert "would lose the 2 labels imported since" in line and "or re-run" not in line


def test_bad_config_value_never_advises_init(tmp_path):
    ws = make_ws(tmp_path)
    cfg = tomllib.loads((ws.dir / "mmal.toml").read_text())
    cfg.setdefault("train", {})["lr"] = "fast"
    (ws.dir / "mmal.toml").write_text(tomli_w.dumps(cfg))
    line = one_line(run_cli("info", ws.dir).stderr)
    assert "mmal.toml" in line and "[train] lr" in line and "mmal init" not in line


# ---- 2. a write that fails records nothing and leaves nothing ------------------------------------
def test_disk_full_at_select_commit(tmp_path, capsys, monkeypatch):
    """COMMIT fails with SQLITE_FULL (as at 64 KiB free): one line, no batch, no export files, and the
    failed ROLLBACK after SQLite's own rollback hides nothing."""
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path)
    select_workspace(ws.dir, "entropy", 4)
    before, files = digest(ws.dir), export_files(ws.dir)
    fail_sqlite(monkeypatch, "COMMIT", FULL)
    code, out, err = cli(capsys, "select", ws.dir, "--strategy", "entropy", "--budget", "3", "--append")
    assert code == 2, (out, err)
    line = one_line(err)
    assert_cannot_write(line, ws.dir / "state.sqlite", "the disk is full")
    assert "nothing was recorded" in line
    monkeypatch.undo()
    assert export_files(ws.dir) == files  # no batch-0002.* of a batch that does not exist
    assert digest(ws.dir) == before


def test_disk_full_while_writing_exports(tmp_path, capsys, monkeypatch):
    """ENOSPC on the second export file: the first is removed again, no batch, one line naming the file."""
    import mmal.utils as utils

    ws = make_ws(tmp_path)
    before = digest(ws.dir)
    real, calls = utils.atomic_write_bytes, []

    def enospc(path, data):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(utils, "atomic_write_bytes", enospc)
    code, out, err = cli(capsys, "select", ws.dir, "--strategy", "entropy", "--budget", "3")
    assert code == 2, (out, err)
    assert_cannot_write(one_line(err), ws.dir / "exports", "the disk is full")
    assert calls[:2] == ["batch-0001.csv", "batch-0001.jsonl"]
    monkeypatch.undo()
    assert export_files(ws.dir) == [] and digest(ws.dir) == before


def test_disk_full_while_saving_the_checkpoint(tmp_path, capsys, monkeypatch):
    """A short write of torch.save with no errno (as on a full disk): one line naming model.pt and the
    free space, no temp file left, the previous checkpoint kept."""
    from mmal.loop.workspace_round import train_workspace

    ws = fake_feature_ws(tmp_path)
    train_workspace(ws, learner="linear", progress=False)
    model = ws / "rounds" / "0" / "model.pt"
    old = model.read_bytes()
    import torch

    import mmal.utils as utils

    def short_write(obj, f, *a, **k):
        Path(f).write_bytes(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(utils, "LOW_SPACE", shutil.disk_usage(ws).free + (1 << 30), raising=False)  # "almost no space left"
    code, out, err = cli(capsys, "train", ws, "--learner", "linear")
    assert code == 2, (out, err)
    assert_cannot_write(one_line(err), model, "the disk is full")
    monkeypatch.undo()
    assert model.read_bytes() == old
    assert sorted(p.name for p in model.parent.iterdir() if p.name.startswith(".")) == []


def fake_feature_ws(tmp_path: Path, n: int = 16) -> Path:
    """init (text only, binary: train, pool and test items) + synthetic text features, separable by class,
    under the recorded text:minilm fingerprint."""
    from conftest import write_items
    from mmal.features.cache import FeatureCache, remember_fingerprint
    from mmal.workspace import init_workspace

    rows, classes = [], []
    for k in range(n):
        split = ("pool", "train", "train", "test")[k % 4]
        classes.append((k // 4) % 2 if split == "test" else k % 2)
        rows.append({"id": f"i{k:02d}", "label": None if split == "pool" else classes[-1], "split": split,
                     "text": f"item {k}"})
    ws = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows)).dir
    cache = FeatureCache(ws / "features")
    remember_fingerprint(cache, "text:minilm", {}, "fake0000")
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(n, 8)).astype(np.float32) + 2.0 * np.array(classes)[:, None]
    cache.write_chunk("fake0000", "text", [r["id"] for r in rows], pooled, [np.stack([p, p]) for p in pooled],
                      np.ones(n, bool))
    return ws


# ---- the same on a real small disk ----------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk (skipped where `mount` is not permitted)."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); the in-process tests cover the paths")
    try:
        yield d
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(d)], capture_output=True)
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until ``leave`` bytes are free."""
    (disk / "filler").unlink(missing_ok=True)
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True, capture_output=True)


def test_real_full_disk_select_append(tmp_path, small_disk):
    """`select --append` with 0 to 100 KiB free: it succeeds whole, or fails with one line naming the file
    and the free space; never a traceback, never "damaged", never export files of an unrecorded batch."""
    from mmal.loop.workspace_round import select_workspace

    ws = make_ws(tmp_path)
    select_workspace(ws.dir, "entropy", 4)
    outcomes = set()
    for leave_kib in (0, 16, 40, 64, 80, 100):
        ws_on_disk = small_disk / "ws"
        shutil.rmtree(ws_on_disk, ignore_errors=True)
        (small_disk / "filler").unlink(missing_ok=True)
        shutil.copytree(ws.dir, ws_on_disk)
        before = db_rows(ws_on_disk)
        fill(small_disk, leave_kib * 1024)
        r = run_cli("select", ws_on_disk, "--strategy", "entropy", "--budget", "3", "--append")
        (small_disk / "filler").unlink()
        after = db_rows(ws_on_disk)
        batches = {b[0] for b in after["batches"]}
        files = export_files(ws_on_disk)
        assert all(int(f[6:10]) in batches for f in files), (leave_kib, files, batches)  # no orphan export
        if r.returncode == 0:
            outcomes.add("ok")
            assert batches == {1, 2} and len(files) == 8
        else:
            outcomes.add("refused")
            assert r.returncode == 2, r.stderr
            line = one_line(r.stderr)
            assert "cannot write" in line and "the disk is full" in line and "free of" in line, (leave_kib, line)
            assert "damaged" not in line and "mmal init" not in line
            assert after == before, leave_kib
    assert outcomes == {"ok", "refused"}  # the sizes cover both sides of "enough room"


def test_real_full_disk_init(tmp_path, small_disk):
    from conftest import write_items

    rng = np.random.default_rng(0)  # text that does not compress away: the workspace needs more than 8 KiB
    rows = [{"id": f"i{k}", "label": k % 2, "text": " ".join(f"w{w}" for w in rng.integers(0, 10**6, 60))} for k in range(300)]
    items = write_items(tmp_path / "src", rows)
    fill(small_disk, 8 * 1024)
    r = run_cli("init", small_disk / "ws", "--items", items)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert_cannot_write(line, small_disk / "ws", "the disk is full")
    assert "nothing was created" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no half-built workspace left


def test_real_read_only_mount(tmp_path, small_disk):
    ws = make_ws(tmp_path)
    shutil.copytree(ws.dir, small_disk / "ws")
    before = digest(small_disk / "ws")
    remount(small_disk, "ro")
    labels = labels_file(tmp_path)
    for args in (("info",), ("label", labels, "--allow-unbatched"), ("select", "--strategy", "entropy", "--budget", "2"),
                 ("config",)):
        r = run_cli(args[0], small_disk / "ws", *args[1:])
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert_cannot_write(one_line(r.stderr), small_disk / "ws" / "state.sqlite", "the file system is read-only")
    r = run_cli("init", small_disk / "new", "--items", ws.config["task"]["items_source"])
    assert_cannot_write(one_line(r.stderr), small_disk / "new", "the file system is read-only")
    remount(small_disk, "rw")
    assert digest(small_disk / "ws") == before


# ---- 6. the feature cache read while another process consolidates it ------------------------------
CACHE_SCRIPT = r'''
import sys, time
import numpy as np
from pathlib import Path
from mmal.features.cache import FeatureCache

def expected(k):
    """Independent of the cache: item k's pooled vector and tokens."""
    pooled = np.full(16, k * 0.5, np.float32) + np.arange(16, dtype=np.float32)
    seq = (np.arange(1 + k % 5, dtype=np.float32)[:, None] + (k % 1024)) * np.ones((1, 16), np.float32)
    return pooled, seq

def write(cache, start, n):
    ks = list(range(start, start + n))
    cache.write_chunk("fp", "text", [f"i{k:05d}" for k in ks], np.stack([expected(k)[0] for k in ks]),
                      [expected(k)[1] for k in ks], np.ones(n, bool))

def check(feats, rng):
    ids = feats.ids.tolist()
    assert len(ids) == feats.pooled.shape[0] == len(feats.present)
    total = float(np.asarray(feats.seq, np.float32).sum())  # touch every mapped page
    want = sum(float(expected(int(i[1:]))[1].sum()) for i in ids)
    assert abs(total - want) < 1e-3 * max(1.0, want), (total, want)
    for j in rng.choice(len(ids), size=min(20, len(ids)), replace=False):
        k = int(ids[j][1:])
        p, s = expected(k)
        np.testing.assert_array_equal(np.asarray(feats.pooled[j]), p)
        np.testing.assert_array_equal(np.asarray(feats.sequence(j), np.float32), s)

if __name__ == "__main__":
    root, role, stop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    cache, rng, n = FeatureCache(root), np.random.default_rng(int(sys.argv[4])), 0
    if role == "reader":
        while not stop.exists():
            feats = cache.load("fp", "text")
            for _ in range(3):  # keep reading the mapped arrays while the writer consolidates
                check(feats, rng)
            n += 1
        print(n)
    else:  # "chunks": write sys.argv[5] chunks of 10 items from id sys.argv[6] on, as fast as possible
        for c in range(int(sys.argv[5])):
            write(cache, int(sys.argv[6]) + 10 * c, 10)
'''


@pytest.fixture
def cache_script(tmp_path):
    p = tmp_path / "cache_worker.py"
    p.write_text(CACHE_SCRIPT)
    return p


def _worker(script: Path, *args) -> subprocess.Popen:
    import sys

    import mmal

    env = dict(os.environ, PYTHONPATH=str(Path(mmal.__file__).resolve().parents[1]))  # the mmal this test imports
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_feature_cache_read_while_another_process_consolidates(tmp_path, cache_script):
    """A second process maps and reads the features over and over while this one adds chunks and
    consolidates them: it never dies (no bus error) and always reads the values each item was
    written with (checked against a formula, not against the cache)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cache_worker", cache_script)
    w = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(w)
    from mmal.features.cache import FeatureCache

    root, stop = tmp_path / "features", tmp_path / "stop"
    cache = FeatureCache(root)
    for c in range(30):
        w.write(cache, 200 * c, 200)  # 6000 items, a consolidation takes a while
    cache.load("fp", "text")
    readers = [_worker(cache_script, root, "reader", stop, seed) for seed in (1, 2)]
    try:
        import time

        t0, rounds, start = time.monotonic(), 0, 6000
        while time.monotonic() - t0 < 6 or rounds < 5:
            w.write(cache, start, 50)
            start += 50
            feats = cache.load("fp", "text")  # consolidates: the readers hold the previous view mapped
            w.check(feats, np.random.default_rng(rounds))
            rounds += 1
            assert all(r.poll() is None for r in readers), [r.communicate() for r in readers if r.poll() is not None]
    finally:
        stop.touch()
        outs = [r.communicate(timeout=120) for r in readers]
    for r, (out, err) in zip(readers, outs):
        assert r.returncode == 0, (r.returncode, err[-3000:])  # -7 would be SIGBUS
        assert int(out.strip()) >= 3, out
    feats = cache.load("fp", "text")
    assert len(feats) == start and sorted(feats.ids.tolist()) == [f"i{k:05d}" for k in range(start)]
    views = [p.name for p in (root / "fp" / "text").iterdir() if "view" in p.name and p.is_dir()]
    assert len(views) == 1, views  # older views were removed once replaced


def test_two_processes_writing_chunks_lose_none(tmp_path, cache_script):
    """Two encoders writing chunks of one modality at once: every chunk keeps its own file."""
    from mmal.features.cache import FeatureCache

    root = tmp_path / "features"
    procs = [_worker(cache_script, root, "chunks", tmp_path / "unused", 0, 40, start) for start in (0, 100000)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    feats = FeatureCache(root).load("fp", "text")
    want = sorted([f"i{k:05d}" for k in range(400)] + [f"i{k:05d}" for k in range(100000, 100400)])
    assert sorted(feats.ids.tolist()) == want


# ---- 3. documented commands and mmal.toml keys on a fresh workspace --------------------------------
def edit_toml(ws: Path, fn) -> None:
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    fn(cfg)
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))


def learner_cases():
    from mmal.learners import LEARNERS
    from mmal.tasks import get_task

    binary = get_task("binary")
    out = []
    for name in LEARNERS:
        try:
            binary.check_learner(name)
            out.append(pytest.param(name, id=name))
        except Exception:  # noqa: BLE001 - a relevance learner
            out.append(pytest.param(name, id=name, marks=pytest.mark.skip(
                reason=f"'{name}' is a relevance learner: its inputs (keyword text and query states from the MiniLM "
                       "tower, visual tokens) need an encoder model; tests/test_relevance_cli.py trains it")))
    return out


@pytest.mark.parametrize("name", learner_cases())
def test_every_learner_trains_on_a_fresh_workspace(tmp_path, name):
    """`mmal train WS --learner NAME` then `mmal score WS` on a fresh workspace whose mmal.toml sets documented
    [train] and [model] keys: settings that the chosen learner does not read are not forwarded to it."""
    ws = fake_feature_ws(tmp_path)
    edit_toml(ws, lambda c: (c.setdefault("train", {}).update(epochs=3, lr=0.01), c.setdefault("model", {}).update(heads="fused")))
    r = run_cli("train", ws, "--learner", name)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout.strip().splitlines()[-1])["learner"] == name
    r = run_cli("score", ws)
    assert r.returncode == 0, r.stderr
    probs = np.load(ws / "rounds" / "0" / "pool" / "probs.npy")
    assert probs.shape == (16, 2) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_epochs_flag_on_a_learner_without_epochs(tmp_path):
    ws = fake_feature_ws(tmp_path)
    r = run_cli("train", ws, "--learner", "linear", "--epochs", "3")
    line = one_line(r.stderr)
    assert r.returncode == 2 and "--epochs" in line and "'linear'" in line
    assert not (ws / "rounds" / "0" / "model.pt").exists()


@pytest.mark.parametrize("learner", ["late-fusion", "fusion"])
def test_train_on_cuda_without_cuda(tmp_path, learner):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: [train] device = 'cuda' is valid here")
    ws = fake_feature_ws(tmp_path)
    edit_toml(ws, lambda c: c.setdefault("train", {}).update(device="cuda"))
    r = run_cli("train", ws, "--learner", learner)
    assert r.returncode == 2, r.stdout
    line = one_line(r.stderr)
    assert str(ws / "mmal.toml") in line and "[train] device" in line and "CUDA is not available" in line
    assert not (ws / "rounds" / "0" / "model.pt").exists()


README = Path(__file__).resolve().parents[1] / "README.md"
#: README commands this test cannot run as written, and why (each is tested elsewhere)
README_SKIP = {
    "encode": "loads the encoder towers; the workspace has synthetic cached features instead (tests/test_feature_cache.py)",
    "serve": "starts a server (tests/test_serve.py)",
    "simulate": "encodes its items with the towers (tests/test_workflow.py)",
    "dataset": "needs Debian's Tux Paint stamps (tests/test_datasets.py)",
}


def test_readme_quick_start_on_a_fresh_workspace(tmp_path):
    """Every `mmal ...` line of the README's quick start runs on a fresh workspace (exit 0, no traceback),
    in the written order, except the ones in README_SKIP."""
    import csv
    import re
    import shlex

    blocks = [b for b in re.findall(r"```(?:bash|sh|console)\n(.*?)```", README.read_text(), flags=re.S)
              if "mmal init" in b and "mmal train" in b]
    assert blocks, "README has no block of mmal commands"
    ws = fake_feature_ws(tmp_path)
    edit_toml(ws, lambda c: c.setdefault("train", {}).update(epochs=3))
    items = Path(tomllib.loads((ws / "mmal.toml").read_text())["task"]["items_source"])
    shutil.rmtree(ws)
    ran = []
    for line in blocks[0].splitlines():
        if not line.startswith("mmal "):
            continue  # a comment continuing the line above
        args = shlex.split(line.split("#", 1)[0])[1:]
        if not args or args[0] in README_SKIP:
            continue
        if args[0] == "label":  # label what the select before exported
            rows = list(csv.DictReader(open(ws / "exports" / "batch-0001.csv", newline="")))
            (tmp_path / "labels.csv").write_text("id,label\n" + "".join(f"{r['id']},{k % 2}\n" for k, r in enumerate(rows)))
        sub = {"ws": ws, "items.parquet": items, "labels.csv": tmp_path / "labels.csv", "ITEM_ID": "i01"}
        r = run_cli(*[sub.get(a, a) for a in args])
        assert r.returncode == 0 and "Traceback" not in r.stderr, (line, r.stderr)
        if args[0] == "init":  # synthetic features instead of `mmal encode`
            shutil.rmtree(ws)
            shutil.copytree(fake_feature_ws(tmp_path / "fresh"), ws)
            edit_toml(ws, lambda c: c.setdefault("train", {}).update(epochs=3))
        ran.append(args[0])
    assert {"init", "config", "train", "score", "evaluate", "select", "label", "report"} <= set(ran), ran


def wrong_type(key) -> object:
    return {"int": "abc", "float": "fast", "str": 12, "bool": "yes", "str-list": 3, "float-list": "x",
            "int-table": 5, "table": 5}[key.kind]


def schema_keys():
    from mmal.workspace.schema import SCHEMA

    return [pytest.param(section, name, id=f"{section}.{name}") for section in SCHEMA for name in SCHEMA[section]]


@pytest.fixture(scope="module")
def toml_ws(tmp_path_factory):
    return make_ws(tmp_path_factory.mktemp("toml")).dir


@pytest.mark.parametrize("section,name", schema_keys())
def test_every_schema_key_with_a_wrong_type(toml_ws, tmp_path, capsys, section, name):
    """Each `[section] key` of the schema set to a value of the wrong type: `mmal info` refuses it with one
    line naming mmal.toml, the section and the key, and changes nothing."""
    from mmal.workspace.schema import SCHEMA

    ws = tmp_path / "ws"
    shutil.copytree(toml_ws, ws)
    bad = wrong_type(SCHEMA[section][name])
    edit_toml(ws, lambda c: c.setdefault(section, {}).__setitem__(name, bad))
    before = digest(ws)
    code, out, err = cli(capsys, "info", ws)
    assert code == 2, (out, err)
    line = one_line(err)
    assert str(ws / "mmal.toml") in line and f"[{section}]" in line and name in line, line
    assert digest(ws) == before


# ---- 4. config errors found when a value is used also name the file and the key ---------------------
USE_TIME = {
    "select-strategy": (lambda c: c.setdefault("select", {}).update(strategy="rm -rf"),
                        ("select", "{ws}", "--budget", "2"), "[select] strategy"),
    "select-mix": (lambda c: c.setdefault("select", {}).update(strategy="entropy:0.5,bogus:0.5"),
                   ("select", "{ws}", "--budget", "2"), "[select] strategy"),
    "encoder-unknown": (lambda c: c["encoders"].update(text="text:nope"), ("encode", "{ws}"), "[encoders] text"),
    "encoder-wrong-modality": (lambda c: c["encoders"].update(text="audio:whisper-base"), ("train", "{ws}"), "[encoders] text"),
    "media-url-field": (lambda c: c.setdefault("export", {}).update(media_url="/data/{file}"),
                        ("select", "{ws}", "--strategy", "entropy", "--budget", "2"), "[export] media_url"),
    "learner-of-another-task": (lambda c: c.setdefault("model", {}).update(learner="probe"), ("train", "{ws}"), "[model]"),
}


@pytest.mark.parametrize("case", sorted(USE_TIME))
def test_config_error_names_file_and_section(tmp_path, case):
    ws = make_ws(tmp_path).dir
    edit, args, words = USE_TIME[case]
    edit_toml(ws, edit)
    before = digest(ws)
    r = run_cli(*[a.format(ws=ws) for a in args])
    assert r.returncode == 2, r.stdout
    line = one_line(r.stderr)
    assert str(ws / "mmal.toml") in line and words in line, line
    assert digest(ws) == before


def test_strategy_flag_errors_name_the_flag(tmp_path):
    ws = make_ws(tmp_path).dir
    line = one_line(run_cli("select", ws, "--strategy", "rm -rf", "--budget", "2").stderr)
    assert line.startswith("mmal: error: --strategy 'rm -rf': unknown strategy 'rm -rf'"), line
    line = one_line(run_cli("export", ws, "--round", "1", "--media-url", "{nope}").stderr)
    assert "--media-url" in line and "'nope'" in line, line


# ---- 5. limits: the review page's request body, the CSV formula guard -------------------------------
def _labels_of(ws_dir: Path, rnd: int = 1) -> dict:
    con = sqlite3.connect(ws_dir / "state.sqlite")
    try:
        return dict(con.execute("SELECT item_id, label FROM labels WHERE round = ?", (rnd,)).fetchall())
    finally:
        con.close()


@pytest.fixture(scope="module")
def serve_ws(tmp_path_factory):
    from serve_support import build_workspace

    return build_workspace(tmp_path_factory.mktemp("serve-limits"), n_pool=8, n_batch=4)


def test_review_page_caps_the_request_body(serve_ws):
    """A 50 MB label post is refused with 413 and a JSON error (also without a Content-Length, as soon as
    the limit is passed); a post at the limit is still read; nothing is stored by the refused ones."""
    httpx = pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from mmal.serve.app import MAX_BODY_BYTES, create_app

    assert MAX_BODY_BYTES == 1 << 20
    item = sorted(_batch_items(serve_ws))[0]
    before = _labels_of(serve_ws)
    client = TestClient(create_app(serve_ws, token="t0k", require_token=False), base_url="http://127.0.0.1")
    head = {"X-MMAL-Token": "t0k", "Content-Type": "application/json"}
    big = b'{"item_id": "%s", "label": 1, "annotator": "' % item.encode() + b"x" * (50 << 20) + b'"}'
    r = client.post("/api/label", content=big, headers=head)
    assert r.status_code == 413 and "larger than 1048576 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: chunked
        for _ in range(3):
            yield b" " * (600 << 10)
    r = client.post("/api/label", content=chunks(), headers=head)
    assert r.status_code == 413 and "error" in r.json()
    assert _labels_of(serve_ws) == before
    # just under the limit (whitespace padding): read, and the label is stored
    body = b'{"item_id": "%s", "label": 2}' % item.encode()
    r = client.post("/api/label", content=body + b" " * (MAX_BODY_BYTES - len(body)), headers=head)
    assert r.status_code == 200, r.text
    assert _labels_of(serve_ws)[item] == 2
    small = TestClient(create_app(serve_ws, token="t0k", require_token=False, max_body_bytes=16), base_url="http://127.0.0.1")
    assert small.post("/api/label", content=body, headers=head).status_code == 413


def _batch_items(ws_dir: Path) -> list[str]:
    con = sqlite3.connect(ws_dir / "state.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT item_id FROM batch_items WHERE batch_id = 1")]
    finally:
        con.close()


def test_real_server_refuses_a_huge_body_without_reading_it(serve_ws):
    """The server answers 413 as soon as it has the headers of a post announcing 50 MB: it does not wait for
    (or buffer) the body."""
    import socket

    pytest.importorskip("httpx")
    from serve_support import server

    with server(serve_ws) as (proc, base, token):
        host, port = base[len("http://"):].split(":")
        s = socket.create_connection((host, int(port)), timeout=15)
        try:
            s.sendall((f"POST /api/label HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: {base}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {50 << 20}\r\n\r\n").encode() + b'{"item_id": ')
            reply = b""
            while b"\r\n\r\n" not in reply or b'"error"' not in reply:
                got = s.recv(65536)  # a timeout here: the server waits for the 50 MB
                if not got:
                    break
                reply += got
            reply = reply.decode("latin-1")
        finally:
            s.close()
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert '"error"' in reply


@pytest.mark.parametrize("cell", ["  =1+1", " \t=HYPERLINK(\"http://x\")", "\n+1", "  -2+3", " @SUM(A1)", "\r\n=1"])
def test_formula_guard_sees_through_leading_whitespace(tmp_path, cell):
    """A text cell whose formula starts after spaces, tabs or line breaks is still quoted in the CSV export
    (spreadsheets skip the whitespace and evaluate it), and the import gives back the text as it was."""
    import csv

    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import neutralise_cell, unneutralise_cell

    assert neutralise_cell(cell) == "'" + cell and unneutralise_cell("'" + cell) == cell
    assert neutralise_cell("  plain text") == "  plain text"
    ws = make_ws(tmp_path, n_pool=3, n_test=1, text={k: cell for k in range(3)})
    res = select_workspace(ws.dir, "entropy", 3)
    rows = list(csv.DictReader(open(res["exports"]["csv"], newline="")))
    assert [r["text"] for r in rows] == ["'" + cell] * 3  # nothing a spreadsheet would run
    labels = tmp_path / "back.csv"
    with open(labels, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "label": "1"})
    r = run_cli("label", ws.dir, labels)
    assert r.returncode == 0, r.stderr
    assert _labels_of(ws.dir) == {r["id"]: 1 for r in rows}


def test_init_over_a_workspace_with_labels_does_not_advise_force(tmp_path):
    """`init` over an existing workspace suggests --force only when that loses no label."""
    ws = make_ws(tmp_path)
    items = ws.config["task"]["items_source"]
    line = one_line(run_cli("init", ws.dir, "--items", items).stderr)
    assert "already a workspace" in line and "use --force to replace it" in line  # only the items file's labels
    assert run_cli("label", ws.dir, labels_file(tmp_path), "--allow-unbatched").returncode == 0
    before = digest(ws.dir)
    line = one_line(run_cli("init", ws.dir, "--items", items).stderr)
    assert "already a workspace" in line and "lose its 2 labels imported since" in line and "use --force" not in line, line
    assert digest(ws.dir) == before
