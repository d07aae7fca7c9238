"""Sharded kNN on Ray against one local index, to check the cost model of docs/scale.md.

    .venv/bin/python bench/scale.py                 # 2M x 384, 50k seeds, 2 Ray workers -> bench/results/scale.json
    .venv/bin/python bench/scale.py --n 200000 --queries 5000   # a quick run

Both sides get the same rows, the same queries, the same FAISS factory string and the same
recall target, in this one process: first one local index over all rows (1 thread), then a
:class:`mmal.engine.ray_engine.ShardedIndex` with one shard per Ray worker (local Ray,
``num_cpus`` = workers, 1 thread per shard). Build time includes moving the rows into Ray's
object store. Recall@k of both is measured on ``--recall-queries`` queries against exact
search. The load average is recorded before and after each side.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def clustered(n: int, d: int, n_centres: int = 2000, seed: int = 0, block: int = 200_000) -> np.ndarray:
    """``n`` rows around ``n_centres`` Gaussian centres, unit norm, float32 (built in blocks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, block):
        m = min(block, n - s)
        x = centres[rng.integers(n_centres, size=m)] + 0.7 * rng.standard_normal((m, d)).astype(np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, block: int = 250_000) -> np.ndarray:
    """Rows of the exact top-k by inner product (unit rows: cosine), ``[Q, k]``."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_r = np.zeros((len(q), k), np.int64)
    for s in range(0, len(x), block):
        sims = q @ x[s:s + block].T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sims, part, 1)
        cs, cr = np.concatenate([best_s, ps], 1), np.concatenate([best_r, part + s], 1)
        o = np.argsort(-cs, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(cs, o, 1), np.take_along_axis(cr, o, 1)
    return best_r


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(rows, truth)]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", default="IVF1024,Flat")
    ap.add_argument("--recall-queries", type=int, default=500)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    a = ap.parse_args(argv)

    from mmal.engine.ray_engine import ShardedIndex, init_ray
    from mmal.index import build_index

    t0 = time.perf_counter()
    x = clustered(a.n, a.dim)
    rng = np.random.default_rng(1)
    q = x[rng.choice(a.n, a.queries, replace=False)] + 0.05 * rng.standard_normal((a.queries, a.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    gen_s = time.perf_counter() - t0
    rq = q[: a.recall_queries]
    t0 = time.perf_counter()
    truth = exact_topk(x, rq, a.k)
    exact_s = time.perf_counter() - t0
    print(f"data {a.n} x {a.dim} in {gen_s:.1f} s; exact truth for {len(rq)} queries in {exact_s:.1f} s", flush=True)
    params = {"threads": 1, "target_recall": 0.95}
    out = {"config": vars(a), "data_seconds": gen_s, "exact_seconds_for_recall_queries": exact_s,
           "exact_seconds_per_query": exact_s / len(rq)}

    # one local index over every row, 1 thread
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    idx = build_index(x, metric="cosine", backend=a.backend, **params)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, rows = idx.search(q, a.k)
    search = time.perf_counter() - t0
    out["local"] = {"build_s": build, "search_s": search, "total_s": build + search, "recall": recall(rows[: len(rq)], truth),
                    "load_before": load0, "load_after": os.getloadavg(),
                    "peak_rss_gb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    print("local", json.dumps(out["local"]), flush=True)
    del idx

    # one shard per Ray worker
    init_ray(num_cpus=a.workers, object_store_memory=int(a.n * a.dim * 4 * 1.3))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    sh = ShardedIndex(x, metric="cosine", backend=a.backend, n_shards=a.workers, cpus_per_shard=1, index_params=params)
    _ = sh.search(q[:10], a.k)  # wait until every shard is built
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, rows = sh.search(q, a.k)
    search = time.perf_counter() - t0
    merge_bytes = a.workers * a.queries * a.k * 12
    out["ray"] = {"workers": a.workers, "build_s": build, "search_s": search, "total_s": build + search,
                  "recall": recall(rows[: len(rq)], truth), "load_before": load0, "load_after": os.getloadavg(),
                  "rows_per_shard": int(a.n // a.workers), "shard_float32_gb": a.n / a.workers * a.dim * 4 / 2**30,
                  "merge_bytes": merge_bytes}
    print("ray", json.dumps(out["ray"]), flush=True)
    sh.close()
    out["speedup_total"] = out["local"]["total_s"] / out["ray"]["total_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1, default=float))
    print(a.out)


if __name__ == "__main__":
    main()
