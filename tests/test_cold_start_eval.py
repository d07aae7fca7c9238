"""scripts/repro_cold_start.py: the default learner on tiny cold-start pick sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mmal.features.types import SequenceFeatures

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("repro_cold_start", ROOT / "scripts" / "repro_cold_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _features(n_classes=16, per_class=6, seed=0):
    """Well separated classes: text/image vectors near a class centre, audio frames offset by class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    n = len(y)
    ids = [f"i{i}" for i in range(n)]
    centres = rng.normal(size=(n_classes, 12)) * 3
    text = [(centres[y[i]] + 0.3 * rng.normal(size=12))[None] for i in range(n)]
    image = [(centres[y[i], ::-1] + 0.3 * rng.normal(size=12))[None] for i in range(n)]
    aud = [rng.normal(size=(int(rng.integers(2, 5)), 6)) for i in range(n)]
    feats = {"text": SequenceFeatures.from_list(ids, text, 12), "image": SequenceFeatures.from_list(ids, image, 12),
             "audio": SequenceFeatures.from_list(ids, aud, 6)}
    return feats, y


def test_one_label_per_class_and_one_class_only():
    mod = _script()
    # the trained late-fusion learner, shorter (the robustness is the point); with one label per
    # class the default `auto` is the plain C = 10 probe, which reaches about 0.85 on these blobs
    mod.LEARNER_NAME, mod.LEARNER_PARAMS = "late-fusion", {"train": {"epochs": 20}}
    feats, y = _features()
    C = 16
    first = np.array([np.flatnonzero(y == c)[0] for c in range(C)])  # 16 labels for 16 classes
    test = np.setdiff1d(np.arange(len(y)), first)
    r = mod.evaluate_picks(feats, y, first, test, seed=0, n_classes=C)
    assert r["classes_in_picks"] == C
    assert r["acc"] > 0.9  # separated classes: one example each is enough
    # picks from 3 classes only: the 13 unpicked classes are never predicted, so accuracy is at most
    # the test share of those 3 classes (computed here from the labels)
    picks = np.flatnonzero(np.isin(y, [0, 1, 2]))[:5]
    r = mod.evaluate_picks(feats, y, picks, test, seed=0, n_classes=C)
    assert r["classes_in_picks"] == len(np.unique(y[picks]))
    assert r["acc"] <= np.isin(y[test], np.unique(y[picks])).mean() + 1e-12
    # a single class: every test item gets it
    one = np.flatnonzero(y == 4)[:2]
    r = mod.evaluate_picks(feats, y, one, test, seed=0, n_classes=C)
    assert r["acc"] == np.mean(y[test] == 4)


def test_markdown_marks_identical_rows_and_significance():
    mod = _script()
    tab = {"random": {"mean": 0.5, "std": 0.1, "p_vs_random": None, "classes_hit": [3], "cross_cosine": [0.1],
                      "picks_at_init": [float("nan")]},
           "same [raw]": {"mean": 0.5, "std": 0.1, "p_vs_random": None, "diff_vs_random": 0.0, "classes_hit": [3],
                          "cross_cosine": [0.1], "picks_at_init": [1.0]},
           "better [raw]": {"mean": 0.7, "std": 0.1, "p_vs_random": 0.01, "diff_vs_random": 0.2, "classes_hit": [4],
                            "cross_cosine": [0.2], "picks_at_init": [float("nan")]}}
    gap = [{"gap_mean": 0.1, "S_cross_mean": 0.0, "S_uni": {"a": 0.01, "b": 0.02}, "gap": {"a|b": 0.1}}]
    res = {"learner": "x", "datasets": {"d": {"seeds": [0], "n_candidates": 10, "n_test": 5, "n_classes": 2,
                                              "modalities": ["a", "b"], "budgets": {"2": {"per_class": 1, "table": tab}},
                                              "gap": {"proto": gap, "noproto": gap}, "cross_cosine_candidates": 0.1,
                                              "mmssl_seconds": {"proto": [1.0]}}}}
    md = mod.markdown(res)
    assert "| same [raw] | 50.0 ± 10.0 (=) |" in md
    assert "| better [raw] | 70.0 ± 10.0 *↑(0.010) |" in md
