"""Benchmark: LSB kNN of S seeds (k=3) over N synthetic candidates: the default vs FAISS.

Usage::

    .venv/bin/python bench/knn.py --sizes 100000,300000 --seeds 20000
    .venv/bin/python bench/knn.py --sizes 10000000 --seeds 50000 --dim 128

Candidates are generated in chunks into a memmap under ``bench/scratch/`` (clustered
Gaussian data, float32). In one process (``--threads``, default 2, for every system), every
system searches **all** seeds:

* exact search, FAISS ``IndexFlatIP`` on normalised rows: timed on the eval + tune seeds
  (their exact top-k is the ground truth) and scaled to all seeds, or timed on all seeds
  with ``--exact-all``; the JSON marks which;
* mmal's default ``build_index(cand, metric="cosine", n_queries=S, k=k)``: the cost model's
  plan, the build, its own nprobe tuning and the search, all counted;
* each FAISS config of ``--faiss`` (default ``IVF{256,512,1024,4096},Flat`` and
  ``IVF{256,512,1024,4096},SQ8`` + exact re-rank of ``4k``): build + search counted; its
  nprobe swept on the tune seeds to the lowest reaching the default's recall on them (the
  sweep is *not* counted against it);
* the default and the FAISS configs alternate, ``--repeats`` times; recall@k is measured on
  the eval seeds (disjoint from the tune seeds); ``os.getloadavg()`` is recorded around
  every run.

Writes ``bench/results/knn.json`` (merging with sizes already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds scripts such as select.py that would shadow stdlib modules: drop it from sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "src"))

from mmal.index import build_index  # noqa: E402
from mmal.index.base import normalize_rows, release_pages, sort_topk  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB


def centers_for(dim: int, n_clusters: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_clusters, dim)).astype(np.float32)


def make_candidates(path: Path, n: int, dim: int, centers: np.ndarray, noise: float, seed: int,
                    chunk: int = 250_000) -> np.memmap:
    done = path.with_suffix(".done")
    if not (path.exists() and done.exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        for i, a in enumerate(range(0, n, chunk)):
            b = min(n, a + chunk)
            rng = np.random.default_rng([seed, i])
            lab = rng.integers(0, len(centers), b - a)
            mm[a:b] = centers[lab] + noise * rng.standard_normal((b - a, dim), dtype=np.float32)
            mm.flush()
            release_pages(mm)
        del mm
        done.write_text("ok")
    return np.load(path, mmap_mode="r")


def make_seeds(n: int, centers: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 10**6])
    lab = rng.integers(0, len(centers), n)
    return centers[lab] + noise * rng.standard_normal((n, centers.shape[1]), dtype=np.float32)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


def loads() -> list:
    return [round(v, 2) for v in os.getloadavg()]


def exact_chunked(cand, queries: np.ndarray, k: int, chunk: int = 1_000_000) -> tuple:
    """Exact top-k inner product of unit ``queries`` over the normalised rows of ``cand``, chunk by chunk."""
    import faiss

    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_r = np.zeros((len(queries), 0), np.int64)
    for a in range(0, len(cand), chunk):
        flat = faiss.IndexFlatIP(cand.shape[1])
        flat.add(normalize_rows(np.array(cand[a:a + chunk])))
        release_pages(cand)
        s, r = flat.search(queries, k)
        del flat
        best_s, best_r = sort_topk(np.concatenate([best_s, s], 1), np.concatenate([best_r, r + a], 1), k, True)
        print(f"   exact: {min(len(cand), a + chunk):,} / {len(cand):,} rows", file=sys.stderr, flush=True)
    return best_s, best_r


class _BuildOverBudget(Exception):
    """A baseline's build alone took longer than the default's whole run."""


def tune_to_recall(index, queries: np.ndarray, truth: np.ndarray, target: float, k: int, steps, n_all: int,
                   give_up_s: float) -> tuple:
    """Smallest nprobe in ``steps`` whose recall@k on the tuning seeds reaches ``target``.

    Stops early (``reached=False``) once the search time at the current nprobe, scaled from the
    tuning seeds to all ``n_all`` seeds, alone exceeds ``give_up_s``: search time grows with
    nprobe, so a larger nprobe cannot be faster either (this one figure is extrapolated).
    Returns ``(nprobe, history [(nprobe, recall, scaled search s)], reached, stop_reason)``.
    """
    hist = []
    for npb in steps:
        index.nprobe = npb
        t0 = time.perf_counter()
        _, r = index.search(queries, k)
        scaled = (time.perf_counter() - t0) * n_all / len(queries)
        rec = recall_at(r, truth)
        hist.append((int(npb), round(rec, 4), round(scaled, 2)))
        if rec >= target:
            return int(npb), hist, True, None
        if scaled > give_up_s:
            return int(npb), hist, False, (f"recall {rec:.4f} < {target:.4f} at nprobe {npb}, whose search of all "
                                           f"seeds (scaled from {len(queries)} tune seeds) is {scaled:.1f} s > "
                                           f"{give_up_s:.1f} s: cannot be faster than the default at its recall")
    return int(steps[-1]), hist, False, f"recall below {target:.4f} at the largest nprobe tried ({steps[-1]})"


def summarize(out: dict, repeats: int) -> None:
    """Medians per system, the best FAISS config at equal recall, and the default's ratio to it.

    A stopped baseline (``reached_target`` false) gets a lower bound of its total: its build
    plus the search time, scaled from the tune seeds, at the last nprobe it tried (which was
    still below the default's recall), or the build time it had reached when stopped.
    ``ratio_lower_bound`` is the smallest ratio any baseline can have under these bounds.
    """
    summ = {}
    for r in out["runs"]:
        summ.setdefault(r["system"], []).append(r)
    out["summary"] = {}
    for name, rs in summ.items():
        totals = [r["total_s"] for r in rs if "total_s" in r]
        out["summary"][name] = {
            "median_total_s": float(np.median(totals)) if totals else None, "totals_s": totals,
            "recall_at_k_eval": next((r["recall_at_k_eval"] for r in rs if "recall_at_k_eval" in r), None),
            "nprobe": rs[0]["nprobe"], "backend": rs[0]["backend"],
            "reached_target_in_repeats": [bool(r.get("reached_target", True)) for r in rs]}
        bounds = []
        for r in rs:
            if r.get("reached_target", True):
                continue
            if isinstance(r["build_s"], str):  # "> 75.7": stopped while building
                bounds.append(float(r["build_s"].lstrip("> ")))
            else:
                sweep = r.get("nprobe_sweep_(nprobe,recall_tune,search_all_s_scaled)") or [[0, 0, 0.0]]
                bounds.append(r["build_s"] + sweep[-1][2])
        if bounds:
            out["summary"][name]["stopped_total_lower_bound_s"] = round(min(bounds), 2)
    ours = out["summary"]["mmal default"]["median_total_s"]
    eligible = {k_: v for k_, v in out["summary"].items() if k_ != "mmal default" and v["median_total_s"]}
    out.pop("best_faiss_at_equal_recall", None)
    out.pop("ratio_best_faiss_total_over_default_total", None)
    if eligible:
        best = min(eligible, key=lambda k_: eligible[k_]["median_total_s"])
        out["best_faiss_at_equal_recall"] = best
        out["ratio_best_faiss_total_over_default_total"] = round(eligible[best]["median_total_s"] / ours, 3)
        per_rep = []  # the same ratio repeat by repeat (each baseline against the default run of its repeat)
        for rep in range(repeats):
            mine = [r["total_s"] for r in out["runs"] if r["system"] == "mmal default" and r["repeat"] == rep]
            theirs = [r["total_s"] for r in out["runs"]
                      if r["system"] != "mmal default" and r["repeat"] == rep and "total_s" in r]
            if mine and theirs:
                per_rep.append(round(min(theirs) / mine[0], 3))
        out["ratio_per_repeat"] = per_rep
    lows = [v["median_total_s"] for k_, v in out["summary"].items() if k_ != "mmal default" and v["median_total_s"]]
    lows += [v["stopped_total_lower_bound_s"] for k_, v in out["summary"].items()
             if k_ != "mmal default" and not v["median_total_s"] and "stopped_total_lower_bound_s" in v]
    if lows:
        out["ratio_lower_bound"] = round(min(lows) / ours, 3)
        out["ratio_lower_bound_note"] = ("min over all FAISS configs of (measured median total, or for a stopped one "
                                         "its lower bound) / the default's median total; > 1 means the default is faster")


def run_size(n: int, args) -> dict:
    """Fair protocol: every system searches all seeds, runs alternate, loads recorded.

    1. exact truth with FAISS ``IndexFlatIP`` for ``--eval-seeds`` + ``--tune-seeds`` seeds (its
       time, scaled to all seeds, is the exact-search baseline; all seeds when
       ``--exact-all``);
    2. repeated ``--repeats`` times, in this order: mmal's default ``build_index(cand,
       metric="cosine", n_queries=S, k=k)`` (its cost-model plan, its own nprobe tuning, then
       search of all seeds: all counted), then each FAISS config (build; nprobe swept on the
       tune seeds to the lowest reaching the default's recall on them -- the sweep is not
       counted; search of all seeds). Recall@k is measured on the eval seeds (disjoint from
       the tune seeds).
    """
    import faiss

    from mmal.index import FaissIndex

    dim, k = args.dim, args.k
    faiss.omp_set_num_threads(args.threads)
    centers = centers_for(dim, args.clusters, args.seed)
    t0 = time.perf_counter()
    cand = make_candidates(Path(args.scratch) / f"cand_{n}_{dim}.npy", n, dim, centers, args.noise, args.seed)
    t_gen = time.perf_counter() - t0
    seeds = make_seeds(args.seeds, centers, args.noise, args.seed)  # [S, D]
    rng = np.random.default_rng(args.seed + 1)
    sub = rng.choice(args.seeds, size=args.eval_seeds + args.tune_seeds, replace=False)
    ev, tu = np.sort(sub[:args.eval_seeds]), np.sort(sub[args.eval_seeds:])
    out = {"n_candidates": n, "n_seeds": args.seeds, "dim": dim, "k": k, "threads": args.threads,
           "storage": "float32 memmap", "generate_s": round(t_gen, 2), "eval_seeds": int(len(ev)),
           "tune_seeds": int(len(tu)), "loadavg_at_start": loads(), "runs": []}

    # 1. exact search (FAISS flat, inner product on normalised rows) = truth + baseline
    qset = np.arange(args.seeds) if args.exact_all else np.r_[ev, tu]
    chunked = n > args.exact_in_ram_max
    if not chunked:
        flat = faiss.IndexFlatIP(dim)
        for a in range(0, n, 262_144):
            flat.add(normalize_rows(np.array(cand[a:min(n, a + 262_144)])))
            release_pages(cand)
    l0 = loads()
    t0 = time.perf_counter()
    if chunked:
        _, exact_rows = exact_chunked(cand, normalize_rows(seeds[np.sort(qset)]), k)
    else:
        _, exact_rows = flat.search(normalize_rows(seeds[np.sort(qset)]), k)
        del flat
    t_flat = time.perf_counter() - t0
    order = {int(q): i for i, q in enumerate(np.sort(qset))}
    truth_ev = exact_rows[[order[int(q)] for q in ev]]
    truth_tu = exact_rows[[order[int(q)] for q in tu]]
    out["exact_faiss_flat_ip"] = {
        "queries_timed": int(len(qset)), "search_s": round(t_flat, 2),
        "all_seeds_s": round(t_flat * args.seeds / len(qset), 1),
        "extrapolated": not args.exact_all, "loadavg_before": l0, "loadavg_after": loads(),
        "method": ("FAISS IndexFlatIP per 1M-row chunk of the memmap, top-k merged (the float32 copy of all rows "
                   "would not fit next to the IVF indexes; the time includes reading and normalising the chunks)"
                   if chunked else "one FAISS IndexFlatIP holding all rows (add time not counted)"),
        "note": "timed on all seeds" if args.exact_all else
                f"timed on {len(qset)} seeds, scaled linearly to {args.seeds} (marked extrapolated)"}
    print(json.dumps(out["exact_faiss_flat_ip"]), flush=True)

    faiss_cfgs = [c for c in args.faiss.split(";") if c]
    steps = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256]
    target = None
    ours_total = 0.0
    for rep in range(args.repeats):
        # mmal default: planned for this workload, tuned, searched -- all counted
        l0 = loads()
        t0 = time.perf_counter()
        index = build_index(cand, metric="cosine", n_queries=args.seeds, k=k, threads=args.threads)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, rows = index.search(seeds, k)
        t_search = time.perf_counter() - t0
        desc = index.describe()
        rec = {"system": "mmal default", "backend": index.backend, "repeat": rep,
               "nprobe": getattr(index, "nprobe", None), "build_s_incl_plan_and_tuning": round(t_build, 2),
               "search_s": round(t_search, 2), "total_s": round(t_build + t_search, 2),
               "recall_at_k_eval": round(recall_at(rows[ev], truth_ev), 4),
               "recall_at_k_tune": round(recall_at(rows[tu], truth_tu), 4),
               "describe": desc, "peak_rss_gb_so_far": round(peak_rss_gb(), 3),
               "loadavg_before": l0, "loadavg_after": loads()}
        out["runs"].append(rec)
        print(json.dumps({k_: v for k_, v in rec.items() if k_ != "describe"}),
              json.dumps(desc.get("plan", {}).get("reason")), flush=True)
        if target is None:
            target = rec["recall_at_k_tune"]  # FAISS configs are swept to reach this on the tune seeds
        ours_total = max(ours_total, rec["total_s"])  # the give-up limits use the slowest default run so far
        del index, rows
        for cfg in faiss_cfgs:
            factory, _, kf = cfg.partition("@")
            l0 = loads()
            t0 = time.perf_counter()
            limit = args.give_up * ours_total

            def over_budget(done, total, desc, t0=t0, limit=limit):  # called after every added block
                if time.perf_counter() - t0 > limit:
                    raise _BuildOverBudget(f"build still adding ({done}/{total} blocks) after "
                                           f"{time.perf_counter() - t0:.1f} s > the default's total {limit:.1f} s")

            try:
                index = FaissIndex(cand, factory, metric="cosine", train_iters=10, threads=args.threads,
                                   tune_queries=0, progress=over_budget, **({"k_factor": int(kf)} if kf else {}))
            except _BuildOverBudget as e:
                rec = {"system": f"faiss {cfg}", "backend": factory, "k_factor": int(kf) if kf else None,
                       "repeat": rep, "nprobe": None, "build_s": f"> {round(time.perf_counter() - t0, 2)}",
                       "reached_target": False, "stop_reason": f"{e}: cannot be faster than the default",
                       "loadavg_before": l0, "loadavg_after": loads()}
                out["runs"].append(rec)
                print(json.dumps(rec), flush=True)
                continue
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            npb, hist, reached, why = tune_to_recall(index, seeds[tu], truth_tu, target, k,
                                                     [s for s in steps if s <= index.nlist], args.seeds,
                                                     max(1.0, args.give_up * ours_total - t_build))
            t_tune = time.perf_counter() - t0
            rec = {"system": f"faiss {cfg}", "backend": factory, "k_factor": int(kf) if kf else None,
                   "repeat": rep, "nprobe": npb, "nprobe_sweep_(nprobe,recall_tune,search_all_s_scaled)": hist,
                   "build_s": round(t_build, 2), "sweep_s_not_in_total": round(t_tune, 2),
                   "reached_target": reached, "stop_reason": why,
                   "loadavg_before": l0}
            if reached:
                index.nprobe = npb
                t0 = time.perf_counter()
                _, rows = index.search(seeds, k)
                t_search = time.perf_counter() - t0
                rec.update({"search_s": round(t_search, 2), "total_s": round(t_build + t_search, 2),
                            "recall_at_k_eval": round(recall_at(rows[ev], truth_ev), 4),
                            "recall_at_k_tune": round(recall_at(rows[tu], truth_tu), 4)})
                del rows
            rec.update({"peak_rss_gb_so_far": round(peak_rss_gb(), 3), "loadavg_after": loads()})
            out["runs"].append(rec)
            print(json.dumps({k_: v for k_, v in rec.items() if not k_.startswith("nprobe_sweep")}), flush=True)
            del index
    out["target_recall_from_mmal_tune_seeds"] = target
    summarize(out, args.repeats)
    out["speedup_default_vs_exact"] = round(out["exact_faiss_flat_ip"]["all_seeds_s"] / ours, 2)
    out["loadavg_at_end"] = loads()
    out["protocol_note"] = (
        "ratio > 1: the default is faster. Default: build_index(cand, metric='cosine', n_queries=S, k=k), its "
        "cost-model plan and nprobe tuning counted in its total. FAISS baselines: mmal.index.FaissIndex (FAISS "
        "IndexIVFFlat / IndexIVFScalarQuantizer QT_8bit + exact re-rank of k*k_factor from the memmap; spherical "
        "k-means, 10 iterations on 40*nlist rows -- cheaper than FAISS's own 25 iterations on up to 256*nlist), "
        "build + search counted, the nprobe sweep on the tune seeds NOT counted. A baseline was stopped "
        "(reached_target false, stop_reason says which) when its build alone, or its build plus its search of all "
        "seeds at an nprobe still below the default's recall (scaled from the tune seeds), exceeded --give-up "
        "times the slowest default run so far: it cannot be faster at equal recall.")
    out["contention_note"] = ("shared 2-core VM; other engineers' jobs ran at the same time (see load averages); "
                              "runs alternate (default, FAISS configs, repeated) so contention hits all systems")
    print(json.dumps({k_: out[k_] for k_ in out if k_ not in ("runs",)}, indent=1), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000")
    ap.add_argument("--seeds", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--clusters", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=2, help="faiss.omp_set_num_threads for every system")
    ap.add_argument("--eval-seeds", type=int, default=5000, help="seeds with exact truth for recall@k")
    ap.add_argument("--tune-seeds", type=int, default=1000, help="seeds with exact truth to tune FAISS nprobe")
    ap.add_argument("--exact-all", action="store_true", help="time exact search on all seeds")
    ap.add_argument("--exact-in-ram-max", type=int, default=2_000_000,
                    help="above this many candidates, exact search runs chunk by chunk over the memmap")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--give-up", type=float, default=2.0,
                    help="stop a baseline once its build, or build + search scaled from the tune seeds, exceeds "
                         "this x the default's total (it cannot be faster)")
    ap.add_argument("--faiss", default=";".join([f"IVF{L},Flat" for L in (256, 512, 1024, 4096)]
                                               + [f"IVF{L},SQ8@4" for L in (256, 512, 1024, 4096)]),
                    help="';'-separated FAISS factories, '@k' = re-ranking shortlist factor")
    ap.add_argument("--resummarize", action="store_true",
                    help="recompute the summaries of the sizes stored in --out (no runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", default=str(ROOT / "bench" / "scratch"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "knn.json"))
    args = ap.parse_args(argv)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.setdefault("runs", {})
    for key in list(results["runs"]):  # runs of older protocols
        if "summary" not in results["runs"][key]:
            results.setdefault("legacy_sampled_protocol_withdrawn", {})[key] = results["runs"].pop(key)
        elif "mmal default" not in results["runs"][key]["summary"]:  # before the cost-model default
            results.setdefault("earlier_fixed_default_runs", {})[key] = results["runs"].pop(key)
    if args.resummarize:
        for key, res in results["runs"].items():
            summarize(res, max(r["repeat"] for r in res["runs"]) + 1)
        out_path.write_text(json.dumps(results, indent=1))
        return results
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "note": "shared 2-core VM; other jobs ran concurrently, timings are noisy"}
    results["command"] = "python bench/knn.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for n in (int(s) for s in args.sizes.split(",")):
        results["runs"][str(n)] = run_size(n, args)
        results["runs"][str(n)]["command"] = results["command"]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
