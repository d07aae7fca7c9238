"""Does starting the learner's encoders from the MMSSL heads help?

For each workspace: MMSSL (with prototypes, seed 0, trained on the non-test items, as in
``repro_cold_start.py``) is stored in the ``mmal pretrain`` layout under ``--pretrain-dir``;
then the default learner and the same learner with ``init_encoders=<that folder>``
(frozen heads, and fine-tuned heads) are fitted on identical label sets and scored on the
test split:

* the cold-start budgets, 1, 2 and 5 labels per class, with the ``random`` picks stored by
  ``repro_cold_start.py --stage picks`` (``--picks``; else drawn here);
* 50 and 100 random labels;

5 seeds, learner seed = label-set seed; paired t-test of each variant against the default.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/repro_mmssl_init.py \
        --ws tuxpaint=/work/scratch/ws_tux --picks runs/tux.picks.json \
        --pretrain-dir /tmp/pre --out runs/mmssl_init_tux
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_cold_start import ids_digest, load  # noqa: E402

#: variant name -> extra learner parameters (besides init_encoders' folder)
VARIANTS = {"default": None, "mmssl-frozen": {"freeze_encoders": True}, "mmssl-finetuned": {"freeze_encoders": False}}


def store_pretrain(feats: dict, rows: np.ndarray, folder: Path, seed: int = 0) -> dict:
    """MMSSL w/ prototypes on ``feats[rows]``, written as ``mmal pretrain`` writes it (meta.json, heads.pt)."""
    import torch

    from mmal.loop.pretrain import PRETRAIN_FORMAT, pretrain_features
    from mmal.models.mmssl import MMSSLConfig

    pre = pretrain_features(feats, rows, MMSSLConfig(prototypes=True, seed=seed))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(pre["heads"], folder / "heads.pt")
    meta = {"format": PRETRAIN_FORMAT, "modalities": sorted(feats), "n_train": int(len(rows)),
            "input_dims": {m: int(x.shape[1]) for m, x in feats.items()}, "config": pre["config"],
            "metrics": pre["metrics"], "seconds": pre["seconds"]}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=float))
    return meta


def run_dataset(name, ws_dir, picks_file, pre_dir: Path, seeds, extra_budgets, log) -> dict:
    from scipy.stats import ttest_rel

    from mmal.learners import make_learner

    ids, labels, split, pooled, C = load(ws_dir)
    cand, test = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    folder = pre_dir / name
    meta = store_pretrain(pooled, cand, folder)
    log(f"[{name}] MMSSL stored in {folder} ({meta['seconds']:.0f} s)")
    _, _, _, feats, _ = load(ws_dir, sequences=True)
    sets = {}
    if picks_file:
        d = json.loads(Path(picks_file).read_text())["datasets"][name]
        if d["ids_digest"] != ids_digest(ids):
            raise SystemExit(f"{picks_file}: picks were made on other items than {ws_dir}")
        for b, bd in d["budgets"].items():
            sets[f"{b} ({bd['per_class']}/class, random picks)"] = [np.asarray(p) for p in bd["table"]["random"]["picks"]]
    for b in extra_budgets:
        sets[f"{b} (random)"] = [np.random.default_rng(s).choice(cand, b, replace=False) for s in seeds]
    res = {"n_candidates": int(len(cand)), "n_test": int(len(test)), "n_classes": int(C), "pretrain": meta,
           "budgets": {}}
    for key, picks_per_seed in sets.items():
        row = {v: {"acc": [], "fit_seconds": []} for v in VARIANTS}
        for s, picks in zip(seeds, picks_per_seed):
            for v, extra in VARIANTS.items():
                params = {} if extra is None else {"init_encoders": str(folder), **extra}
                L = make_learner(n_classes=C, seed=s, **params)
                t0 = time.perf_counter()
                L.fit(feats, labels, picks)
                row[v]["fit_seconds"].append(time.perf_counter() - t0)
                row[v]["acc"].append(float(np.mean(L.predict_proba(feats, test).argmax(1) == labels[test])))
        for v, r in row.items():
            r["mean"], r["std"] = float(np.mean(r["acc"])), float(np.std(r["acc"]))
            if v != "default":
                diff = np.asarray(r["acc"]) - np.asarray(row["default"]["acc"])
                r["diff"] = float(diff.mean())
                r["p_vs_default"] = None if np.allclose(diff, diff[0]) else float(ttest_rel(r["acc"], row["default"]["acc"]).pvalue)
        res["budgets"][key] = row
        log(f"[{name}] {key}: " + ", ".join(f"{v} {r['mean']:.3f}" for v, r in row.items()))
    return res


def markdown(results: dict) -> str:
    out = []
    for name, r in results["datasets"].items():
        out.append(f"### {name}: test accuracy (%), mean ± std over {len(results['seeds'])} seeds; "
                   "difference to the default learner in points (paired t-test p)\n")
        out.append("| labels | default | " + " | ".join(v for v in VARIANTS if v != "default") + " |")
        out.append("|---" * len(VARIANTS) + "|---|")
        for key, row in r["budgets"].items():
            cells = [f"{100 * row['default']['mean']:.1f} ± {100 * row['default']['std']:.1f}"]
            for v in VARIANTS:
                if v == "default":
                    continue
                d = row[v]
                p = d["p_vs_default"]
                cells.append(f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f} ({100 * d['diff']:+.1f}, "
                             f"{'p = ' + format(p, '.3f') if p is not None else 'const.'})")
            out.append(f"| {key} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ws", action="append", default=[], help="NAME=WORKSPACE_DIR (encoded; only read)")
    ap.add_argument("--picks", action="append", default=[], help="NAME=PICKS_JSON from repro_cold_start.py --stage picks")
    ap.add_argument("--pretrain-dir", required=True, help="where the MMSSL heads are stored (one folder per dataset)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", default="50,100", help="random label-set sizes besides the cold-start budgets")
    ap.add_argument("--merge", nargs="+", help="combine earlier JSON results into --out")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.merge:
        parts = [json.loads(Path(p).read_text()) for p in a.merge]
        results = {k: v for k, v in parts[0].items() if k != "datasets"}
        results["datasets"] = {k: v for part in parts for k, v in part["datasets"].items()}
    else:
        picks = dict(p.split("=", 1) for p in a.picks)
        seeds = list(range(a.seeds))
        results = {"seeds": seeds, "variants": VARIANTS, "datasets": {}}
        t0 = time.time()
        for spec in a.ws:
            name, _, d = spec.partition("=")
            results["datasets"][name] = run_dataset(name, d, picks.get(name), Path(a.pretrain_dir), seeds,
                                                    [int(b) for b in a.budgets.split(",") if b], log)
        results["seconds"] = time.time() - t0
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    out.with_suffix(".table.md").write_text(markdown(results))
    log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.table.md')}")


if __name__ == "__main__":
    main()
