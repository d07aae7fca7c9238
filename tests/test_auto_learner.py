"""The ``auto`` learner: the best candidate by cross-validation on the fit's own labels only."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score

from mmal.features.types import SequenceFeatures
from mmal.learners import make_learner


def _features(n=120, c=3, seed=0, pos_rate=None, dims=(6, 5)):
    rng = np.random.default_rng(seed)
    if pos_rate is None:
        y = np.arange(n) % c
    else:
        y = (rng.random(n) < pos_rate).astype(int)
        y[:6] = 1  # enough positives for 3 folds
    ids = np.array([f"i{i}" for i in range(n)])
    centres = {"text": rng.normal(size=(max(c, 2), dims[0])), "image": rng.normal(size=(max(c, 2), dims[1]))}
    feats = {m: SequenceFeatures.from_list(ids, [(centres[m][y[i]] + 1.3 * rng.normal(size=centres[m].shape[1]))[None]
                                                 for i in range(n)], centres[m].shape[1]) for m in centres}
    return feats, y


def _unit_concat(feats, rows):
    out = []
    for m in sorted(feats):
        x = np.asarray(feats[m].pooled[rows], np.float64)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return np.concatenate(out, 1)


def _folds(y, k, seed):
    """The documented fold rule, written out: per class a seeded shuffle, dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    offset = 0
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rows = rows[rng.permutation(len(rows))]
        fold[rows] = (np.arange(len(rows)) + offset) % k
        offset += len(rows)
    return fold


@pytest.mark.parametrize("pos_rate,dims", [(None, (6, 5)), (0.15, (6, 5)), (None, (70, 60)), (0.15, (70, 60))])
def test_choice_is_the_best_held_out_probe_computed_here_with_sklearn(pos_rate, dims):
    # (70, 60): more dimensions than labeled rows, where auto solves its folds on kernel coordinates
    # with warm-started C paths; here each fold is a cold full-width scikit-learn fit
    feats, y = _features(pos_rate=pos_rate, dims=dims)
    train = np.arange(0, 90)
    C_grid = (0.1, 1.0, 10.0)
    L = make_learner("auto", seed=4, candidates=("linear",), C_grid=C_grid, smooth_grid=())
    hist = L.fit(feats, y, train)
    x, yt = _unit_concat(feats, train), y[train]
    fold = _folds(yt, 3, 4)
    n_classes = int(y.max()) + 1
    want = {}
    for w in (None, "balanced"):
        for C in C_grid:
            oof = np.zeros((len(yt), n_classes))
            for f in range(3):
                lr = LogisticRegression(C=C, class_weight=w, max_iter=2000, random_state=4).fit(x[fold != f], yt[fold != f])
                oof[fold == f] = lr.predict_proba(x[fold == f])
            score = average_precision_score(yt == 1, oof[:, 1]) if n_classes == 2 else \
                f1_score(yt, oof.argmax(1), labels=np.unique(yt), average="macro", zero_division=0)
            want[f"linear C={C:g}" + ("" if w is None else f" {w}")] = score
    got = hist["auto"]["scores"]
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-4), k  # the probe reads float32 blocks
    # the baseline unless a candidate beat it in >= 90 % of the bootstrap resamples; then the best such
    cv = hist["auto"]
    sure = [k for k, p in cv["p_better_than_baseline"].items() if p >= 0.9]
    assert set(cv["p_better_than_baseline"]) == set(want) - {"linear C=10"}
    if sure:
        assert cv["chosen"] in sure and want[cv["chosen"]] == pytest.approx(max(want[k] for k in sure), abs=1e-4)
    else:
        assert cv["chosen"] == "linear C=10"
    assert cv["criterion"] == ("average_precision" if n_classes == 2 else "macro_f1")


@pytest.mark.parametrize("crit", ["average_precision", "macro_f1", "accuracy"])
def test_bootstrap_weights_equal_scoring_the_resampled_items_with_sklearn(crit):
    from sklearn.metrics import accuracy_score

    from mmal.learners.auto import weighted_scores

    rng = np.random.default_rng(1)
    n = 80
    y = (rng.random(n) < 0.3).astype(int) if crit == "average_precision" else rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(int(y.max()) + 1), n)  # continuous scores: no ties
    W = rng.multinomial(n, np.full(n, 1 / n), size=6)
    got = weighted_scores(crit, y, p, W)
    for b in range(len(W)):
        idx = np.repeat(np.arange(n), W[b])
        if crit == "average_precision":
            want = average_precision_score(y[idx] == 1, p[idx, 1])
        elif crit == "macro_f1":
            want = f1_score(y[idx], p[idx].argmax(1), labels=np.unique(y), average="macro", zero_division=0)
        else:
            want = accuracy_score(y[idx], p[idx].argmax(1))
        assert got[b] == pytest.approx(want, abs=1e-9)


def test_cross_validation_never_reads_test_labels():
    feats, y = _features(seed=1)
    train = np.arange(0, 75)
    a = make_learner("auto", seed=0, train={"epochs": 20})
    ha = a.fit(feats, y, train)
    poisoned = y.copy()
    poisoned[75:] = (y[75:] + 1) % 3  # every label outside the training rows is wrong
    b = make_learner("auto", seed=0, train={"epochs": 20})
    hb = b.fit(feats, poisoned, train)
    assert ha["auto"]["chosen"] == hb["auto"]["chosen"] and ha["auto"]["scores"] == hb["auto"]["scores"]
    np.testing.assert_array_equal(a.predict_proba(feats), b.predict_proba(feats))


def test_same_seed_same_choice_and_model():
    feats, y = _features(seed=2)
    train = np.arange(0, 84)
    runs = []
    for _ in range(2):
        L = make_learner("auto", seed=3, train={"epochs": 20}, candidates=("linear", "late-fusion"))
        h = L.fit(feats, y, train)
        runs.append((h["auto"]["chosen"], h["auto"]["scores"], L.predict_proba(feats)))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    # the menu holds the probes and late-fusion, and every candidate was scored
    assert set(runs[0][1]) >= {"linear C=10", "linear C=10 balanced", "late-fusion"}


def test_too_few_labels_per_class_is_the_c10_probe_exactly():
    feats, y = _features(seed=3)
    train = np.array([0, 1, 2, 3, 4, 5, 6])  # classes 0,1,2 with 3,2,2 labels: fewer than 3 folds' worth
    L = make_learner("auto", seed=0)
    h = L.fit(feats, y, train)
    assert h["auto"]["chosen"] == "linear C=10" and h["auto"]["scores"] == {}
    lr = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(_unit_concat(feats, train), y[train])
    np.testing.assert_allclose(L.predict_proba(feats), lr.predict_proba(_unit_concat(feats, np.arange(len(y)))),
                               atol=1e-5)


def test_checkpoint_round_trip_keeps_the_choice(tmp_path):
    from mmal.loop.core import load_learner
    from mmal.train.checkpoint import save_learner

    feats, y = _features(seed=5, pos_rate=0.2)
    L = make_learner("auto", seed=1, train={"epochs": 10})
    h = L.fit(feats, y, np.arange(100))
    save_learner(tmp_path / "m.pt", L)
    M, _ = load_learner(tmp_path / "m.pt")
    assert M.name == "auto" and M.chosen == h["auto"]["chosen"] and M.cv["scores"] == h["auto"]["scores"]
    np.testing.assert_array_equal(M.predict_proba(feats), L.predict_proba(feats))
    assert M.fused_blocks == L.fused_blocks


def test_bad_settings_are_config_errors():
    from mmal.errors import ConfigError

    for bad in ({"candidates": ("svm",)}, {"C_grid": (0.0,)}, {"criterion": "r2"}, {"cv_folds": 1},
                {"class_weights": ("heavy",)}):
        with pytest.raises(ConfigError, match="auto learner"):
            make_learner("auto", **bad)


def _smoothed_here(x, alpha, k):
    """Graph smoothing written out: cosine kNN (self excluded) by brute force, then the average."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    nb = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return (1 - alpha) * x + alpha * x[nb].mean(1)


@pytest.mark.parametrize("weight", [None, "balanced"])
def test_smoothed_probe_equals_sklearn_on_features_smoothed_here(weight):
    feats, y = _features(n=90, seed=5)
    train = np.arange(0, 40)
    L = make_learner("linear", seed=0, C=10.0, class_weight=weight, smooth=0.6, smooth_k=4)
    L.fit(feats, y, train)
    xs = _smoothed_here(_unit_concat(feats, np.arange(90)), 0.6, 4)  # every item's features, no label
    lr = LogisticRegression(C=10.0, class_weight=weight, max_iter=2000, random_state=0).fit(xs[train], y[train])
    np.testing.assert_allclose(L.predict_proba(feats, np.arange(40, 90)), lr.predict_proba(xs[40:]), atol=2e-4)
    # and the plain probe is not that: the smoothing changed the model
    plain = make_learner("linear", seed=0, C=10.0, class_weight=weight)
    plain.fit(feats, y, train)
    assert np.abs(plain.predict_proba(feats) - L.predict_proba(feats)).max() > 1e-2


def test_auto_offers_smoothed_probes_and_never_reads_test_labels_through_them():
    feats, y = _features(n=150, c=2, seed=6)
    train = np.arange(0, 60)
    poisoned = y.copy()
    poisoned[60:] = 1 - y[60:]
    runs = []
    for labels in (y, poisoned):
        L = make_learner("auto", seed=1, candidates=("linear",), C_grid=(10.0,), smooth_grid=(0.5,))
        h = L.fit(feats, labels, train)
        runs.append((h["auto"]["scores"], L.predict_proba(feats)))
    assert set(runs[0][0]) == {"linear C=10", "linear C=10 smooth=0.5", "linear C=10 balanced",
                               "linear C=10 balanced smooth=0.5"}
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
