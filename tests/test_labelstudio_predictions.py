"""Label Studio pre-annotations: every exported task carries the latest scored pool's class
as a ``predictions`` entry, scored so that Label Studio's "Prediction score" ascending shows
the batch in mmal's order.

The workspace is tiny and text-only, with synthetic cached text features under the text
encoder's recorded fingerprint (as in ``test_bad_inputs.py``), so no encoder is loaded;
train and score run for real on those features.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from text_ws import NAMES, scored_text_ws


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return scored_text_ws(tmp_path_factory.mktemp("lsp"))


@pytest.fixture
def ws(scored, tmp_path):
    from mmal.workspace import Workspace

    shutil.copytree(scored.dir, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def test_tasks_carry_predictions_in_batch_order(ws):
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.pool_io import load_pool

    res = select_workspace(ws.dir, "entropy", 4)
    assert res["predictions"] == "mmal-round-0" and res["notes"] == []
    tasks = json.load(open(res["exports"]["labelstudio"]))
    order = [r["id"] for r in map(json.loads, open(res["exports"]["jsonl"]))]  # rank order
    assert len(tasks) == 4
    pool = load_pool(ws.dir / "rounds" / "0" / "pool")
    pos = {k: i for i, k in enumerate(pool.ids.tolist())}
    names = ws.class_names(2)
    assert sorted(names) == sorted(NAMES)
    for t in tasks:
        (pred,) = t["predictions"]
        expected = names[int(np.argmax(pool.probs[pos[t["data"]["item_id"]]]))]
        assert pred["model_version"] == "mmal-round-0"
        assert 0.0 <= pred["score"] < 1.0
        (r,) = pred["result"]
        assert r == {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [expected]}}
        assert "cluster" not in t["data"]  # entropy has no clusters
    by_score = [t["data"]["item_id"] for t in sorted(tasks, key=lambda t: t["predictions"][0]["score"])]
    assert by_score == order
    # the choice names a Choice of the exported config
    cfg = open(res["exports"]["labelstudio_config"]).read()
    for t in tasks:
        from xml.sax.saxutils import quoteattr

        assert f"<Choice value={quoteattr(t['predictions'][0]['result'][0]['value']['choices'][0])}/>" in cfg


def test_re_export_uses_the_latest_pool_and_says_when_none(ws):
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.annotate import export_round

    select_workspace(ws.dir, "entropy", 3)
    shutil.rmtree(ws.dir / "rounds" / "0" / "pool")
    out = export_round(ws.dir, 1)
    assert out["predictions"] is None and "no scored pool" in out["notes"][0]
    (paths,) = out["batches"].values()
    tasks = json.load(open(paths["labelstudio"]))
    assert tasks and all("predictions" not in t for t in tasks)
    r = run_cli("export", ws.dir, "--round", "1")
    assert r.returncode == 0, r.stderr
    assert "mmal: note: no scored pool yet" in r.stderr


def test_cluster_and_level_names_in_tasks():
    from mmal.data import labelstudio as ls
    from mmal.tasks.relevance import LEVEL_NAMES

    row = {"id": "a", "round": 2, "batch": 5, "strategy": "typiclust", "reason": "cluster 7", "text": "t"}
    pred = ls.prediction(LEVEL_NAMES[2], 0.25, "mmal-round-1", ["query", "video"])
    t = ls.task(row, ["query", "video"], lambda c, p, i: p, pred)
    assert t["data"]["cluster"] == 7
    assert t["predictions"][0]["result"][0]["value"]["choices"] == ["good"]
    assert t["predictions"][0]["result"][0]["to_name"] == "video"  # the control's toName in the config
    from mmal.tasks.relevance import RelevanceTask

    task = RelevanceTask()
    cfg = task.labelstudio_config(["query", "video"], task.class_names(4))
    assert 'toName="video"' in cfg
    assert [f'<Choice value="{n}"/>' in cfg for n in ("bad", "less", "good", "excellent")] == [True] * 4
    assert '<Choice value="3"/>' not in cfg
    assert "cluster" not in ls.task({**row, "reason": "seed x"}, ["text"], lambda c, p, i: p)["data"]
