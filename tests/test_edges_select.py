"""Selection at the edges: nothing dropped or rewritten in silence.

* every cold-start strategy runs on a pool that has only an embedding (a user's own);
* mmcsal's default is the sign-corrected alignment term, the printed one a named option;
* the workspace's split keeps test labels out of a selection, whatever the scored pool holds;
* a strategy or a mix part that returns fewer items than asked, or fills up at random, says
  so in ``info["warnings"]``, on stderr and in the CLI's JSON ``warnings``;
* the CLI's JSON is strict (``null``, never ``NaN``);
* ``simulate`` compares strategies at equal label counts (``top_up``).

Every expectation is computed here, independently of the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmal.errors import ConfigError
from mmal.pool import ScoredPool
from mmal.select import get_strategy, select
from mmal.select.registry import cold_start_strategies


# ---------------------------------------------------------------------------------------
# a pool with one embedding and nothing else: four well separated blobs of distinct sizes
# ---------------------------------------------------------------------------------------
SIZES = [30, 24, 18, 12]
FAST = {"activeft": {"steps": 40}, "mm-activeft": {"steps": 40}, "mmcsal": {"steps": 40}}


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _blobs(seed=0, n_test_per_blob=0):
    """``(x [N, 8], blob [N], split [N])``: blob c around 5 * e_c (not unit rows), noise 0.05."""
    rng = np.random.default_rng(seed)
    xs, blob, split = [], [], []
    for c, m in enumerate(SIZES):
        centre = np.zeros(8)
        centre[c] = 5.0
        xs.append(centre + 0.05 * rng.normal(size=(m, 8)))
        blob += [c] * m
        split += ["test"] * n_test_per_blob + ["pool"] * (m - n_test_per_blob)
    return np.concatenate(xs).astype(np.float32), np.array(blob), np.array(split)


def _embedding_pool(x, split=None, n_classes=4):
    n = len(x)
    return ScoredPool(ids=[f"i{i:03d}" for i in range(n)], probs=np.full((n, n_classes), 1.0 / n_classes, np.float32),
                      embedding=x, split=split)


def _rows(sel):
    return [int(i[1:]) for i in sel.ids]


START = np.cumsum([0] + SIZES)  # first row of each blob

#: the cold-start strategies with a method-specific test below (a new one must add its own)
CHECKED = {"random", "coreset", "kmeans", "typiclust", "probcover", "activeft", "mm-activeft", "mmcsal"}


def test_every_cold_start_strategy_has_a_plain_embedding_test_here():
    assert set(cold_start_strategies()) == CHECKED


@pytest.mark.parametrize("name", cold_start_strategies())
def test_cold_start_on_a_plain_embedding_meets_the_budget_with_unlabeled_unique_items(name):
    x, blob, split = _blobs(n_test_per_blob=2)
    pool = _embedding_pool(x, split)
    assert not pool.modality and not pool.extras  # nothing but the embedding
    lab = np.zeros(len(x), bool)
    lab[[START[0] + 3, START[1] + 3, START[2] + 3]] = True
    sel = select(name, pool, 16, labeled_mask=lab, seed=1, **FAST.get(name, {}))
    rows = _rows(sel)
    assert len(rows) == 16 and len(set(rows)) == 16
    assert not lab[rows].any() and (split[rows] != "test").all()
    if "features" in get_strategy(name).params:
        assert sel.info["features"] == "embedding"


def test_kmeans_on_a_plain_embedding_takes_the_item_nearest_each_blob_mean():
    x, blob, _ = _blobs(seed=3)
    lab = np.zeros(len(x), bool)
    lab[START[0]:START[0] + 3] = True
    sel = select("kmeans", _embedding_pool(x), 4, labeled_mask=lab, seed=0)
    u = _unit(x)  # the strategies read L2-normalised rows
    expect = set()
    for c in range(4):
        members = np.flatnonzero((blob == c) & ~lab)
        d = np.linalg.norm(u[members] - u[members].mean(0), axis=1)
        expect.add(int(members[np.argmin(d)]))
    assert set(_rows(sel)) == expect  # one pick per blob: the member nearest its centre


def _typicality(u, k):
    d2 = ((u[:, None] - u[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return 1.0 / (np.sort(d2, axis=1)[:, :k].mean(1) + 1e-5)


def test_typiclust_on_a_plain_embedding_picks_the_most_typical_item_of_each_uncovered_blob():
    x, blob, _ = _blobs(seed=4)
    lab = np.zeros(len(x), bool)
    lab[[START[0], START[1]]] = True  # blobs 0 and 1 are covered; |L| + B = 4 clusters = the blobs
    sel = select("typiclust", _embedding_pool(x), 2, labeled_mask=lab, seed=0)
    u = _unit(x)
    expect = []
    for c in (2, 3):  # uncovered clusters first, the larger first
        members = np.flatnonzero(blob == c)
        t = _typicality(u[members], min(20, len(members) // 2))
        expect.append(int(members[np.argmax(t)]))
    assert _rows(sel) == expect


def test_probcover_on_a_plain_embedding_covers_one_uncovered_blob_per_pick():
    x, blob, _ = _blobs(seed=5)
    lab = np.zeros(len(x), bool)
    lab[START[0] + 7] = True  # its ball covers blob 0
    # alpha = 1: delta is the smallest distance between items of different pseudo-labels
    sel = select("probcover", _embedding_pool(x), 3, labeled_mask=lab, seed=0, alpha=1.0)
    assert sel.info["delta_rule"] == "purity" and sel.info["n_random_fill"] == 0
    assert sel.info["coverage"] == 1.0
    # every ball holds exactly its blob when delta lies between the blob diameter and the
    # distance between blobs; then each pick covers a whole uncovered blob, largest first,
    # and within a blob all balls tie (the lowest row wins)
    u = _unit(x)
    d = np.linalg.norm(u[:, None] - u[None], axis=2)
    same = blob[:, None] == blob[None]
    assert d[same].max() < sel.info["delta"] <= d[~same].min() * (1 + 1e-6)  # float32 distances
    assert _rows(sel) == [START[1], START[2], START[3]]
    assert sel.score.tolist() == [SIZES[1], SIZES[2], SIZES[3]]


def test_activeft_on_a_plain_embedding_without_steps_keeps_its_random_start_and_with_steps_lowers_the_loss():
    x, _, _ = _blobs(seed=6)
    lab = np.zeros(len(x), bool)
    lab[::9] = True
    pool = _embedding_pool(x)
    cand = np.flatnonzero(~lab)
    # no optimisation: each theta is a random candidate (unit rows), and its most similar
    # candidate is itself, so the picks are the random start
    sel = select("activeft", pool, 6, labeled_mask=lab, seed=2, steps=0)
    start = cand[np.sort(np.random.default_rng(2).choice(len(cand), size=6, replace=False))]
    assert _rows(sel) == start.tolist() and sel.info["picks_at_init"] == 6
    moved = select("activeft", pool, 6, labeled_mask=lab, seed=2, steps=60, lr=1e-2)
    assert moved.info["loss_last"] < moved.info["loss_first"]
    assert len(set(moved.ids)) == 6 and not lab[_rows(moved)].any()


@pytest.mark.parametrize("name,eq", [("mmcsal", "4.11"), ("mm-activeft", "4.9")])
def test_multimodal_objectives_on_one_embedding_are_activeft_and_say_so(name, eq):
    x, _, _ = _blobs(seed=7)
    pool = _embedding_pool(x)
    lab = np.zeros(len(x), bool)
    lab[:5] = True
    mm = select(name, pool, 8, labeled_mask=lab, seed=3, steps=30, lr=1e-2)
    ft = select("activeft", pool, 8, labeled_mask=lab, seed=3, steps=30, lr=1e-2)
    # eq. 4.9 / 4.11 with one block: no pair (a, b) for the cross-modal terms; what remains
    # is eq. 4.7 + 4.8, ActiveFT's loss, on the same block
    np.testing.assert_array_equal(mm.ids, ft.ids)
    assert mm.info["objective"] == "activeft"
    assert len(mm.info["warnings"]) == 1 and f"eq. {eq}" in mm.info["warnings"][0]
    assert "pool.embedding" in mm.info["warnings"][0]
    with pytest.raises(ConfigError, match="shared"):
        select(name, pool, 8, labeled_mask=lab, seed=3, steps=30, one_block="error")


def _kcenter(x, centres, cand, b):
    d = np.min(np.linalg.norm(x[cand][:, None] - x[centres][None], axis=2), axis=1)
    picks = []
    for _ in range(b):
        j = int(np.argmax(d))
        picks.append(int(cand[j]))
        d = np.minimum(d, np.linalg.norm(x[cand] - x[cand[j]], axis=1))
    return picks


def test_coreset_and_random_on_a_plain_embedding():
    x, blob, _ = _blobs(seed=8)
    pool = _embedding_pool(x)
    lab = np.zeros(len(x), bool)
    lab[START[0] + 2] = True
    cand = np.flatnonzero(~lab)
    core = select("coreset", pool, 3, labeled_mask=lab, seed=0)
    x64 = x.astype(np.float64)
    assert _rows(core) == _kcenter(x64, np.flatnonzero(lab), cand, 3)
    assert sorted(blob[_rows(core)]) == [1, 2, 3]  # farthest first: one pick per uncovered blob
    rnd = select("random", pool, 5, labeled_mask=lab, seed=4)
    assert _rows(rnd) == cand[np.random.default_rng(4).choice(len(cand), size=5, replace=False)].tolist()


def test_per_modality_features_are_still_used_where_the_pool_has_them():
    from mmal.select.coldstart import cold_pool

    x, _, _ = _blobs(seed=9)
    pool = cold_pool([f"i{i:03d}" for i in range(len(x))], {"a": x[:, :4], "b": x[:, 4:]})
    for name in ("kmeans", "typiclust", "probcover", "activeft"):
        assert select(name, pool, 4, seed=0, **FAST.get(name, {})).info["features"] == "raw"
    with pytest.raises(ConfigError, match="no per-modality features"):
        select("kmeans", _embedding_pool(x), 4, seed=0, features="raw")


# ---------------------------------------------------------------------------------------
# mmcsal: the sign-corrected alignment term is the default
# ---------------------------------------------------------------------------------------
def test_mmcsal_defaults_to_the_corrected_alignment_and_keeps_printed_as_an_option():
    from mmal.select.activeft import parametric_selection
    from mmal.select.coldstart import cold_pool

    assert get_strategy("mmcsal").params["align"].default == "corrected"
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    a = _unit(z @ rng.normal(size=(4, 8)) + 0.5 * rng.normal(size=(300, 8))).astype(np.float32)
    b = _unit(z @ rng.normal(size=(4, 8)) + 0.5 * rng.normal(size=(300, 8))).astype(np.float32)
    cross = {}
    for align in (None, "printed"):
        kw = {} if align is None else {"align": align}
        out = parametric_selection([a, b], 10, np.random.default_rng(1), objective="mmcsal", lambda_align=2.0,
                                   steps=300, lr=1e-2, **kw)
        cross[align] = float(np.mean(out["theta"][0] @ out["theta"][1].T))
    assert cross[None] > cross["printed"] + 0.05  # the default raises the thetas' cross-modal similarity
    ids = [f"i{i:03d}" for i in range(300)]
    pool = cold_pool(ids, {"a": a, "b": b}, {"a": a, "b": b})
    default = select("mmcsal", pool, 6, seed=0, steps=20)
    corrected = select("mmcsal", pool, 6, seed=0, steps=20, align="corrected")
    printed = select("mmcsal", pool, 6, seed=0, steps=20, align="printed")
    assert default.info["align"] == "corrected" and printed.info["align"] == "printed"
    np.testing.assert_array_equal(default.ids, corrected.ids)
    assert "warnings" not in default.info  # two modalities in one space: the full eq. 4.11


# ---------------------------------------------------------------------------------------
# the workspace: its split, whatever the scored pool holds
# ---------------------------------------------------------------------------------------
def _no_mistakes_ws(tmp_path):
    """A workspace whose labeled train items are all predicted right: LSB has no seed.

    Its labeled test items are predicted at random (mistakes among them), and the scored pool
    is saved without a split, as a pool written from Python may be: the workspace's split
    still keeps test labels out of LSB's seeds and lookalike model."""
    from annot_ws import make_ws, save_pool

    ws = make_ws(tmp_path)
    ids = np.asarray(ws.items.column("id").to_pylist())
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=len(ids)).astype(np.float32)
    for k in range(6):  # t0..t5, label k % 3
        row = int(np.flatnonzero(ids == f"t{k}")[0])
        probs[row] = 0.1
        probs[row, k % 3] = 0.8
    save_pool(ws, 0, probs=probs)
    return ws


def test_workspace_select_never_seeds_lsb_with_test_labels_of_a_pool_saved_without_split(tmp_path):
    from mmal.loop.workspace_round import select_workspace
    from mmal.workspace.pool_io import load_pool

    ws = _no_mistakes_ws(tmp_path)
    assert load_pool(ws.round_dir(0) / "pool").split is None
    out = select_workspace(ws.dir, "lsb-knn", 5, dry_run=True)
    assert out["info"]["n_seeds"] == 0 and out["n_selected"] == 0  # the train items are all predicted right


# ---------------------------------------------------------------------------------------
# short, refilled and skipped: always in the warnings
# ---------------------------------------------------------------------------------------
def _lsb_pool(n=80, seed=0, mistakes=True):
    """Labeled rows 0..9 (labels 0/1); probs wrong on rows 0..2 when ``mistakes``; random embedding."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    labels = np.full(n, -1)
    labels[:10] = np.arange(10) % 2
    probs = rng.dirichlet([1, 1], size=n).astype(np.float32)
    for i in range(10):  # correct predictions on the labeled items ...
        probs[i] = [0.9, 0.1] if labels[i] == 0 else [0.1, 0.9]
    if mistakes:
        for i in range(3):  # ... except three
            probs[i] = probs[i][::-1]
    return ScoredPool(ids=[f"i{i:03d}" for i in range(n)], probs=probs, embedding=emb, labels=labels)


def test_a_short_lsb_batch_says_how_short_it_is():
    pool = _lsb_pool()
    sel = select("lsb-knn", pool, 40, seed=0)
    # the broadened set: the 3 cosine-nearest unlabeled items of each of the 3 seed bad cases
    u = _unit(pool.embedding)
    near = set()
    for s in range(3):
        sim = u[10:] @ u[s]
        near |= set((10 + np.argsort(-sim, kind="stable")[:3]).tolist())
    assert set(_rows(sel)) == near and len(sel) < 40
    n = len(near)
    assert sel.info["warnings"] == [f"strategy 'lsb-knn' returned {n} of the 40 items asked ({40 - n} short: "
                                    f"{sel.info['note']})"]


def test_a_mix_part_that_selects_nothing_and_is_refilled_says_so():
    pool = _lsb_pool(mistakes=False)  # no seed bad case: lsb-knn selects nothing
    sel = select("entropy:0.5,lsb-knn:0.5", pool, 10, seed=0)
    p = np.asarray(pool.probs, np.float64)
    h = -(p * np.log(p)).sum(1)
    order = [i for i in np.argsort(-h, kind="stable") if i >= 10]
    assert _rows(sel) == [int(i) for i in order[:10]]  # entropy took the whole budget
    assert sel.info["shortfall"] == 0 and list(sel.strategy) == ["entropy"] * 10
    w = sel.info["warnings"]
    assert any(line.startswith("strategy 'lsb-knn' returned 0 of the 5 items asked") for line in w)
    assert "mix part 'entropy' selected 5 items that other parts could not fill (beyond its quota)" in w


def test_a_mix_that_stays_short_says_so_and_a_full_one_says_nothing():
    pool = _lsb_pool(mistakes=False)
    short = select("lsb-knn:0.5,lsb-lt:0.5", pool, 6, seed=0)
    assert len(short) == 0 and short.info["shortfall"] == 6
    assert short.info["warnings"][-1] == ("mix 'lsb-knn:0.5,lsb-lt:0.5' selected 0 of the 6 items asked "
                                          "(6 short after every part had a second chance)")
    full = select("entropy:0.5,margin:0.5", pool, 6, seed=0)
    assert len(full) == 6 and "warnings" not in full.info


def test_random_fills_are_warnings():
    x = _unit(np.random.default_rng(0).normal(size=(20, 3))).astype(np.float32)
    pool = _embedding_pool(x)
    sel = select("probcover", pool, 6, seed=0, delta=5.0)  # one ball covers everything
    assert sel.info["n_random_fill"] == 5
    assert sel.info["warnings"] == ["strategy 'probcover': every item was covered after 1 picks (delta 5); "
                                    "the other 5 of the 6 were drawn at random"]
    dup = ScoredPool(ids=[f"i{i}" for i in range(12)], probs=np.tile([[0.3, 0.7]], (12, 1)).astype(np.float32),
                     embedding=np.ones((12, 4), np.float32))  # every gradient embedding is the same
    bad = select("badge", dup, 4, seed=0)
    assert len(bad) == 4 and bad.info["n_random_fill"] == 3
    assert "the other 3 were drawn at random" in bad.info["warnings"][0]


def test_budget_above_the_selectable_items_is_a_warning():
    pool = _lsb_pool()
    sel = select("entropy", pool, 500, seed=0)
    assert len(sel) == 70
    assert sel.info["warnings"] == ["strategy 'entropy' returned 70 of the 500 items asked (430 short: only 70 "
                                    "selectable items)"]


def _strict(text):
    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constant)


def test_cli_select_reports_a_refilled_mix_part_and_prints_strict_json(tmp_path):
    from conftest import run_cli

    ws = _no_mistakes_ws(tmp_path)
    r = run_cli("select", ws.dir, "--strategy", "entropy:0.5,lsb-knn:0.5", "--budget", "10", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = _strict(r.stdout)
    assert out["n_selected"] == 10 and set(out["strategy"]) == {"entropy"}
    assert out["warnings"], "a refilled part must be in the warnings"
    assert any("lsb-knn" in w and "returned 0 of the 5" in w for w in out["warnings"])
    assert any("mix part 'entropy' selected 5 items" in w for w in out["warnings"])
    for w in out["warnings"]:
        assert f"mmal: warning: {w}" in r.stderr


# ---------------------------------------------------------------------------------------
# the CLI's JSON: strict, null where a value is undefined
# ---------------------------------------------------------------------------------------
def test_cli_select_json_has_null_where_a_value_is_undefined(tmp_path):
    from conftest import run_cli

    ws = _no_mistakes_ws(tmp_path)
    r = run_cli("select", ws.dir, "--strategy", "entropy:0.5,lsb-lt:0.5", "--budget", "6", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout
    out = _strict(r.stdout)  # lsb-lt's lookalike AUC is undefined (no model fitted)
    lt = [p for p in out["info"]["parts"] if p["strategy"] == "lsb-lt"][0]
    assert lt["info"]["lookalike_auc"] is None
    assert out["warnings"]


def test_echo_json_turns_every_non_finite_number_into_null(capsys):
    from mmal.cli._common import echo_json

    echo_json({"a": float("nan"), "b": [np.float32("inf"), np.float64(-np.inf), 1.5], "c": np.array([np.nan, 2.0]),
               "d": (np.int64(3), np.bool_(True)), "e": {"f": np.float32(0.25)}})
    assert _strict(capsys.readouterr().out) == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": [3, True],
                                                "e": {"f": 0.25}}


# ---------------------------------------------------------------------------------------
# simulate: equal label counts (top_up)
# ---------------------------------------------------------------------------------------
class _FixedLearner:
    """Scores every item with the same probabilities and embedding (no training)."""

    fused_blocks = False

    def __init__(self, probs, emb, rows):
        self.probs, self.emb, self.rows = probs, emb, rows

    def score(self, features, rows=None, coalitions=False, progress=False):
        sl = slice(None) if rows is None else np.asarray(rows)
        return {"probs": self.probs[sl], "embedding": self.emb[sl], "modality": {}, "unimodal_probs": {},
                "penultimate": self.emb[sl]}


def _run_fixed(tmp_path, strategies, top_up, *, init=6, budget=20, rounds=2):
    from mmal.loop.simulate import SimEnv, _run_rounds
    from mmal.tasks import get_task

    rng = np.random.default_rng(0)
    n = 160
    ids = np.array([f"i{i:03d}" for i in range(n)])
    gold = rng.integers(0, 2, size=n)
    split = np.where(np.arange(n) % 8 == 0, "test", "pool")
    probs = rng.dirichlet([1, 1], size=n).astype(np.float32)
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    test_idx = np.flatnonzero(split == "test")
    cand = np.flatnonzero(split != "test")
    tk = get_task("multiclass")
    names = ["a", "b"]

    def test_metrics(m):
        return tk.metrics(gold[test_idx], probs[test_idx], names=names), {}

    config = {"items": "fixed", "task": tk.name, "metric": "accuracy", "curve_metrics": list(tk.curve_metrics),
              "strategies": strategies, "init": init, "budget": budget, "rounds": rounds, "seeds": [0],
              "learner": "fixed", "model": {}, "n_items": n, "n_test": len(test_idx), "n_candidates": len(cand),
              "n_classes": 2, "class_names": names, "modalities": [], "top_up": top_up}
    results = {"strategies": {s: {"per_seed": {}} for s in strategies}, "config": config}
    lab0 = np.sort(np.random.default_rng(5).choice(cand, size=init, replace=False))
    import pyarrow as pa

    env = SimEnv(ids=ids, gold=gold, split=split, table=pa.table({"id": ids.tolist()}), features=None,
                 fit=lambda rows, seed: _FixedLearner(probs, emb, rows), test_metrics=test_metrics,
                 initial=lambda seed: lab0, results=results, task=tk, metric="accuracy")
    logged = []
    res = _run_rounds(env, strategies, [0], init, budget, rounds, tmp_path, None, 0, 0.0, logged.append,
                      progress=False, top_up=top_up)
    return res, ids, gold, split, lab0, logged


def test_simulate_tops_up_a_short_batch_with_random_picks_by_default(tmp_path):
    import inspect

    from mmal.loop.simulate import simulate

    assert inspect.signature(simulate).parameters["top_up"].default == "random"
    budget = 20
    res, ids, gold, split, lab0, logged = _run_fixed(tmp_path, ["random", "lsb-knn"], "random", budget=budget)
    grids = {s: [r["n_labeled"] for r in d["per_seed"]["0"]["rounds"]] for s, d in res["strategies"].items()}
    assert grids["random"] == grids["lsb-knn"] == [6, 26, 46]  # equal label counts
    labeled = np.zeros(len(ids), bool)
    labeled[lab0] = True
    recs = res["strategies"]["lsb-knn"]["per_seed"]["0"]["rounds"][1:]
    assert recs[0]["n_selected"] < budget  # at most 6 seed bad cases x k = 3 neighbours
    for rec in recs:
        short = budget - rec["n_selected"]
        if short == 0:
            assert "top_up" not in rec and "warnings" not in rec
            labeled[[int(i[1:]) for i in rec["selected"]]] = True
            continue
        assert rec["top_up"]["n"] == short and rec["top_up"]["strategy"] == "random"
        # the top-up is `random` over what is still selectable after the strategy's picks
        taken = labeled.copy()
        taken[[int(i[1:]) for i in rec["selected"]]] = True
        free = np.flatnonzero(~taken & (split != "test"))
        rng = np.random.default_rng(0 * 1000 + rec["round"])
        assert rec["top_up"]["ids"] == ids[free[rng.choice(len(free), size=short, replace=False)]].tolist()
        assert any("topped up with" in w for w in rec["warnings"])
        assert any(w.startswith("strategy 'lsb-knn' returned") for w in rec["warnings"])
        labeled[[int(i[1:]) for i in rec["selected"] + rec["top_up"]["ids"]]] = True
    assert res["strategies"]["lsb-knn"]["per_seed"]["0"]["n_top_up"] > 0
    assert "top_up" not in res["strategies"]["random"]["per_seed"]["0"]["rounds"][1]
    assert any("warning" in line and "topped up" in line for line in logged)
    saved = _strict((tmp_path / "results.json").read_text())
    assert saved["config"]["top_up"] == "random"


def test_simulate_without_top_up_leaves_the_batch_short_and_says_so(tmp_path):
    res, *_ = _run_fixed(tmp_path, ["lsb-knn"], None)
    recs = res["strategies"]["lsb-knn"]["per_seed"]["0"]["rounds"]
    assert [r["n_labeled"] for r in recs] == list(np.cumsum([6] + [r["n_selected"] for r in recs[1:]]))
    assert recs[1]["n_selected"] < 20 and recs[-1]["n_labeled"] < 46
    for rec in recs[1:]:
        assert "top_up" not in rec
        assert (rec["n_selected"] < 20) == any("left short (top_up=None)" in w for w in rec.get("warnings", []))


def test_simulate_top_up_must_be_one_strategy():
    from mmal.loop.simulate import check_top_up

    check_top_up(None)
    check_top_up("random")
    with pytest.raises(ConfigError, match="unknown strategy"):
        check_top_up("nope")
    with pytest.raises(ConfigError, match="a strategy name"):
        check_top_up("entropy:0.5,random:0.5")
