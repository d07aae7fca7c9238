"""What `mmal train` says on stderr: a warning when most of the last batch is unlabeled,
one progress bar instead of a line per epoch, nothing with --quiet or MMAL_PROGRESS=0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from text_ws import scored_text_ws

EPOCHS = 30


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """Scored round 0, then a batch of 4 selected for round 1 (nothing of it labeled)."""
    from mmal.loop.workspace_round import select_workspace

    ws = scored_text_ws(tmp_path_factory.mktemp("train"), epochs=EPOCHS)
    res = select_workspace(ws.dir, "entropy", 4)
    order = [json.loads(line)["id"] for line in open(res["exports"]["jsonl"])]
    return ws.dir, order


@pytest.fixture
def ws(selected, tmp_path):
    src, order = selected
    dst = tmp_path / "ws"
    shutil.copytree(src, dst)
    return dst, order


def _label(ws_dir, ids, tmp_path):
    from mmal.workspace import Workspace
    from mmal.workspace.annotate import import_labels

    f = tmp_path / "labels.csv"
    f.write_text("id,label\n" + "".join(f"{k},ham\n" for k in ids))
    import_labels(Workspace(ws_dir), f)


def _train(ws_dir, *flags, progress="0"):
    env = dict(os.environ, MMAL_PROGRESS=progress, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "mmal.cli", "train", str(ws_dir), *flags],
                          capture_output=True, text=True, env=env, timeout=600)


def test_train_warns_when_most_of_the_last_batch_is_unlabeled(ws, tmp_path):
    ws_dir, order = ws
    _label(ws_dir, order[:1], tmp_path)  # 3 of 4 unlabeled
    r = _train(ws_dir)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (w,) = out["warnings"]
    assert w.startswith("3 of the 4 items of the last batch (batch 1, round 1) are still unlabeled")
    assert f"mmal: warning: {w}" in r.stderr.splitlines()
    assert len(r.stderr.splitlines()) < 10  # MMAL_PROGRESS=0: no epoch lines


def test_no_warning_at_half_or_less(ws, tmp_path):
    from mmal.loop.workspace_round import train_workspace

    ws_dir, order = ws
    _label(ws_dir, order[:2], tmp_path)  # exactly half unlabeled: not "most"
    assert train_workspace(ws_dir, progress=False, train={"epochs": 2})["warnings"] == []


def test_one_progress_bar_not_a_line_per_epoch(ws, tmp_path):
    ws_dir, order = ws
    _label(ws_dir, order, tmp_path)
    r = _train(ws_dir, progress="1")  # stderr is a pipe, as in a log file or CI
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) < 10, lines  # was one line per epoch (EPOCHS = 30)
    assert not any("epoch 2/" in line for line in lines)
    q = _train(ws_dir, "--quiet", progress="1")
    assert q.returncode == 0, q.stderr
    assert q.stderr.strip() == "" and json.loads(q.stdout)["warnings"] == []
