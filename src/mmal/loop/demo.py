"""The demo: simulated active learning on Tux Paint with the default learner.

``mmal demo`` only calls :func:`run_demo`: Tux Paint (image + text + audio) is built once,
then five strategies are simulated with the default ``auto`` learner (chosen per fit by
cross-validation among linear probes, graph-smoothed probes and ``late-fusion``), 3 seeds (the committed reproduction, docs/results/al_tuxpaint.md, runs the
same with 5 seeds), 50 + 50 x 3 labels; the report compares each with random.
"""

from __future__ import annotations

from pathlib import Path

DEMO_STRATEGIES = ["random", "entropy", "entropy:0.5,margin:0.5", "lsb-knn", "entropy:0.8,lsb-lt:0.2"]


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
                   out=out / "simulation", progress=progress)
    res["report"] = str((out / "simulation" / "report.html").resolve())
    return res
