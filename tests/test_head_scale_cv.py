"""The late-fusion learner's cross-validated audio block scale.

Each check compares against a computation written here: scikit-learn's logistic regression
on the full-width rows (the primal problem) and a brute-force cross-validation loop.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mmal.features.types import SequenceFeatures
from mmal.learners import make_learner
from mmal.learners.late_fusion import choose_head_scale, stratified_folds
from mmal.learners.linear import fit_probe


def _blocks(n=48, seed=0, audio_signal=True):
    """Unit text/image blocks with a weak class signal, audio block strong or pure noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    cen = rng.normal(size=(3, 20))

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    text = unit(0.35 * cen[y] + rng.normal(size=(n, 20)))
    image = unit(rng.normal(size=(n, 30)))
    audio = unit((3.0 * cen[y, :12] if audio_signal else 0.0) + rng.normal(size=(n, 12)))
    return {"text": text, "image": image, "audio": audio}, y


def test_fit_probe_on_kernel_coordinates_equals_the_primal_logistic_regression():
    rng = np.random.default_rng(1)
    n, D = 30, 80  # n < D: the kernel path
    y = np.arange(n) % 4
    x = rng.normal(size=(n, D)) + np.eye(4)[y] @ rng.normal(size=(4, D))
    x_test = rng.normal(size=(25, D))
    coef, icpt = fit_probe(x, y, 4, C=10.0, seed=0, tol=1e-10)
    ref = LogisticRegression(C=10.0, max_iter=5000, tol=1e-10).fit(x, y)
    # solved to convergence, the same weights and the same decision function on new rows
    np.testing.assert_allclose(coef, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(x_test @ coef.T + icpt, ref.decision_function(x_test), atol=1e-5)

    def objective(w, b):  # scikit-learn's: C * sum of log-losses + ||w||^2 / 2 (intercept unpenalised)
        lg = x @ w.T + b
        lg = lg - lg.max(1, keepdims=True)
        return -10.0 * (lg[np.arange(n), y] - np.log(np.exp(lg).sum(1))).sum() + 0.5 * (w ** 2).sum()

    # at the default tolerance it stops as close to the optimum as the primal solver does
    opt = objective(ref.coef_, ref.intercept_)
    loose = LogisticRegression(C=10.0, max_iter=5000).fit(x, y)
    gap_primal = objective(loose.coef_, loose.intercept_) - opt
    gap_kernel = objective(*fit_probe(x, y, 4, C=10.0, seed=0)) - opt
    assert 0 <= gap_kernel <= max(gap_primal, 1e-3 * opt)


def test_stratified_folds_spread_every_class():
    y = np.array([0] * 7 + [1] * 5 + [2] * 2)
    f = stratified_folds(y, 3, seed=4)
    for c in range(3):
        counts = np.bincount(f[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1 and counts.sum() == (y == c).sum()


def _brute_force_cv(z, y, s, folds, C=10.0):
    """Held-out log-loss of the probe on concat(text, image, s * audio), primal problem."""
    x = np.concatenate([z["audio"] * s, z["image"], z["text"]], 1)
    total, k = 0.0, 0
    for f in range(folds.max() + 1):
        tr, va = folds != f, folds == f
        va = va & np.isin(y, np.unique(y[tr]))
        lr = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x[tr], y[tr])
        lp = lr.predict_log_proba(x[va])
        total -= lp[np.arange(va.sum()), np.searchsorted(lr.classes_, y[va])].sum()
        k += va.sum()
    return total / k


@pytest.mark.parametrize("signal", [True, False])
def test_choose_head_scale_equals_a_brute_force_cross_validation(signal):
    z, y = _blocks(audio_signal=signal)
    grid = [0.25, 0.5, 1.0]
    best, info = choose_head_scale(z, {"audio"}, y, grid, folds=3, C=10.0, seed=0)
    folds = stratified_folds(y, 3, seed=0)
    ref = {s: _brute_force_cv(z, y, s, folds) for s in grid}
    for s in grid:
        assert info["log_loss"][s] == pytest.approx(ref[s], rel=1e-3)
    assert best == min(ref, key=ref.get)
    # audio that names the class gets the largest weight, audio that is noise the smallest
    assert best == (1.0 if signal else 0.25)


def test_choose_head_scale_gives_up_with_one_label_per_class():
    z, y = _blocks(n=12)
    y = np.arange(12)  # every class once: no held-out item has its class in the training part
    best, info = choose_head_scale(z, {"audio"}, y, [0.25, 1.0], folds=3)
    assert best is None and info["scored"] == 0


def _features(n=90, seed=0):
    """Audio frames carry the class; text and image are noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    ids = [f"i{i}" for i in range(n)]
    cen = rng.normal(size=(3, 6))
    text = [rng.normal(size=(1, 8)) for _ in range(n)]
    image = [rng.normal(size=(1, 8)) for _ in range(n)]
    audio = [3 * cen[y[i]] + rng.normal(size=(int(rng.integers(2, 7)), 6)) for i in range(n)]
    return {"text": SequenceFeatures.from_list(ids, text, 8), "image": SequenceFeatures.from_list(ids, image, 8),
            "audio": SequenceFeatures.from_list(ids, audio, 6)}, y


def test_learner_uses_the_chosen_scale_and_an_explicit_one_turns_it_off():
    feats, y = _features()
    tr = np.arange(60)
    L = make_learner("late-fusion", seed=0, train={"epochs": 3})
    h = L.fit(feats, y, tr)
    assert h["head_scale"]["source"] == "cross-validation"
    assert L.net.config.head_scale == 1.0 == h["head_scale"]["value"]
    # the block the fused layer reads has that norm
    norms = np.linalg.norm(L.score(feats)["modality"]["audio"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    L2 = make_learner("late-fusion", seed=0, model={"head_scale": 0.5}, train={"epochs": 3})
    h2 = L2.fit(feats, y, tr)
    assert h2["head_scale"]["source"] == "set" and L2.net.config.head_scale == 0.5

    L3 = make_learner("late-fusion", seed=0, head_scale_grid=[], train={"epochs": 3})
    assert L3.fit(feats, y, tr)["head_scale"]["source"] == "default" and L3.net.config.head_scale == 0.25


def test_chosen_scale_survives_a_checkpoint(tmp_path):
    from mmal.learners import make_learner as mk

    feats, y = _features()
    L = mk("late-fusion", seed=0, train={"epochs": 2})
    L.fit(feats, y, np.arange(60))
    L2 = mk("late-fusion")
    L2.load_state(L.state())
    assert L2.net.config.head_scale == L.net.config.head_scale
    np.testing.assert_array_equal(L2.score(feats)["probs"], L.score(feats)["probs"])
