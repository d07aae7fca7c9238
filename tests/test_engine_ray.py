"""The Ray engine (`mmal.engine`, `--engine ray`) against the local engine, on a local Ray
started once for the session (2 CPUs, small object store)."""

import shutil
import tomllib

import numpy as np
import pytest
import tomli_w

from conftest import write_items

ray = pytest.importorskip("ray")

WORDS = {0: ["cat", "dog", "horse", "cow"], 1: ["apple", "bread", "cheese", "soup"], 2: ["car", "bus", "train", "bike"]}


@pytest.fixture(scope="session")
def ray_local():
    from mmal.engine.ray_engine import init_ray

    assert init_ray(None, num_cpus=2, object_store_memory=96 * 1024**2) == "local"
    yield
    ray.shutdown()


def _rows(n=48):
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        c = k % 3
        split = "test" if k % 6 == 0 else ("train" if k < 24 else "pool")
        out.append({"id": f"t{k:03d}", "label": c if split != "pool" else None, "split": split,
                    "text": f"a photo of a {WORDS[c][rng.integers(4)]} number {k}"})
    return out


def _init(tmp, name):
    from mmal.workspace.workspace import init_workspace

    items = write_items(tmp / f"src_{name}", _rows())
    ws = tmp / name
    init_workspace(ws, items)
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    cfg.setdefault("train", {}).update({"epochs": 3, "patience": 2})
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))
    return ws


def _features(ws):
    from mmal.features.pipeline import load_features
    from mmal.workspace import Workspace

    f = load_features(Workspace(ws))["text"]
    return np.asarray(f.pooled), np.asarray(f.seq, np.float32), f.offsets, f.present


def _cos_topk(x, q, k):
    """Independent brute force: cosine top-k, ties by smaller row."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ xn.T.astype(np.float64)
    rows = np.array([np.lexsort((np.arange(len(x)), -si))[:k] for si in s])
    return np.take_along_axis(s, rows, 1), rows


def test_workspace_encode_score_select_equal_local(ray_local, tmp_path):
    from mmal import engine
    from mmal.loop.workspace_round import train_workspace
    from mmal.workspace.pool_io import load_pool

    ws_l, ws_r = _init(tmp_path, "local"), _init(tmp_path, "ray")
    engine.encode_workspace(ws_l, engine="local", progress=False)
    out = engine.encode_workspace(ws_r, engine="ray")
    assert out[0]["encoded"] == 48 and out[0]["engine"] == "ray"
    (pl, sl, ol, prl), (pr, sr, orr, prr) = _features(ws_l), _features(ws_r)
    assert np.array_equal(ol, orr) and np.array_equal(prl, prr)
    assert np.allclose(pl, pr, atol=1e-5) and np.allclose(sl, sr, atol=2e-3)  # seq is stored as float16

    train_workspace(ws_l, seed=0, progress=False)
    engine.score_workspace(ws_l, engine="local", progress=False)
    local = load_pool(ws_l / "rounds/0/pool")
    lp, le = np.array(local.probs), np.array(local.embedding)
    shutil.copytree(ws_l, tmp_path / "b")  # same model, same features -> select on a twin
    res = engine.score_workspace(tmp_path / "b", engine="ray")
    assert res["engine"] == "ray"
    remote = load_pool(tmp_path / "b/rounds/0/pool")
    assert np.array_equal(np.asarray(remote.probs), lp) and np.array_equal(np.asarray(remote.embedding), le)
    assert np.array_equal(np.asarray(remote.extras["penultimate"]), np.asarray(local.extras["penultimate"]))

    for strategy, params in (("lsb-knn", {"top_s": 4, "k": 2}), ("entropy", {})):
        a = tmp_path / f"a_{strategy}"
        b = tmp_path / f"b_{strategy}"
        shutil.copytree(tmp_path / "b", a)
        shutil.copytree(tmp_path / "b", b)
        sa = engine.select_workspace(a, strategy, 6, engine="local", params=dict(params))
        sb = engine.select_workspace(b, strategy, 6, engine="ray", params=dict(params))
        ids_a = [r["id"] for r in _selection(a)]
        ids_b = [r["id"] for r in _selection(b)]
        assert sa["n_selected"] == sb["n_selected"] > 0 and ids_a == ids_b
        assert sb["info"]["engine"] == "ray"
    # an independent entropy top-6 over the pool rows
    pool_rows = np.array([r["split"] == "pool" for r in _rows()])
    h = -(lp * np.log(lp + 1e-12)).sum(1)
    rows = np.flatnonzero(pool_rows)
    want = rows[np.lexsort((rows, -h[rows]))[:6]]
    assert ids_b == [f"t{k:03d}" for k in want]


def _selection(ws):
    import pyarrow.parquet as pq

    return pq.read_table(ws / "rounds/1/selection.parquet").to_pylist()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_sharded_knn_equals_single_index(ray_local, metric):
    from mmal.engine.ray_engine import ShardedIndex
    from mmal.index import build_index

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3001, 24)).astype(np.float32)
    q = rng.normal(size=(40, 24)).astype(np.float32)
    if metric == "cosine":  # an exact tie across shards: the smaller row must win (for l2 a
        x[2000] = x[10]     # query equal to a row gives ~0 by cancellation, rounded per shape)
        q[0] = x[10]
    single = build_index(x, metric=metric, backend="exact")
    sharded = ShardedIndex(x, metric=metric, backend="exact", n_shards=3)
    try:
        s1, r1 = single.search(q, 7)
        s2, r2 = sharded.search(q, 7)
    finally:
        sharded.close()
    assert np.array_equal(r1, r2) and np.allclose(s1, s2, atol=1e-6)
    if metric == "cosine":
        ref_s, ref_r = _cos_topk(x, q, 7)
        assert np.array_equal(r2, ref_r) and np.allclose(s2, ref_s, atol=1e-5)
        assert r2[0, 0] == 10 and r2[0, 1] == 2000


def test_distributed_top_b_entropy_and_bald(ray_local):
    from mmal.engine.ray_engine import distributed_top_b
    from mmal.pool import ScoredPool

    rng = np.random.default_rng(2)
    n, c, t = 500, 4, 5
    mc = rng.dirichlet(np.ones(c), size=(t, n))  # [T, N, C]
    mc[:, 7] = mc[:, 3]  # a tie: row 3 before row 7
    probs = mc.mean(0)
    labels = np.full(n, -1)
    labels[:50] = 0
    pool = ScoredPool(ids=np.array([f"i{k}" for k in range(n)]), probs=probs, labels=labels,
                      extras={"mc_probs": mc})
    mask = labels >= 0
    rows = np.arange(50, n)
    h = -(probs * np.log(probs + 1e-12)).sum(1)
    s, r, m = distributed_top_b("entropy", pool, 30, mask, n_shards=3)
    assert m == 450 and np.array_equal(r, rows[np.lexsort((rows, -h[rows]))[:30]])
    ent = lambda p: -(p * np.log(p + 1e-12)).sum(-1)  # noqa: E731
    mi = ent(mc.mean(0)) - ent(mc).mean(0)
    s, r, _ = distributed_top_b("bald", pool, 25, mask, n_shards=4)
    assert np.array_equal(r, rows[np.lexsort((rows, -mi[rows]))[:25]]) and np.allclose(s, mi[r])
