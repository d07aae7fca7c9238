"""Benchmark the diversity strategies: time and peak RSS, factorised vs materialised.

Every measurement runs in its own subprocess, so each gets its own peak RSS
(``ru_maxrss``). Data are synthetic (seeded Gaussian features, softmax of Gaussian logits);
data generation is not timed but its memory is part of the peak (reported separately as
``rss_after_data_mb``).

Measurements (sizes are flags):

* ``badge`` / ``bmmal`` factorised on ``--n`` items, ``--classes`` classes, ``--dim``-d
  features (BMMAL: two modalities of ``dim/2`` each, so the gradient embedding has the
  same ``C·dim`` size), budget ``--budget``;
* the materialised baselines (dense ``N x C·D`` float32 matrix + the same k-means++
  seeding) on a ``--dense-n`` subsample for ``--dense-picks`` picks, extrapolated to
  ``--n`` / ``--budget`` (time per pick and memory grow linearly in N);
* the factorised versions on the same subsample (direct comparison);
* ``badge`` on ``--n-large`` items within 8 GB (budget ``--budget-large``);
* ``coreset`` (k-center greedy) on ``--coreset-n`` x ``--coreset-dim``, budget
  ``--coreset-budget``;
* ``cold`` (``--only cold``): MMSSL pre-training time per epoch (one warm-up epoch, one
  prototype epoch) on ``--mmssl-n`` items, and the cold-start strategies
  (``--cold-strategies``) with budget ``--cold-budget`` on ``--cold-n`` items of two
  ``--cold-dim``-d modalities (MMSSL-like unit embeddings); the 1-minute load average is
  recorded before each measurement. ``--cold-repeats R`` runs every selection R times,
  alternating strategies, and keeps all times (``seconds_runs``) with the median run (the
  slower one when R is even).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/select.py            # everything
    .venv/bin/python bench/select.py --n 20000 --n-large 50000 --coreset-n 50000  # quick
"""

from __future__ import annotations

import os
import sys

# This file is named like the stdlib module `select`; drop its own folder from the path
# before anything imports `subprocess` (which imports `select`).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Peak RSS of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def gaussian(rng, n, d, chunk=65536):
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        out[s : s + chunk] = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
    return out


def probs_of(rng, n, c, scale=2.0):
    lg = rng.standard_normal((n, c), dtype=np.float32) * scale
    lg -= lg.max(1, keepdims=True)
    np.exp(lg, out=lg)
    lg /= lg.sum(1, keepdims=True)
    return lg


# ---------------------------------------------------------------------------------------
# child: one measurement
# ---------------------------------------------------------------------------------------
def child(spec: dict) -> dict:
    from mmal.pool import ScoredPool
    from mmal.select.badge import GradientSpace, gradient_embedding, kmeanspp_dense, kmeanspp_seed, pseudo_label_residual
    from mmal.select.bmmal import balance_weights, contribution_share, modality_contributions
    from mmal.select.coreset import kcenter_greedy

    if spec["kind"] in ("mmssl", "cold"):
        return child_cold(spec)
    if spec["kind"].startswith("scale-"):
        return child_scale(spec)
    kind, n, c, d, budget = spec["kind"], spec["n"], spec["classes"], spec["dim"], spec["budget"]
    rng = np.random.default_rng(spec.get("seed", 0))
    out = dict(spec)
    if kind == "coreset":
        x = gaussian(rng, n, d)
        labeled = np.zeros(n, bool)
        labeled[rng.choice(n, size=spec.get("labeled", 0), replace=False)] = True
        out["rss_after_data_mb"] = current_rss_mb()
        t = time.perf_counter()
        picks, _ = kcenter_greedy(x, budget, np.flatnonzero(~labeled), np.flatnonzero(labeled),
                                  np.random.default_rng(0))
        out["seconds"] = time.perf_counter() - t
        out["picks"] = int(len(picks))
    elif kind in ("badge", "badge-dense"):
        probs = probs_of(rng, n, c)
        z = gaussian(rng, n, d)
        out["rss_after_data_mb"] = current_rss_mb()
        t = time.perf_counter()
        if kind == "badge":
            space = GradientSpace(pseudo_label_residual(probs), [z])
            picks, _ = kmeanspp_seed(space, budget, np.arange(n), np.random.default_rng(0))
        else:
            g = gradient_embedding(probs, z)  # [N, C·D] float32, the materialised matrix
            out["dense_matrix_mb"] = g.nbytes / 2**20
            picks, _ = kmeanspp_dense(g, budget, np.arange(n), np.random.default_rng(0))
        out["seconds"] = time.perf_counter() - t
        out["picks"] = int(len(picks))
    elif kind in ("bmmal", "bmmal-dense"):
        probs = probs_of(rng, n, c)
        half = d // 2
        modality = {"audio": gaussian(rng, n, half), "video": gaussian(rng, n, d - half)}
        extras = {"coalition:": probs_of(rng, n, c), "coalition:audio": probs_of(rng, n, c),
                  "coalition:video": probs_of(rng, n, c)}
        pool = ScoredPool(ids=np.arange(n).astype(str), probs=probs, modality=modality, extras=extras)
        out["rss_after_data_mb"] = current_rss_mb()
        t = time.perf_counter()
        _, Phi, names = modality_contributions(pool)
        w = balance_weights(Phi)
        zs = [pool.modality[m] for m in names]
        if kind == "bmmal":
            space = GradientSpace(pseudo_label_residual(probs), zs, weights=w)
            picks, _ = kmeanspp_seed(space, budget, np.arange(n), np.random.default_rng(0))
        else:
            g = gradient_embedding(probs, zs, weights=w)
            out["dense_matrix_mb"] = g.nbytes / 2**20
            picks, _ = kmeanspp_dense(g, budget, np.arange(n), np.random.default_rng(0))
        out["seconds"] = time.perf_counter() - t
        out["picks"] = int(len(picks))
    else:
        raise SystemExit(f"unknown kind {kind}")
    out["seconds_per_pick"] = out["seconds"] / max(out["picks"], 1)
    out["peak_rss_mb"] = rss_mb()
    return out


def paired_unit(rng, n, d, chunk=65536):
    """Two modalities sharing a latent (cross-modal cosine ~0.7), unit rows: ``{a, b}: [n, d]``."""
    out = {"a": np.empty((n, d), np.float32), "b": np.empty((n, d), np.float32)}
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        z = rng.standard_normal((m, d), dtype=np.float32)
        for k in out:
            x = z + 0.6 * rng.standard_normal((m, d), dtype=np.float32)
            out[k][s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def child_cold(spec: dict) -> dict:
    """One cold-start measurement: ``mmssl`` (seconds per warm-up / prototype epoch) or ``cold``."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(spec.get("seed", 0))
    out = dict(spec, loadavg_1m_before=os.getloadavg()[0])
    n = spec["n"]
    if spec["kind"] == "mmssl":
        from mmal.models.mmssl import MMSSLConfig
        from mmal.train.mmssl import train_mmssl

        feats = {"text": gaussian(rng, n, 384), "image": gaussian(rng, n, 1280)}
        out["rss_after_data_mb"] = current_rss_mb()
        t = time.perf_counter()
        res = train_mmssl(feats, MMSSLConfig(epochs=2, warmup_epochs=1, seed=0))
        out["seconds"] = time.perf_counter() - t
        out["n_prototypes"] = res.config["n_prototypes"]
        out["note"] = ("2 epochs: 1 warm-up (InfoNCE only) + 1 with prototypes (k-means per modality); "
                       "the default 60 epochs (10 warm-up) take about 10 x warm-up + 50 x prototype epoch")
        out["picks"] = 0
    else:
        from mmal.select import select
        from mmal.select.coldstart import cold_pool

        emb = paired_unit(rng, n, spec["dim"])
        pool = cold_pool(np.arange(n).astype(str), emb, emb, n_classes=10)
        out["rss_after_data_mb"] = current_rss_mb()
        t = time.perf_counter()
        sel = select(spec["strategy"], pool, spec["budget"], seed=0, **spec.get("params", {}))
        out["seconds"] = time.perf_counter() - t
        out["picks"] = int(len(sel))
        out["info"] = {k: v for k, v in sel.info.items() if isinstance(v, (int, float, str))}
    out["seconds_per_pick"] = out["seconds"] / max(out["picks"], 1)
    out["peak_rss_mb"] = rss_mb()
    out["loadavg_1m_after"] = os.getloadavg()[0]
    return out


def clustered(rng, n, d, n_clusters=1000, spread=0.35, chunk=65536):
    """Mixture of ``n_clusters`` Gaussians (unit-variance centres, ``spread`` noise): ``[n, d]`` float32."""
    cen = rng.standard_normal((n_clusters, d), dtype=np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        out[s:s + m] = cen[rng.integers(n_clusters, size=m)] + spread * rng.standard_normal((m, d), dtype=np.float32)
    return out


def features_of(rng, data, n, d):
    return gaussian(rng, n, d) if data == "gauss" else clustered(rng, n, d)


def badge_potential(space, picks, rows, block=4096):
    """k-means potential of the picks: sum over ``rows`` of min squared gradient distance to a pick."""
    picks = np.asarray(picks)
    cen = space.centre_rows(picks)
    csq = space.sqnorm(picks)
    tot = 0.0
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        best = np.full(len(r), np.inf)
        for c in range(0, len(picks), 1024):
            sub = (cen[0][c:c + 1024], [z[c:c + 1024] for z in cen[1]], None)
            best = np.minimum(best, space.sqdist_many(r, sub, space.sqnorm(r), csq[c:c + 1024]).min(1))
        tot += float(best.sum())
    return tot


def child_scale(spec: dict) -> dict:
    """Issue-12 scale runs: ``scale-badge``, ``scale-coreset`` (ours, by ``method``),
    ``scale-smalltext-badge`` / ``scale-smalltext-coreset`` (the anchor library)."""
    from mmal.select.badge import GradientSpace, kmeanspp_seed, pseudo_label_residual
    from mmal.select.coreset import kcenter_greedy

    kind, n, budget = spec["kind"], spec["n"], spec["budget"]
    rng = np.random.default_rng(spec.get("seed", 0))
    out = dict(spec)
    if kind in ("scale-badge", "scale-smalltext-badge"):
        probs = probs_of(rng, n, spec["classes"])
        z = features_of(rng, spec["data"], n, spec["dim"])
    else:
        x = features_of(rng, spec["data"], n, spec["dim"])
    if kind.startswith("scale-smalltext"):  # import outside the timed block
        from small_text.integrations.pytorch.query_strategies.strategies import BADGE
        from small_text.query_strategies.coresets import greedy_coreset
    out["rss_after_data_mb"] = current_rss_mb()
    out["loadavg_before"] = list(os.getloadavg())
    cpu0 = time.process_time()
    t = time.perf_counter()
    if kind == "scale-badge":
        space = GradientSpace(pseudo_label_residual(probs), [z])
        picks, _ = kmeanspp_seed(space, budget, np.arange(n), np.random.default_rng(spec.get("rng", 0)),
                                 method=spec["method"])
        out["seconds"] = time.perf_counter() - t
        if spec.get("potential"):
            t2 = time.perf_counter()
            out["potential"] = badge_potential(space, picks, np.arange(n))
            out["potential_seconds"] = time.perf_counter() - t2
    elif kind == "scale-coreset":
        picks, _ = kcenter_greedy(x, budget, np.arange(1, n), np.array([0]), np.random.default_rng(0),
                                  method=spec["method"])
        out["seconds"] = time.perf_counter() - t
        out["picks_head"] = [int(v) for v in picks[:20]]
    elif kind == "scale-smalltext-coreset":
        picks = greedy_coreset(x, np.arange(1, n), np.array([0]), budget, distance_metric="euclidean")
        out["seconds"] = time.perf_counter() - t
        out["picks_head"] = [int(v) + 1 for v in np.asarray(picks)[:20]]
    elif kind == "scale-smalltext-badge":
        st = BADGE(spec["classes"])
        # its sample() materialises the [N, C*D] float64 embedding, then sklearn's greedy k-means++
        picks = st.sample(None, None, np.arange(n), np.array([], dtype=int), None, budget, z,
                          embeddings_proba=probs)
        out["seconds"] = time.perf_counter() - t
    else:
        raise SystemExit(f"unknown kind {kind}")
    out["loadavg_after"] = list(os.getloadavg())
    out["cpu_seconds_incl_potential"] = time.process_time() - cpu0  # this process's CPU time (load-robust)
    out["picks"] = int(len(picks))
    out["seconds_per_pick"] = out["seconds"] / max(out["picks"], 1)
    out["peak_rss_mb"] = rss_mb()
    return out


def run_scale(args) -> dict:
    """BADGE and k-center at 1M x 10k, ours vs the anchor, alternating where both run."""
    th = args.threads
    n, b = args.scale_n, args.scale_budget
    bd = {"classes": args.classes, "dim": args.dim, "data": args.scale_data}
    res: dict = {"n": n, "budget": b, **bd}
    sub_n, sub_b = args.anchor_n, args.anchor_budget
    ex_b = args.exact_picks
    # BADGE: exact (extrapolated from ex_b picks; its per-pick cost is one full pass), rejection (full run)
    ex = run_child({"kind": "scale-badge", "method": "exact", "n": n, "budget": ex_b, **bd}, th)
    rj = run_child({"kind": "scale-badge", "method": "rejection", "n": n, "budget": b, **bd}, th)
    st = run_child({"kind": "scale-smalltext-badge", "n": sub_n, "budget": sub_b, **bd}, th)
    res["badge_exact"] = ex
    if "error" not in ex:
        res["badge_exact_extrapolated_s"] = ex["seconds_per_pick"] * b
    res["badge_rejection"] = rj
    res["badge_smalltext_subsample"] = st
    if "error" not in st:
        res["badge_smalltext_extrapolated_s"] = (st["seconds"] * (n / sub_n) * (b / sub_b)
                                                 * (2 + np.log(b)) / (2 + np.log(sub_b)))
        res["badge_smalltext_dense_gb_at_n"] = n * args.classes * args.dim * 8 / 2**30
    # quality of the rejection sampler against exact on a size where both run in full
    qn, qb = args.quality_n, args.quality_budget
    qual = []
    for seed in range(args.quality_seeds):
        for method in ("exact", "rejection"):
            qual.append(run_child({"kind": "scale-badge", "method": method, "n": qn, "budget": qb, "rng": seed,
                                   "potential": True, **bd}, th))
    res["badge_quality"] = qual
    # Core-Set: full (extrapolated), lazy (full run), small-text (subsample, extrapolated ~ N * B^2)
    cd = {"dim": args.coreset_dim, "data": args.scale_data}
    full = run_child({"kind": "scale-coreset", "method": "full", "n": n, "budget": ex_b, **cd}, th)
    lazy = run_child({"kind": "scale-coreset", "method": "lazy", "n": n, "budget": b, **cd}, th)
    stc = run_child({"kind": "scale-smalltext-coreset", "n": sub_n, "budget": sub_b, **cd}, th)
    res["coreset_full"] = full
    if "error" not in full:
        res["coreset_full_extrapolated_s"] = full["seconds_per_pick"] * b
        if "error" not in lazy:
            res["coreset_lazy_equals_full_on_first_picks"] = full["picks_head"] == lazy["picks_head"][:len(full["picks_head"])]
    res["coreset_lazy"] = lazy
    res["coreset_smalltext_subsample"] = stc
    if "error" not in stc:
        res["coreset_smalltext_extrapolated_s"] = stc["seconds"] * (n / sub_n) * (b / sub_b) ** 2
    res["note"] = ("exact BADGE and full-pass k-center cost one pass over the pool per pick, so they were "
                   f"timed for {ex_b} picks and extrapolated linearly to {b}; small-text was timed on a "
                   f"{sub_n}-item subsample for {sub_b} picks and extrapolated (BADGE ~ N*B*(2+ln B), sklearn's "
                   "greedy k-means++; greedy_coreset recomputes distances to all centres each pick, ~ N*B^2). "
                   "Runs alternate ours/baseline in one parent process, each in its own subprocess for peak RSS.")
    return res


def run_cold(args) -> dict:
    """MMSSL pre-training and cold-start selection timings (``--only cold``)."""
    res = {"mmssl": {}, "selection": {}, "target": "<= 60 s for a 1k budget on 1M items"}
    for n in [int(v) for v in args.mmssl_n.split(",") if v]:
        res["mmssl"][str(n)] = run_child({"kind": "mmssl", "n": n, "budget": 0}, args.threads)
    runs = {}
    for rep in range(max(1, args.cold_repeats)):  # repeats outermost: the strategies alternate
        for n in [int(v) for v in args.cold_n.split(",") if v]:
            for strat in args.cold_strategies.split(","):
                runs.setdefault(f"{strat}@{n}", []).append(run_child(
                    {"kind": "cold", "strategy": strat, "n": n, "dim": args.cold_dim, "budget": args.cold_budget},
                    args.threads))
    for key, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        res["selection"][key] = {**rs[int(np.argsort(secs)[len(secs) // 2])],  # the median run (the slower of 2)
                                 "seconds_runs": secs, "loadavg_1m_runs": [r["loadavg_1m_before"] for r in rs],
                                 "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs)}
    return res


def run_child(spec: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    print(f"-> {spec}", file=sys.stderr, flush=True)
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        return dict(spec, error=res.stderr[-2000:], returncode=res.returncode)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"   {out['seconds']:.1f}s, {out['seconds_per_pick'] * 1e3:.1f} ms/pick, "
          f"peak {out['peak_rss_mb']:.0f} MiB", file=sys.stderr, flush=True)
    return out


def extrapolate(dense: dict, full: dict, n: int, budget: int) -> dict:
    """Scale a materialised subsample run to ``n`` items / ``budget`` picks.

    Per-pick time and the dense matrix grow linearly in N. The memory estimate is a lower
    bound: the dense matrix at N plus the pool data the factorised run at N held.
    """
    scale = n / dense["n"]
    g_mb = dense["dense_matrix_mb"] * scale
    return {
        "n": n, "budget": budget, "extrapolated_from_n": dense["n"],
        "dense_matrix_mb": g_mb,
        "peak_rss_mb_lower_bound": g_mb + full["rss_after_data_mb"],
        "seconds_per_pick_estimate": dense["seconds_per_pick"] * scale,
        "seconds_estimate": dense["seconds_per_pick"] * scale * budget,
        "note": "linear extrapolation from the subsample: dense matrix size and per-pick time grow linearly in N",
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--dense-n", type=int, default=20_000, help="subsample for the materialised baseline")
    ap.add_argument("--dense-picks", type=int, default=200)
    ap.add_argument("--n-large", type=int, default=1_000_000)
    ap.add_argument("--budget-large", type=int, default=1000)
    ap.add_argument("--coreset-n", type=int, default=1_000_000)
    ap.add_argument("--coreset-dim", type=int, default=384)
    ap.add_argument("--coreset-budget", type=int, default=1000)
    ap.add_argument("--coreset-labeled", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mmssl-n", default="100000,1000000", help="comma list of pool sizes for MMSSL timing")
    ap.add_argument("--cold-n", default="100000,1000000", help="comma list of pool sizes for cold-start selection")
    ap.add_argument("--cold-dim", type=int, default=128, help="MMSSL embedding size per modality")
    ap.add_argument("--cold-budget", type=int, default=1000)
    ap.add_argument("--cold-strategies", default="activeft,mm-activeft,mmcsal,kmeans,typiclust,probcover,coreset")
    ap.add_argument("--cold-repeats", type=int, default=1,
                    help="runs per cold-start measurement, alternating; the JSON keeps all and reports the median "
                         "(the slower of two)")
    ap.add_argument("--scale-n", type=int, default=1_000_000)
    ap.add_argument("--scale-budget", type=int, default=10_000)
    ap.add_argument("--scale-data", default="gauss", choices=["gauss", "clustered"])
    ap.add_argument("--exact-picks", type=int, default=50, help="picks timed for the one-pass-per-pick methods")
    ap.add_argument("--anchor-n", type=int, default=20_000)
    ap.add_argument("--anchor-budget", type=int, default=200)
    ap.add_argument("--quality-n", type=int, default=100_000)
    ap.add_argument("--quality-budget", type=int, default=1000)
    ap.add_argument("--quality-seeds", type=int, default=2)
    ap.add_argument("--only", default="", help="comma list of: badge,bmmal,large,coreset,cold,scale")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "select.json"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    only = set(filter(None, args.only.split(","))) or {"badge", "bmmal", "large", "coreset"}
    common = {"classes": args.classes, "dim": args.dim}
    results: dict = {}
    for name in ("badge", "bmmal"):
        if name not in only:
            continue
        full = run_child({"kind": name, "n": args.n, "budget": args.budget, **common}, args.threads)
        sub = run_child({"kind": name, "n": args.dense_n, "budget": args.dense_picks, **common}, args.threads)
        dense = run_child({"kind": f"{name}-dense", "n": args.dense_n, "budget": args.dense_picks, **common},
                          args.threads)
        entry = {"factorised": full, "factorised_subsample": sub, "materialised_subsample": dense}
        if "error" not in dense and "error" not in full:
            entry["materialised_extrapolated"] = extrapolate(dense, full, args.n, args.budget)
            entry["speedup_per_pick_subsample"] = dense["seconds_per_pick"] / sub["seconds_per_pick"]
            entry["speedup_extrapolated"] = entry["materialised_extrapolated"]["seconds_estimate"] / full["seconds"]
        results[name] = entry
    if "large" in only:
        results["badge_large"] = run_child(
            {"kind": "badge", "n": args.n_large, "budget": args.budget_large, **common}, args.threads)
        results["badge_large"]["within_8gb"] = results["badge_large"].get("peak_rss_mb", 1e9) < 8192
    if "coreset" in only:
        results["coreset"] = run_child(
            {"kind": "coreset", "n": args.coreset_n, "dim": args.coreset_dim, "classes": args.classes,
             "budget": args.coreset_budget, "labeled": args.coreset_labeled}, args.threads)
    if "scale" in only and args.only:  # opt-in: the 1M scale runs
        results[f"scale_{args.scale_data}"] = run_scale(args)
    if "cold" in only and args.only:  # opt-in: not part of the default run
        results["cold_start"] = run_cold(args)

    import psutil

    meta = {
        "command": "bench/select.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "mem_total_gb": psutil.virtual_memory().total / 2**30,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine_note": "shared 2-core machine (~6 engineers working at once); timings are noisy upper bounds",
        "materialised_note": (
            f"the dense N x C·D float32 matrix at N={args.n} would take "
            f"{args.n * args.classes * args.dim * 4 / 2**30:.1f} GiB, too big for the shared machine, so it was "
            f"measured on a {args.dense_n}-item subsample for {args.dense_picks} picks and extrapolated linearly"
        ),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prev = json.loads(out.read_text()) if out.exists() and args.only else {}
    if "cold_start" in results and isinstance(prev.get("cold_start"), dict):  # keep earlier sizes/strategies
        for part in ("mmssl", "selection"):
            results["cold_start"][part] = {**prev["cold_start"].get(part, {}), **results["cold_start"][part]}
        results["cold_start"] = {**prev["cold_start"], **results["cold_start"]}  # history, notes
    prev.update(results)
    prev["meta"] = meta
    out.write_text(json.dumps(prev, indent=2, default=float))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
