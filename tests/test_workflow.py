"""End to end on a small text-only dataset: init -> encode -> train -> score -> evaluate ->
select -> label -> train again; and `simulate` writing results.json + report.html."""

import csv
import json
import tomllib

import numpy as np
import pytest
import tomli_w

from conftest import run_cli, write_items

WORDS = {0: ["cat", "dog", "horse", "cow", "sheep"], 1: ["apple", "bread", "cheese", "pizza", "soup"], 2: ["car", "bus", "train", "truck", "bike"]}


def _rows(n=72, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        c = k % 3
        w = WORDS[c][rng.integers(5)]
        split = "test" if k % 4 == 0 else ("train" if k < 12 else "pool")
        rows.append({"id": f"t{k:03d}", "label": c if split != "pool" else None, "split": split,
                     "text": f"a picture of a {w} number {k}", "gold": c})
    return rows


@pytest.fixture(scope="module")
def text_ws(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    items = write_items(tmp / "src", _rows())
    ws = tmp / "ws"
    assert run_cli("init", ws, "--items", items, "--extra-columns", "gold").returncode == 0
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    cfg.setdefault("train", {}).update({"epochs": 30})
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))
    r = run_cli("encode", ws)
    assert r.returncode == 0, r.stderr
    return ws


def test_stage_commands_round_trip(text_ws, tmp_path):
    ws = text_ws
    r = run_cli("train", ws, "--seed", "1")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    n_train = sum(1 for x in _rows() if x["split"] == "train")
    assert info["round"] == 0 and info["n_labeled"] == n_train and (ws / "rounds/0/model.pt").exists()
    r = run_cli("score", ws)
    assert r.returncode == 0, r.stderr
    from mmal.workspace.pool_io import load_pool

    pool = load_pool(ws / "rounds/0/pool")
    assert pool.probs.shape == (72, 3) and np.allclose(np.asarray(pool.probs).sum(1), 1, atol=1e-5)
    r = run_cli("evaluate", ws)
    assert r.returncode == 0, r.stderr
    met = json.loads((ws / "rounds/0/metrics.json").read_text())
    # three unordered classes: the multiclass metrics, no "class 0 vs rest" view and no rank correlation
    assert met["task"] == "multiclass" and met["headline"] == "macro_f1"
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr", "per_class", "confusion"):
        assert k in met
    for k in ("r_at_p80", "spearman", "pearson", "multiclass_loss", "f1"):
        assert k not in met
    assert met["n_test"] == 18
    # an unknown strategy parameter is one stderr line, exit 2, nothing stored
    r = run_cli("select", ws, "--strategy", "badge", "--budget", "5", "--param", "foo=1")
    assert r.returncode == 2 and "'badge'" in r.stderr and "allowed" in r.stderr and "Traceback" not in r.stderr
    assert not (ws / "rounds/1").exists()
    r = run_cli("select", ws, "--strategy", "entropy:0.6,lsb-knn:0.4", "--budget", "10", "--param", "lsb-knn.k=2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["round"] == 1 and 1 <= out["n_selected"] <= 10
    exp = {k: v for k, v in out["exports"].items()}
    rows = list(csv.DictReader(open(exp["csv"])))
    assert len(rows) == out["n_selected"]
    split = {r_["id"]: r_ for r_ in _rows()}
    assert all(split[x["id"]]["split"] == "pool" for x in rows)  # never labeled or test items
    assert json.loads(open(exp["labelstudio"]).read())[0]["data"]["text"]
    # annotate: fill the exported CSV with gold labels and import it
    labeled = tmp_path / "labeled.csv"
    with open(labeled, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for x in rows:
            w.writerow({**x, "label": split[x["id"]]["gold"]})
    r = run_cli("label", ws, labeled)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inserted"] == len(rows)
    r = run_cli("label", ws, labeled)
    assert json.loads(r.stdout)["inserted"] == 0  # idempotent
    r = run_cli("train", ws)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["n_labeled"] == n_train + len(rows)
    assert (ws / "rounds/1/model.pt").exists()
    # the round-1 pool records, for each item labeled from the round-1 batch, what the round-0
    # model predicted before it was labeled (LSB's out-of-sample seed bad cases)
    r = run_cli("score", ws)
    assert r.returncode == 0, r.stderr
    new = load_pool(ws / "rounds/1/pool")
    at = np.asarray(new.extras["at_selection_probs"])
    batch = {x["id"] for x in rows}
    for i, item in enumerate(new.ids.tolist()):
        if item in batch:
            j = pool.ids.tolist().index(item)
            np.testing.assert_allclose(at[i], np.asarray(pool.probs)[j], rtol=1e-6)
        else:
            assert np.isnan(at[i]).all()


def test_select_before_score_is_a_clear_error(tmp_path):
    items = write_items(tmp_path / "src", _rows(12))
    ws = tmp_path / "ws"
    assert run_cli("init", ws, "--items", items, "--extra-columns", "gold").returncode == 0
    r = run_cli("select", ws, "--strategy", "entropy", "--budget", "3")
    assert r.returncode == 2 and "mmal train" in r.stderr and "Traceback" not in r.stderr


def test_simulate_text_only_schema(tmp_path):
    from mmal.loop.simulate import simulate

    rows = _rows(90, seed=1)
    for r in rows:
        r["label"] = r["gold"]  # the oracle needs gold labels on every non-test item
    items = write_items(tmp_path / "src", rows)
    # the trained late-fusion learner: it leaves seed bad cases out of sample for the lookalike
    res = simulate(items, ["random", "entropy:0.5,lsb-lt:0.5"], init=9, budget=6, rounds=2, seeds=[0, 1], out=tmp_path / "sim",
                   learner="late-fusion", train={"epochs": 20}, progress=False, log=lambda *a: None)
    saved = json.loads((tmp_path / "sim/results.json").read_text())
    assert saved["strategies"].keys() == res["strategies"].keys() == {"random", "entropy:0.5,lsb-lt:0.5"}
    for name, d in saved["strategies"].items():
        assert set(d["per_seed"]) == {"0", "1"} and 0 <= d["mean_aubc"] <= 1
        for seed, run in d["per_seed"].items():
            rounds = run["rounds"]
            assert [r["n_labeled"] for r in rounds] == [9, 15, 21]
            assert all("accuracy" in r["test"] for r in rounds)
            assert all(0 <= r["batch_badness"] <= 1 for r in rounds[1:])  # 1 - p(y) for classes
            assert all(len(r["selected"]) == r["n_selected"] for r in rounds[1:])
            if "lsb-lt" in name:
                assert all("lookalike_auc" in r for r in rounds[1:])
                # seeds are judged out of sample (the initial set cross-fitted), so the lookalike
                # model has seed bad cases to fit every round (in-sample, the learner fits them all)
                assert all(np.isfinite(r["lookalike_auc"]) and "lookalike_note" not in r for r in rounds[1:])
    # every strategy of a seed starts from the same round-0 model
    r0 = [saved["strategies"][s]["per_seed"]["0"]["rounds"][0]["test"]["accuracy"] for s in saved["strategies"]]
    assert r0[0] == r0[1]
    html = (tmp_path / "sim/report.html").read_text()
    assert "Learning curves" in html and "Table 1" in html and "Table 2" in html


def test_win_matrix_counts_significant_wins():
    from mmal.report.html import win_matrix

    def run(accs):
        return {"rounds": [{"round": r, "n_labeled": 10 * (r + 1), "test": {"accuracy": a}} for r, a in enumerate(accs)]}

    # A beats B clearly in round 1 (every seed +0.2 with noise), ties in round 2
    res = {"strategies": {
        "A": {"per_seed": {"0": run([0.5, 0.80, 0.70]), "1": run([0.5, 0.71, 0.71]), "2": run([0.5, 0.76, 0.69])}},
        "B": {"per_seed": {"0": run([0.5, 0.60, 0.71]), "1": run([0.5, 0.50, 0.70]), "2": run([0.5, 0.55, 0.70])}},
    }}
    res["config"] = {"task": "multiclass", "metric": "accuracy"}
    names, W, n_rounds = win_matrix(res)
    assert names == ["A", "B"] and n_rounds == 2
    assert W[0, 1] == 1 and W[1, 0] == 0


def test_simulate_unimodal_heads(tmp_path, media_dir):
    """image+text items, fused+unimodal heads: unimodal test accuracy is recorded every round."""
    from PIL import Image

    from mmal.loop.simulate import simulate

    rng = np.random.default_rng(0)
    rows = []
    colours = {0: (220, 30, 30), 1: (30, 200, 30), 2: (30, 30, 220)}
    for k in range(48):
        c = k % 3
        p = tmp_path / f"img{k}.png"
        Image.new("RGB", (40, 40), tuple(int(v) for v in np.clip(np.array(colours[c]) + rng.integers(-20, 20, 3), 0, 255))).save(p)
        rows.append({"id": f"m{k}", "label": c, "split": "test" if k % 4 == 0 else "pool",
                     "text": f"a {WORDS[c][k % 5]}", "image": str(p)})
    items = write_items(tmp_path / "src", rows)
    # BMMAL reads the late-fusion learner's exact blocks (pool.fused_blocks); its unimodal heads are
    # added because bmmal needs them, and each round records unimodal accuracy and the shares Φ
    res = simulate(items, ["bmmal", "badge"], init=6, budget=4, rounds=1, seeds=[0], out=tmp_path / "sim",
                   train={"epochs": 10}, progress=False, log=lambda *a: None)
    for name in ("bmmal", "badge"):
        r = res["strategies"][name]["per_seed"]["0"]["rounds"]
        assert set(r[0]["unimodal_test_accuracy"]) == set(r[1]["unimodal_test_accuracy"]) == {"image", "text"}
        assert r[1]["n_selected"] == 4
    phi = res["strategies"]["bmmal"]["per_seed"]["0"]["rounds"][1]["modality_contribution"]
    assert set(phi) == {"image", "text"} and abs(sum(phi.values()) - 1) < 1e-6
    # the fusion transformer cannot give true blocks: BMMAL refuses it with a clear error
    from mmal.errors import ConfigError

    with pytest.raises(ConfigError, match="late-fusion"):
        simulate(items, ["bmmal"], init=6, budget=4, rounds=1, seeds=[0], out=tmp_path / "sim2", learner="fusion",
                 model={"d_model": 16, "n_layers": 1, "n_heads": 2}, train={"epochs": 1}, progress=False,
                 log=lambda *a: None)


def test_cli_same_seed_same_model_and_batch(text_ws, tmp_path):
    """Through the CLI, two copies of one encoded workspace trained with the same seed
    (`train --seed 3`, `score`, `select --seed 3`) hold bit-identical learner tensors and select
    the same batch."""
    import shutil

    import torch

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(text_ws, a)
    shutil.copytree(a, b)
    out = {}
    for ws in (a, b):
        for args in (("train", ws, "--seed", "3"), ("score", ws),
                     ("select", ws, "--strategy", "entropy:0.5,lsb-lt:0.5", "--budget", "6", "--seed", "3")):
            r = run_cli(*args)
            assert r.returncode == 0, (args, r.stderr)
            out[(ws, args[0])] = json.loads(r.stdout)
    rnd = out[(a, "train")]["round"]
    assert rnd == out[(b, "train")]["round"]
    sa = torch.load(a / f"rounds/{rnd}/model.pt", weights_only=True)
    sb = torch.load(b / f"rounds/{rnd}/model.pt", weights_only=True)
    assert sa["learner"] == "auto" and sa["state"]["chosen"] == sb["state"]["chosen"]

    def tensors(d, path=""):  # every tensor of the (nested) learner state, by path
        if isinstance(d, torch.Tensor):
            yield path, d
        elif isinstance(d, dict):
            for k, v in d.items():
                yield from tensors(v, f"{path}/{k}")

    ta, tb = dict(tensors(sa["state"])), dict(tensors(sb["state"]))
    assert ta and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    import pyarrow.parquet as pq

    sel = out[(a, "select")]["round"]
    ids = [pq.read_table(ws / f"rounds/{sel}/selection.parquet").column("id").to_pylist() for ws in (a, b)]
    assert ids[0] == ids[1] and len(ids[0]) == 6


def test_simulate_init_strategy_cold_start(tmp_path):
    """`--init-strategy` picks the initial labeled set with a cold-start strategy;
    a warm-start name is refused before any work."""
    from mmal.errors import ConfigError
    from mmal.loop.simulate import simulate

    rows = _rows(60, seed=2)
    for r in rows:
        r["label"] = r["gold"]
    items = write_items(tmp_path / "src", rows)
    res = simulate(items, ["random"], init=6, budget=3, rounds=1, seeds=[0], out=tmp_path / "sim",
                   init_strategy="kmeans", train={"epochs": 5}, progress=False, log=lambda *a: None)
    assert res["config"]["init_strategy"] == "kmeans"
    assert res["strategies"]["random"]["per_seed"]["0"]["rounds"][0]["n_labeled"] == 6
    with pytest.raises(ConfigError, match="cold-start"):
        simulate(items, ["random"], init=6, budget=3, rounds=1, seeds=[0], out=tmp_path / "sim",
                 init_strategy="badge", progress=False, log=lambda *a: None)


def test_one_seed_report_shows_no_plus_minus_and_no_win_matrix():
    """A one-seed run prints no '± 0.0000' and no all-zero win matrix."""
    from mmal.report.html import markdown_tables, markdown_win_matrix

    def run(accs):
        return {"aubc": accs[-1], "rounds": [{"round": r, "n_labeled": 10 * (r + 1), "batch_badness": 0.5,
                                             "test": {"accuracy": a, "macro_f1": a, "balanced_accuracy": a, "auc_ovr": a}}
                                            for r, a in enumerate(accs)]}

    res = {"strategies": {"A": {"per_seed": {"0": run([0.5, 0.7])}}, "B": {"per_seed": {"0": run([0.5, 0.6])}}},
           "config": {"task": "multiclass", "metric": "macro_f1"}}
    md = markdown_tables(res)
    assert "±" not in md and "0.700" in md
    assert "win matrix" in markdown_win_matrix(res) and "|" not in markdown_win_matrix(res)
    res["strategies"]["A"]["per_seed"]["1"] = run([0.5, 0.8])
    res["strategies"]["B"]["per_seed"]["1"] = run([0.5, 0.6])
    assert "0.750 ± 0.050" in markdown_tables(res)


def test_retrain_invalidates_the_scored_pool(text_ws, tmp_path):
    """Re-training after `score` removes the round's scored pool and metrics
    (they came from the old model); `evaluate`/`select` then ask for `mmal score`."""
    import shutil

    from mmal.errors import WorkspaceError
    from mmal.loop.workspace_round import evaluate_workspace, score_workspace, train_workspace

    ws = tmp_path / "ws"
    shutil.copytree(text_ws, ws)
    first = train_workspace(ws, progress=False)
    score_workspace(ws, progress=False)
    pool_dir = ws / "rounds" / str(first["round"]) / "pool"
    assert pool_dir.is_dir()
    second = train_workspace(ws, progress=False)
    assert second["invalidated"] == ["pool"] and not pool_dir.exists()
    with pytest.raises(WorkspaceError, match="mmal score"):
        evaluate_workspace(ws)
