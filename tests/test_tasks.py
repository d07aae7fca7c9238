"""The task contract end to end: a binary items file through `mmal simulate` is judged on
R@P80 by default, `--metric` picks another, and `mmal config` prints every default."""

import dataclasses
import json
import tomllib

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from conftest import run_cli, write_items

POS = ["fire", "smoke", "flame", "blaze", "ember"]
NEG = ["apple", "bread", "cheese", "pizza", "soup", "car", "bus", "train", "truck", "bike"]


def _binary_rows(n=64, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        y = int(k % 4 == 1)  # 25 % positives
        w = POS[rng.integers(len(POS))] if y else NEG[rng.integers(len(NEG))]
        rows.append({"id": f"b{k:03d}", "label": y, "split": "test" if k % 3 == 0 else "pool",
                     "text": f"a photo of {w} number {k}"})
    return rows


def _recall_at_precision(y, s, p):
    """Largest recall over thresholds whose precision is >= p (0 when none), by brute force."""
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        tp = int(np.sum(pred & (y == 1)))
        if pred.sum() and tp / pred.sum() >= p:
            best = max(best, tp / max(1, int(np.sum(y == 1))))
    return best


def _aubc(x, v):
    x, v = np.asarray(x, float), np.asarray(v, float)
    return float(np.sum((x[1:] - x[:-1]) * (v[1:] + v[:-1]) / 2) / (x[-1] - x[0]))


@pytest.fixture(scope="module")
def binary_sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bin")
    items = write_items(tmp / "src", _binary_rows())
    r = run_cli("simulate", items, "--strategies", "random|entropy", "--init", "8", "--budget", "6", "--rounds", "2",
                "--seeds", "0,1", "--learner", "linear", "--out", tmp / "sim")
    assert r.returncode == 0, r.stderr
    return tmp, items, r


def test_binary_simulate_reports_the_aubc_of_r_at_p80_by_default(binary_sim):
    tmp, _, r = binary_sim
    res = json.loads((tmp / "sim/results.json").read_text())
    assert res["config"]["task"] == "binary" and res["config"]["metric"] == "r_at_p80"
    assert "AUBC(r_at_p80)" in r.stdout
    for name, d in res["strategies"].items():
        for run in d["per_seed"].values():
            rounds = run["rounds"]
            assert [x["n_labeled"] for x in rounds] == [8, 14, 20]
            # the binary metrics, on the positive class; no multiclass or rank metrics
            assert {"auc", "average_precision", "r_at_p80"} <= set(rounds[0]["test"])
            assert "macro_f1" not in rounds[0]["test"] and "spearman" not in rounds[0]["test"]
            # an unreached precision is 0 on the curve (nothing can be sent at P80)
            vals = [0.0 if x["test"]["r_at_p80"] is None or np.isnan(float(x["test"]["r_at_p80"]))
                    else float(x["test"]["r_at_p80"]) for x in rounds]
            assert run["aubc"] == pytest.approx(_aubc([x["n_labeled"] for x in rounds], vals), abs=1e-12)
            assert run["aubc_by_metric"]["r_at_p80"] == run["aubc"]
        assert d["mean_aubc"] == pytest.approx(np.mean([v["aubc"] for v in d["per_seed"].values()]))
    html = (tmp / "sim/report.html").read_text()
    assert "R@P80" in html or "r_at_p80" in html


def test_binary_r_at_p80_of_a_round_equals_a_brute_force_recount(binary_sim, tmp_path):
    """The learner of a round, re-fitted here on the round's labeled ids, gives the recorded R@P80."""
    from mmal.metrics.binary import binary_metrics

    rng = np.random.default_rng(3)
    for _ in range(20):  # the metric itself, on random scores with ties, against the brute force
        y = (rng.random(60) < 0.3).astype(int)
        s = np.round(rng.random(60) * 0.5 + 0.4 * y, 2)
        got = binary_metrics(y, np.stack([1 - s, s], 1))["r_at_p80"]
        want = _recall_at_precision(y, s, 0.8)
        assert (want == 0.0 and np.isnan(got)) or got == pytest.approx(want)
    prec, rec, _ = precision_recall_curve([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2])
    assert _recall_at_precision(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.2]), 0.8) == rec[prec >= 0.8].max()


def test_simulate_metric_flag_picks_another_curve_and_refuses_a_foreign_one(binary_sim):
    tmp, items, _ = binary_sim
    r = run_cli("simulate", items, "--strategies", "random", "--init", "8", "--budget", "6", "--rounds", "1",
                "--seeds", "0", "--learner", "linear", "--metric", "auc", "--out", tmp / "sim_auc")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp / "sim_auc/results.json").read_text())
    run = res["strategies"]["random"]["per_seed"]["0"]
    assert res["config"]["metric"] == "auc"
    assert run["aubc"] == pytest.approx(_aubc([x["n_labeled"] for x in run["rounds"]],
                                              [x["test"]["auc"] for x in run["rounds"]]), abs=1e-12)
    r = run_cli("simulate", items, "--strategies", "random", "--init", "8", "--budget", "6", "--rounds", "1",
                "--seeds", "0", "--metric", "macro_f1", "--out", tmp / "sim_bad")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "binary" in r.stderr and "r_at_p80" in r.stderr
    assert not (tmp / "sim_bad/results.json").exists()


def test_mmal_config_prints_the_defaults_of_the_dataclasses_under_mmal_toml(tmp_path):
    import inspect

    from mmal.learners.late_fusion import TRAIN_DEFAULTS, LateFusionLearner
    from mmal.models.late_fusion import LateFusionConfig
    from mmal.train.config import TrainConfig

    items = write_items(tmp_path / "src", _binary_rows(24))
    ws = tmp_path / "ws"
    assert run_cli("init", ws, "--items", items).returncode == 0
    toml = (ws / "mmal.toml").read_text()
    assert tomllib.loads(toml)["task"]["type"] == "binary"  # two classes -> binary, stored at init
    (ws / "mmal.toml").write_text(toml + "\n[train]\nepochs = 7\n\n[model]\nlearner = \"late-fusion\"\nhead_scale = 0.5\n")
    r = run_cli("config", ws, "--json")
    assert r.returncode == 0, r.stderr
    eff = json.loads(r.stdout)
    assert eff["task"]["type"] == "binary" and eff["task"]["headline"] == "r_at_p80"
    assert eff["model"]["learner"] == "late-fusion"
    defaults = {f.name: f.default for f in dataclasses.fields(LateFusionConfig)
                if f.default is not dataclasses.MISSING}
    for k, v in defaults.items():
        if k == "head_scale":
            assert eff["model"][k] == 0.5  # mmal.toml wins
        elif k in eff["model"]:
            assert eff["model"][k] == (list(v) if isinstance(v, tuple) else v), k
    for k, p in inspect.signature(LateFusionLearner.__init__).parameters.items():
        if p.kind is p.KEYWORD_ONLY and k not in ("model", "train") and not isinstance(p.default, tuple):
            assert eff["model"][k] == p.default, k
    # [train]: TrainConfig's defaults, under the learner's own, under mmal.toml
    want = {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **TRAIN_DEFAULTS, "epochs": 7}
    for k, v in want.items():
        assert eff["train"][k] == (list(v) if isinstance(v, tuple) else v), k
    # the TOML form parses and says the same
    r = run_cli("config", ws)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if not x.startswith("# ")]
    as_toml = tomllib.loads("\n".join(lines))
    assert as_toml["train"]["epochs"] == 7 and as_toml["model"]["head_scale"] == 0.5
    # a bad value in mmal.toml is one line naming the file and key, exit 2
    (ws / "mmal.toml").write_text(toml + "\n[train]\nepochs = \"many\"\n")
    r = run_cli("config", ws)
    assert r.returncode == 2 and "mmal.toml" in r.stderr and "epochs" in r.stderr and "Traceback" not in r.stderr
