"""A paired test over fewer than 5 seeds in a simulation's report carries a caveat."""

import numpy as np
import pytest


def _results(n_seeds):
    rng = np.random.default_rng(n_seeds)

    def run(offset):
        accs = [0.5, 0.6 + offset + 0.01 * rng.random(), 0.7 + offset + 0.01 * rng.random()]
        rounds = [{"round": r, "n_labeled": 10 * (r + 1), "batch_badness": 0.5,
                   "test": {"accuracy": a, "macro_f1": a, "balanced_accuracy": a, "auc_ovr": a}} for r, a in enumerate(accs)]
        return {"aubc": accs[-1], "aubc_by_metric": {"macro_f1": float(np.mean(accs))}, "rounds": rounds}

    strategies = {name: {"per_seed": {str(s): run(off) for s in range(n_seeds)}}
                  for name, off in (("random", 0.0), ("entropy", 0.05))}
    for d in strategies.values():
        d["mean_aubc"] = float(np.mean([v["aubc"] for v in d["per_seed"].values()]))
        d["std_aubc"] = float(np.std([v["aubc"] for v in d["per_seed"].values()]))
    return {"strategies": strategies, "config": {"task": "multiclass", "metric": "macro_f1", "seeds": list(range(n_seeds)),
                                               "init": 10, "budget": 10, "rounds": 2}}


@pytest.mark.parametrize("n_seeds", [3, 4, 5])
def test_paired_test_caveat_below_five_seeds(n_seeds, tmp_path):
    from mmal.report.html import FEW_SEEDS_NOTE, markdown_win_matrix, paired_vs, write_report

    res = _results(n_seeds)
    few = n_seeds < 5
    pv = paired_vs(res)["entropy"]["macro_f1"]
    assert pv["n_seeds"] == n_seeds
    assert (pv.get("caveat") == FEW_SEEDS_NOTE) is few and ("caveat" in pv) is few
    assert (FEW_SEEDS_NOTE in markdown_win_matrix(res)) is few
    html = write_report(res, tmp_path / "report.html").read_text()
    section = html[html.index("AUBC against random, paired by seed"):]
    section = section[:section.index("</p>")]
    assert (FEW_SEEDS_NOTE in section) is few
    assert f"over {n_seeds} seeds" in section
