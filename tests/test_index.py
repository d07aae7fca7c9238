"""kNN backends: exact equals brute force; FAISS recall vs exact."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmal.errors import ConfigError
from mmal.index import ExactIndex, FaissIndex, auto_backend, build_index


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


def test_auto_backend_thresholds_and_overrides():
    assert auto_backend(49_999, 384) == "exact"
    assert auto_backend(50_000, 384) == f"IVF{round(4 * np.sqrt(50_000))},Flat"
    assert auto_backend(2_000_000, 384) == f"IVF{round(4 * np.sqrt(2_000_000))},PQ48"
    assert auto_backend(2_000_000, 100) == f"IVF{round(4 * np.sqrt(2_000_000))},PQ10"
    assert auto_backend(10**6, 384, nlist=100) == "IVF100,Flat"
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    assert build_index(x).backend == "exact"
    idx = build_index(x, exact_max=100, nlist=8, nprobe=3)
    assert isinstance(idx, FaissIndex) and idx.backend == "IVF8,Flat" and idx.nprobe == 3


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
def test_faiss_auto_recall_at_3_on_200k_x_384():
    rng = np.random.default_rng(5)
    n, d = 200_000, 384
    x = np.empty((n, d), np.float32)
    centers = rng.standard_normal((2000, d)).astype(np.float32)
    for a in range(0, n, 50_000):  # generate in chunks (keeps peak memory low)
        lab = rng.integers(0, len(centers), 50_000)
        x[a:a + 50_000] = centers[lab] + 0.6 * rng.standard_normal((50_000, d)).astype(np.float32)
    q = x[rng.choice(n, 500, replace=False)] + 0.3 * rng.standard_normal((500, d)).astype(np.float32)
    t0 = time.perf_counter()
    idx = build_index(x, metric="cosine", backend="auto")
    assert idx.backend == f"IVF{round(4 * np.sqrt(n))},Flat"
    _, r = idx.search(q, 3)
    t_approx = time.perf_counter() - t0
    _, er = build_index(x, metric="cosine", backend="exact").search(q, 3)
    assert recall(r, er) >= 0.95, (recall(r, er), t_approx)
