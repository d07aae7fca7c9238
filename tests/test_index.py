"""kNN backends: exact equals brute force; FAISS recall vs exact."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmal.errors import ConfigError
from mmal.index import ExactIndex, FaissIndex, auto_backend, build_index, plan_index
from mmal.index.tuning import TruthAccumulator


def clustered(n, d, n_clusters, rng, noise=0.5):
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
    lab = rng.integers(0, n_clusters, n)
    return centers[lab] + noise * rng.standard_normal((n, d)).astype(np.float32)


def brute(x, q, k, metric):
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        x64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
        q64 = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    if metric == "l2":
        s = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
        order = np.argsort(s, axis=1, kind="stable")[:, :k]
    else:
        s = q64 @ x64.T
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def recall(found, truth):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_equals_bruteforce_with_small_blocks(metric):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3001, 24)).astype(np.float32)
    q = rng.standard_normal((157, 24)).astype(np.float32)
    idx = build_index(x, metric=metric, backend="exact", base_block=500, query_block=40)
    s, r = idx.search(q, 7)
    bs, br = brute(x, q, 7, metric)
    assert r.shape == (157, 7) and s.shape == (157, 7)
    np.testing.assert_array_equal(r, br)
    np.testing.assert_allclose(s, bs, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 80), nq=st.integers(1, 12), d=st.integers(1, 6), k=st.integers(1, 10),
       block=st.integers(1, 30), metric=st.sampled_from(["cosine", "ip", "l2"]), seed=st.integers(0, 10**6))
def test_exact_property_matches_bruteforce(n, nq, d, k, block, metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    s, r = ExactIndex(x, metric=metric, base_block=block, query_block=max(1, block // 3)).search(q, k)
    bs, br = brute(x, q, k, metric)
    assert r.shape == (nq, min(k, n))
    np.testing.assert_allclose(s, bs, rtol=1e-4, atol=1e-4)
    # rows equal except where two candidates score the same (float32 vs float64 ties)
    tie_free = np.abs(np.diff(np.concatenate([bs, bs[:, -1:]], axis=1), axis=1)) > 1e-4
    assert np.all((r == br) | ~tie_free | ~np.roll(tie_free, 1, axis=1))


def test_exact_on_memmap_reads_blocks(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    q = rng.standard_normal((20, 16)).astype(np.float32)
    s1, r1 = build_index(ro, backend="exact", base_block=128).search(q, 3)
    s2, r2 = build_index(x, backend="exact").search(q, 3)
    np.testing.assert_array_equal(r1, r2)
    assert isinstance(ro, np.memmap)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_faiss_flat_equals_exact(metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 32)).astype(np.float32)
    q = rng.standard_normal((50, 32)).astype(np.float32)
    s1, r1 = build_index(x, metric=metric, backend="Flat").search(q, 5)
    s2, r2 = build_index(x, metric=metric, backend="exact").search(q, 5)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, rtol=1e-3, atol=1e-3)


def test_ivfpq_rerank_beats_plain_pq_and_returns_exact_scores():
    rng = np.random.default_rng(4)
    x = clustered(20000, 32, 40, rng)
    q = clustered(200, 32, 40, rng)
    es, er = build_index(x, backend="exact").search(q, 3)
    rr = build_index(x, backend="IVF64,PQ8", nprobe=16, k_factor=20, train_iters=5)
    s, r = rr.search(q, 3)
    plain = build_index(x, backend="IVF64,PQ8", nprobe=16, rerank=False, train_iters=5)
    _, r0 = plain.search(q, 3)
    assert recall(r, er) >= 0.95
    assert recall(r, er) > recall(r0, er)
    # re-ranked scores are exact cosine similarities of the returned rows
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(s, np.einsum("qd,qkd->qk", qn, xn[r]), atol=1e-4)


def test_ivfsq8_rerank_returns_exact_scores_and_high_recall():
    rng = np.random.default_rng(5)
    x = clustered(20000, 32, 40, rng)
    q = clustered(200, 32, 40, rng)
    _, er = build_index(x, backend="exact").search(q, 3)
    s, r = build_index(x, backend="IVF64,SQ8", nprobe=16, k_factor=10, train_iters=5).search(q, 3)
    assert recall(r, er) >= 0.95
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(s, np.einsum("qd,qkd->qk", qn, xn[r]), atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_gpu_equals_numpy_reference(metric):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5000, 24)).astype(np.float32)
    q = rng.standard_normal((70, 24)).astype(np.float32)
    s, r = ExactIndex(x, metric=metric, base_block=777, query_block=32, device="cuda").search(q, 4)
    if metric == "cosine":  # independent reference: full score matrix in float64
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        full = -(qn.astype(np.float64) @ xn.T.astype(np.float64))
    else:
        full = ((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    want = np.argsort(full, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(r, want)


def test_exact_device_cuda_without_gpu_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        ExactIndex(np.zeros((3, 2), np.float32), device="cuda")


def test_faiss_ivf_nprobe_tuned_to_target_recall():
    rng = np.random.default_rng(6)
    x = clustered(20000, 32, 60, rng, noise=0.6)
    q = x[rng.choice(20000, 300, replace=False)] + 0.05 * rng.standard_normal((300, 32)).astype(np.float32)
    idx = build_index(x, backend="IVF128,Flat", target_recall=0.9, train_iters=5)
    assert idx.tune_history and idx.tune_history[-1][0] == idx.nprobe
    assert idx.tune_history[-1][1] - idx.tune_history[-1][2] >= 0.9 or idx.nprobe == 128
    # the tuned nprobe is the smallest step that reached the target
    assert all(r - se < 0.9 for _, r, se in idx.tune_history[:-1])
    _, er = build_index(x, backend="exact").search(q, 3)
    _, r = idx.search(q, 3)
    assert recall(r, er) >= 0.85
    fixed = build_index(x, backend="IVF128,Flat", nprobe=5, train_iters=5)
    assert fixed.nprobe == 5 and fixed.tune_history == []


def test_auto_backend_small_sizes_and_overrides():
    assert auto_backend(49_999, 384) == "exact"  # below exact_max: always exact
    assert auto_backend(10**6, 384, nlist=1000, n_queries=10**6).startswith("IVF1000,")
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    assert build_index(x).backend == "exact"
    with pytest.raises(ConfigError, match="auto chose exact.*nprobe"):  # IVF-only option, exact plan
        build_index(x, exact_max=100, nprobe=3, n_queries=10)
    idx = build_index(x, backend="IVF8,Flat", nprobe=3)
    assert isinstance(idx, FaissIndex) and idx.nprobe == 3
    assert idx.tune_history == []  # nprobe given: no tuning
    assert idx.describe()["nprobe_source"] == "given"
    with pytest.raises(ConfigError, match="removed"):  # the BLAS IVF is gone
        build_index(x, backend="IVF8,BLAS")


# ---- the cost model (mmal.index.plan) -------------------------------------------------------

def hand_cost(n, d, q, k, enc, nl, threads=1, kf=4, iters=10, tq=300, target=0.95):
    """The documented cost formulas of mmal.index.plan, written out again from its docstring."""
    gemm = 27e9 * threads
    scan = {"Flat": 1.85e9, "SQ8": 3.7e9}[enc] * threads
    npb = max(1, min(nl, int(np.ceil(12 * ((1 - 0.95) / (1 - target)) ** 0.75 * np.sqrt(k / 3) * (1024 / nl) ** 0.75))))
    train = min(n, 40 * nl) * nl * d * iters / gemm
    add = n * nl * d / gemm + n * d * 9e-9
    tune = tq * n * d / gemm + tq * (nl * d / gemm + 2 * npb * (n / nl) * d / scan)
    search = q * nl * d / gemm + q * npb * (n / nl) * d / scan
    rerank = q * k * kf * d * 3e-9 if enc == "SQ8" else 0.0
    return train + add + tune + search + rerank + 0.05


def test_plan_is_deterministic_and_picks_the_cheapest_by_its_formulas():
    a = plan_index(300_000, 384, n_queries=20_000, k=3, threads=2)
    b = plan_index(300_000, 384, n_queries=20_000, k=3, threads=2)
    assert a == b and a.as_dict() == b.as_dict()
    # the candidates are every power-of-two nlist with >= 39 rows per list, both encodings, and exact
    names = [c[0] for c in a.candidates]
    want_nl = [2 ** e for e in range(4, 15) if 2 ** e * 39 <= 300_000]
    assert sorted(names) == sorted(["exact"] + [f"IVF{L},{e}" for L in want_nl for e in ("Flat", "SQ8")])
    # each IVF prediction equals the formulas recomputed here; the chosen one is the minimum
    for name, s in a.candidates:
        if name != "exact":
            nl, enc = int(name[3:].split(",")[0]), name.split(",")[1]
            assert s == pytest.approx(hand_cost(300_000, 384, 20_000, 3, enc, nl, threads=2), rel=1e-3)
    assert a.predicted_s == min(s for _, s in a.candidates) and a.backend == a.candidates[0][0]
    assert a.backend == "IVF1024,SQ8"  # by the formulas above
    assert a.reason.startswith("predicted") and "next best" in a.reason


def test_plan_follows_the_workload():
    # few queries: one exact pass is cheaper than any index build, even at 1M rows
    few = plan_index(1_000_000, 384, n_queries=50, threads=2)
    assert few.backend == "exact"
    exact_s = 50 * 1_000_000 * 384 / (27e9 * 2) + 50 * 1_000_000 * 2e-9 + 1_000_000 * 384 * 9e-9
    assert few.predicted_s == pytest.approx(exact_s, rel=1e-3)
    # many queries: IVF; a memory limit on Flat leaves SQ8; target 1 leaves exact
    many = plan_index(1_000_000, 384, n_queries=50_000, threads=2)
    assert many.backend.startswith("IVF")
    many_nl = int(many.backend[3:].split(",")[0])
    assert many.nprobe_prior == int(np.ceil(12 * (1024 / many_nl) ** 0.75))
    assert plan_index(3_000_000, 128, n_queries=50_000).backend.endswith(",SQ8")  # > ivf_flat_max
    assert plan_index(1_000_000, 384, n_queries=50_000, target_recall=1.0).backend == "exact"
    only_flat = plan_index(1_000_000, 384, n_queries=50_000, encodings=["Flat"])
    assert only_flat.backend.endswith(",Flat")
    # a stricter recall target raises the nprobe prior
    assert plan_index(10**6, 384, n_queries=50_000, target_recall=0.99).nprobe_prior > many.nprobe_prior


@pytest.mark.parametrize("bad, match", [
    ({"n_queries": 0}, "n_queries must be an integer >= 1"),
    ({"k": 0}, "k must be an integer >= 1"),
    ({"target_recall": 1.5}, r"target_recall must be in \(0, 1\]"),
    ({"target_recall": 0.0}, r"target_recall must be in \(0, 1\]"),
    ({"nlist_min": 64, "nlist_max": 32}, "nlist_min .64. is larger than nlist_max .32."),
    ({"encodings": ["PQ8"]}, "encodings must be a non-empty subset"),
    ({"k_factor": 0}, "k_factor must be an integer >= 1"),
    ({"n_queries": 2.5}, "n_queries must be an integer"),
])
def test_plan_bad_parameters_are_one_line_config_errors(bad, match):
    x = np.zeros((60_000, 4), np.float32)
    with pytest.raises(ConfigError, match=match) as e:
        build_index(x, **bad)
    assert "\n" not in str(e.value)


def test_auto_exact_branch_equals_numpy_bruteforce():
    rng = np.random.default_rng(11)
    x = clustered(20_000, 32, 50, rng)
    q = clustered(40, 32, 50, rng)
    idx = build_index(x, exact_max=0, n_queries=40, k=5)  # 40 queries: exact is the cheapest
    assert idx.backend == "exact" and idx.describe()["plan"]["backend"] == "exact"
    s, r = idx.search(q, 5)
    bs, br = brute(x, q, 5, "cosine")
    np.testing.assert_array_equal(r, br)
    np.testing.assert_allclose(s, bs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("encodings", [["Flat"], ["SQ8"]])
def test_auto_ivf_branches_meet_the_recall_target_against_bruteforce(encodings):
    rng = np.random.default_rng(12)
    both = clustered(20_600, 32, 80, rng, noise=0.7)  # data and fresh queries share the centres
    x, q = both[:20_000], both[20_000:]
    idx = build_index(x, exact_max=0, n_queries=10**6, k=3, target_recall=0.9, encodings=encodings)
    d = idx.describe()
    assert idx.backend.startswith("IVF") and idx.backend.endswith(encodings[0])
    assert d["plan"]["backend"] == idx.backend and d["nprobe_source"] == "tuned"
    assert d["nprobe"] == d["tune_history_(nprobe,recall,stderr)"][-1][0]
    _, r = idx.search(q, 3)
    _, br = brute(x, q, 3, "cosine")
    # fresh queries: the tuned target, less three standard errors of a 600-query mean
    rec = recall(r, br)
    assert rec >= 0.9 - 3 * np.sqrt(0.9 * 0.1 / 600), rec


def test_user_overrides_of_planned_parameters_are_kept():
    rng = np.random.default_rng(13)
    x = clustered(20_000, 16, 40, rng)
    idx = build_index(x, exact_max=0, n_queries=10**6, encodings=["SQ8"], nlist=64, k_factor=7,
                      train_iters=3, tune_queries=100)
    d = idx.describe()
    assert idx.backend == "IVF64,SQ8" and d["rerank_k_factor"] == 7 and d["train_iters"] == 3
    assert d["tune_queries"] == 100 and d["plan"]["k_factor"] == 7


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,SQ8"])
def test_ivf_all_lists_equals_exact(metric, factory):
    """nprobe = nlist scans everything: Flat is exact, SQ8 + exact re-ranking nearly so."""
    rng = np.random.default_rng(6)
    x = clustered(3000, 24, 12, rng)
    q = clustered(80, 24, 12, rng)
    idx = build_index(x, metric=metric, backend=factory, nprobe=16, k_factor=6)
    s, r = idx.search(q, 5)
    es, er = build_index(x, metric=metric, backend="exact").search(q, 5)
    assert recall(r, er) >= (1.0 if factory.endswith("Flat") else 0.99)
    # scores are the exact scores of the returned rows (re-ranked for SQ8)
    bs, _ = brute(x, q, 3000, metric)
    _, full = brute(x, q, 3000, metric)
    exact_of_r = np.array([[bs[i][list(full[i]).index(j)] for j in r[i]] for i in range(len(q))])
    np.testing.assert_allclose(s, exact_of_r, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_truth_accumulator_excludes_self_and_matches_bruteforce(metric):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    if metric == "cosine":  # the accumulator takes prepared (unit) rows
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[601] = x[600]  # a duplicate row: query 600's nearest is 601 (itself excluded)
    x[17] = x[520]  # a tie across blocks 0 and 4 for query 500's neighbours
    rows = np.array([0, 17, 500, 600, 999])
    acc = TruthAccumulator(x[rows], rows, 3, metric)
    for a in range(0, 1000, 130):  # uneven blocks; after the first, only closer rows enter
        acc.update(x[a:a + 130], a)
    _, full = brute(x, x[rows], 4, metric)
    assert not np.any(acc.best_r == rows[:, None])
    np.testing.assert_array_equal(acc.best_r, full[:, 1:])


def test_nprobe_autotune_reaches_target_recall_and_is_minimal():
    rng = np.random.default_rng(8)
    both = clustered(30400, 32, 60, rng, noise=0.8)  # same centres for data and fresh queries
    x, q = both[:30000], both[30000:]
    _, er = build_index(x, backend="exact").search(q, 3)
    idx = build_index(x, backend="IVF128,Flat", target_recall=0.95, tune_queries=300)
    hist = idx.tune_history
    # tuning stopped at the first nprobe reaching the target, all smaller ones missed it
    # (tune_z=1: recall minus one standard error must reach the target)
    assert hist[-1][0] == idx.nprobe and hist[-1][1] - hist[-1][2] >= 0.95
    assert all(rec - se < 0.95 for _, rec, se in hist[:-1]) and len(hist) >= 2
    assert [h[0] for h in hist] == sorted(h[0] for h in hist)
    _, r = idx.search(q, 3)
    assert recall(r, er) >= 0.93  # fresh queries: target minus sampling noise
    # a stricter target needs at least as many lists, and gets higher recall on fresh queries
    strict = build_index(x, backend="IVF128,Flat", target_recall=0.995, tune_queries=300)
    assert strict.nprobe > idx.nprobe
    _, r2 = strict.search(q, 3)
    assert recall(r2, er) > recall(r, er)


def test_list_coverage_recall_equals_ivf_flat_search_recall():
    """For IVF-Flat the tuner's one-coarse-search recall equals searching at every nprobe."""
    rng = np.random.default_rng(14)
    x = clustered(20_000, 24, 60, rng, noise=0.8)
    idx = build_index(x, backend="IVF64,Flat", target_recall=0.99, tune_queries=200, train_iters=5)
    hist = idx.describe()["tune_by_list_coverage_(nprobe,recall,stderr)"]
    assert len(hist) >= 3 and hist == [list(h) for h in idx.tune_history]
    from mmal.index.tuning import pick_tune_rows
    rows = pick_tune_rows(20_000, 200, 0)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn[rows] @ xn.T
    sims[np.arange(len(rows)), rows] = -np.inf  # a row is not its own neighbour
    truth = np.argsort(-sims, axis=1, kind="stable")[:, :3]
    for npb, rec, _ in hist:
        idx.nprobe = npb
        _, r = idx.search(x[rows], 4)
        found = [[j for j in f if j != q][:3] for f, q in zip(r.tolist(), rows.tolist())]
        assert recall(found, truth) == pytest.approx(rec, abs=1e-4), npb


def test_ivf_sq8_memmap_and_errors(tmp_path):
    rng = np.random.default_rng(9)
    x = clustered(4000, 16, 20, rng)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    q = clustered(30, 16, 20, rng)
    s1, r1 = build_index(ro, backend="IVF32,SQ8", nprobe=5, add_block=333).search(q, 3)
    s2, r2 = build_index(x, backend="IVF32,SQ8", nprobe=5).search(q, 3)
    np.testing.assert_array_equal(r1, r2)
    with pytest.raises(ConfigError, match="more lists"):
        build_index(x[:10], backend="IVF32,Flat")
    with pytest.raises(ConfigError, match="target_recall"):
        build_index(x, backend="IVF8,Flat", target_recall=1.5)
    with pytest.raises(ConfigError, match="IVF8,Flat"):
        build_index(x, backend="IVF8,Flat", bogus=1)


def test_index_input_errors():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(ConfigError, match="metric"):
        build_index(x, metric="hamming")
    with pytest.raises(ConfigError, match="unsupported FAISS backend"):
        build_index(x, backend="HNSW32")
    with pytest.raises(ConfigError, match="2-D"):
        build_index(np.zeros(5, np.float32))
    with pytest.raises(ConfigError, match="dimension"):
        build_index(x, backend="exact").search(np.zeros((2, 3), np.float32), 1)
    with pytest.raises(ConfigError, match="k must"):
        build_index(x, backend="exact").search(np.zeros((2, 4), np.float32), 0)
    with pytest.raises(ConfigError, match="does not take"):
        build_index(x, backend="exact", nprobe=3)


@pytest.mark.slow
def test_auto_recall_at_3_on_200k_x_384():
    rng = np.random.default_rng(5)
    n, d = 200_000, 384
    x = np.empty((n, d), np.float32)
    centers = rng.standard_normal((2000, d)).astype(np.float32)
    for a in range(0, n, 50_000):  # generate in chunks (keeps peak memory low)
        lab = rng.integers(0, len(centers), 50_000)
        x[a:a + 50_000] = centers[lab] + 0.6 * rng.standard_normal((50_000, d)).astype(np.float32)
    q = x[rng.choice(n, 500, replace=False)] + 0.3 * rng.standard_normal((500, d)).astype(np.float32)
    t0 = time.perf_counter()
    idx = build_index(x, metric="cosine", backend="auto", n_queries=500)
    assert idx.backend == idx.describe()["plan"]["backend"]
    _, r = idx.search(q, 3)
    t_approx = time.perf_counter() - t0
    _, er = build_index(x, metric="cosine", backend="exact").search(q, 3)
    assert recall(r, er) >= 0.95, (recall(r, er), t_approx)


def test_progress_goes_through_one_callback():
    # index/ reports progress via mmal.utils.ProgressTask (bool or callable), not rich
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    seen = []
    idx = build_index(x, metric="l2", backend="exact", base_block=30,
                      progress=lambda done, total, desc: seen.append((done, total, desc)))
    s, r = idx.search(x[:3], 2)
    assert seen == [(i, 4, "exact kNN") for i in range(1, 5)]  # ceil(100 / 30) base blocks
    assert r[:, 0].tolist() == [0, 1, 2]
    ivf_seen = []
    build_index(x, backend="IVF4,Flat", nprobe=4, seed=0, progress=lambda d, t, desc: ivf_seen.append(desc)).search(x[:2], 1)
    assert ivf_seen and ivf_seen[0] == "FAISS add (IVF4,Flat)"
