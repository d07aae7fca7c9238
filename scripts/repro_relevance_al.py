"""Active learning for relevance: random vs level entropy vs level variance vs LSB.

    OMP_NUM_THREADS=1 nice -n 5 python scripts/repro_relevance_al.py \\
        --items /tmp/hcmrm_work/tuxpaint-relevance/items.parquet --seeds 0 1 2 3 4 \\
        --init 50 --budget 50 --rounds 5 --out docs/results/relevance_al

Runs :func:`mmal.loop.simulate.simulate` on relevance items (the ``probe`` relevance learner:
an MLP + hierarchical-softmax head over frozen MiniLM query / keyword-text vectors; see
:mod:`mmal.relevance.learner`) with the strategies

- ``random``;
- ``entropy`` — entropy of the four-level distribution;
- ``level-variance`` — Var[y] under it (an ordinal uncertainty);
- ``lsb-knn`` with seeds scored by ``|E[y] - y|`` (000 eq. 11, E[y] of 003 eq. 9): the
  ``--lsb-top-s`` labeled pairs with the largest score (default ``ceil(budget / 3)``), each
  judged by the distribution it had when it was selected (out of sample; the initial set is
  cross-fitted: ``mmal.select.lsb`` ``seeds_from="auto"``), ``k = 3`` neighbours per seed (000),
  ordered by the seed's score, filled by doubling k (``fill=knn``) when neighbours overlap;

and writes ``OUT.json`` (every round of every seed, the paired tests, the load average) and
``OUT.md`` (tables: AUBC of AUC and of Spearman, final metrics, ordinal batch loss, levels
revealed per batch, paired t-tests against random; a section starting "## Reading the
numbers" already in ``OUT.md`` is kept). ``--items`` defaults to building ``tuxpaint-relevance`` (seed 0,
300 stamps) under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMAL_PROGRESS", "0")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", default=None, help="relevance items file (default: build tuxpaint-relevance under --work)")
    ap.add_argument("--work", default="data/relevance_al")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--init", type=int, default=50)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lsb-top-s", type=int, default=None, help="LSB seeds: top-S labeled pairs by |E[y] - y| (default ceil(budget / 3))")
    ap.add_argument("--learner", default="probe")
    ap.add_argument("--out", default="docs/results/relevance_al", help="writes OUT.json and OUT.md")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mmal.data.datasets import build
    from mmal.loop.simulate import simulate
    from mmal.report.html import markdown_tables, paired_vs

    work = pathlib.Path(a.work)
    items = pathlib.Path(a.items) if a.items else work / "tuxpaint-relevance" / "items.parquet"
    if not items.exists():
        build("tuxpaint-relevance", items.parent, seed=0, n_stamps=300, progress=False)
    strategies = ["random", "entropy", "level-variance", "lsb-knn"]
    top_s = a.lsb_top_s or -(-a.budget // 3)
    params = {"lsb-knn": {"top_s": top_s, "fill": "knn", "order": "badness"}}
    load0 = os.getloadavg()
    t0 = time.time()
    res = simulate(items, strategies, init=a.init, budget=a.budget, rounds=a.rounds, seeds=a.seeds,
                   out=work / "sim", learner=a.learner, strategy_params=params, task="relevance", progress=False,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.time() - t0
    load1 = os.getloadavg()
    paired = paired_vs(res, "random")
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ("OMP_NUM_THREADS=1 nice -n 5 python scripts/repro_relevance_al.py " + " ".join(argv or sys.argv[1:])).strip()
    blob = {"command": cmd, "strategy_params": params, "wall_seconds": round(wall, 1), "loadavg_start": load0,
            "loadavg_end": load1, "paired_vs_random": paired, "results": res}
    out.with_suffix(".json").write_text(json.dumps(blob, indent=1, default=_json))
    cfg = res["config"]
    lines = [
        "# Active learning for relevance: random vs level entropy vs level variance vs LSB",
        "",
        f"Reproduce: `{cmd}` (raw numbers: [`{out.name}.json`]({out.name}.json)).",
        "",
        f"**Setup.** Items `{pathlib.Path(cfg['items']).parent.name}`: {cfg['n_items']} (query, video) pairs, "
        f"{cfg['n_candidates']} candidates (train + pool splits), {cfg['n_test']} test pairs of "
        f"{cfg['n_queries_test']} test queries never seen in the candidates. Learner `{cfg['learner']}` "
        f"({json.dumps(cfg['model'])}). Initial set {cfg['init']} random pairs (≥ 1 per level), then "
        f"{cfg['budget']} pairs × {cfg['rounds']} rounds per strategy; seeds {cfg['seeds']} (the seed draws the "
        "initial set and the learner's initialisation; both are shared by the strategies of a seed). "
        f"LSB: `lsb-knn` with {json.dumps(params['lsb-knn'])}. Wall time {wall / 60:.1f} min, load average "
        f"{load0[0]:.1f} → {load1[0]:.1f} on 2 cores.",
        "",
        markdown_tables(res),
        "Per round (mean over seeds): test AUC / test Spearman",
        "",
        _rounds_table(res),
    ]
    md = out.with_suffix(".md")
    keep = ""
    if md.exists() and NOTES in md.read_text():  # a hand-written reading of the numbers survives a re-run
        keep = md.read_text()[md.read_text().index(NOTES):]
    md.write_text("\n".join(lines) + ("\n" + keep if keep else ""))
    print(markdown_tables(res))
    return 0


NOTES = "## Reading the numbers"


def _rounds_table(res) -> str:
    import numpy as np

    specs = list(res["strategies"])
    first = next(iter(res["strategies"][specs[0]]["per_seed"].values()))["rounds"]
    lines = ["| labels | " + " | ".join(f"`{s}`" for s in specs) + " |", "|---|" + "---|" * len(specs)]
    for r in range(len(first)):
        cells = []
        for s in specs:
            runs = list(res["strategies"][s]["per_seed"].values())
            auc = np.mean([x["rounds"][r]["test"]["auc"] for x in runs])
            sp = np.mean([x["rounds"][r]["test"]["spearman"] for x in runs])
            cells.append(f"{auc:.3f} / {sp:.3f}")
        lines.append(f"| {first[r]['n_labeled']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    raise SystemExit(main())
