"""The demo: simulated active learning on Tux Paint with a small VLMAE fusion model.

``mmal demo`` only calls :func:`run_demo`; the strategy list and the small model live here
so that scripts (``scripts/repro_al.py``) reuse exactly what the demo runs.
"""

from __future__ import annotations

from pathlib import Path

DEMO_STRATEGIES = ["random", "entropy", "entropy:0.5,margin:0.5", "lsb-knn", "entropy:0.8,lsb-lt:0.2"]
#: A small ``fusion`` learner so the demo's 3 seeds x 5 strategies x rounds fit in minutes on 2 cores
#: (the demo as it was before the learners; the lead re-defines it).
DEMO_MODEL = {"fusion": "vlmae", "d_model": 64, "n_layers": 1, "n_heads": 2, "mlp_hidden": 128}
DEMO_TRAIN = {"epochs": 20, "patience": 3}


def run_demo(out, *, seeds=(0, 1, 2), rounds: int = 3, init: int = 50, budget: int = 50, progress: bool = True,
             log=print) -> dict:
    """Build the Tux Paint dataset under ``out/tuxpaint`` (once) and simulate AL into ``out/simulation``.

    Returns the :func:`mmal.loop.simulate.simulate` results plus ``"report"`` (path of the HTML report).
    """
    from mmal.data.datasets import build
    from mmal.loop.simulate import simulate

    out = Path(out)
    items = out / "tuxpaint" / "items.parquet"
    if not items.exists():
        log("demo: building the Tux Paint dataset")
        items = build("tuxpaint", out / "tuxpaint", seed=0, progress=progress)
    res = simulate(items, DEMO_STRATEGIES, init=init, budget=budget, rounds=rounds, seeds=list(seeds),
                   out=out / "simulation", learner="fusion", model=dict(DEMO_MODEL), train=dict(DEMO_TRAIN),
                   progress=progress)
    res["report"] = str((out / "simulation" / "report.html").resolve())
    return res
