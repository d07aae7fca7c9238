import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, precision_recall_curve, roc_auc_score

from mmal.errors import ConfigError
from mmal.metrics import compute, modality_cosines, modality_gap, multiclass_loss


def _random(n, c, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y] * rng.random((n, 1))
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return y, p


def _brute(y, p, P):
    """R@P and (tp, fp) of the chosen point, by enumerating every threshold by hand."""
    yb = y != 0
    s = 1 - p[:, 0]
    best = None
    for t in sorted(set(s.tolist())):
        pred = s >= t
        tp = int((pred & yb).sum())
        fp = int((pred & ~yb).sum())
        if tp / (tp + fp) >= P / 100 - 1e-12:
            key = (tp, -fp)
            if best is None or key > best:
                best = key
    if best is None:
        return float("nan"), None
    return best[0] / yb.sum(), (best[0], -best[1])


def _bvar(tp, fp):
    a, b = tp + 1, fp + 1
    return a * b / ((a + b) ** 2 * (a + b + 1))


@pytest.mark.parametrize("c,seed", [(2, 0), (4, 1), (3, 2)])
def test_matches_sklearn_and_scipy(c, seed):
    y, p = _random(300, c, seed)
    m = compute(y, p)
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    yb, s = y != 0, 1 - p[:, 0]
    assert m["auc"] == pytest.approx(roc_auc_score(yb, s))
    assert m["f1"] == pytest.approx(f1_score(yb, s >= 0.5))
    e = p @ np.arange(c)
    assert m["multiclass_loss"] == pytest.approx(np.abs(e - y).mean())
    assert m["spearman"] == pytest.approx(stats.spearmanr(e, y).statistic)
    assert m["pearson"] == pytest.approx(stats.pearsonr(e, y).statistic)
    # R@P equals the sklearn precision-recall curve's best recall at precision >= P
    prec, rec, _ = precision_recall_curve(yb, s)
    for P in (40, 50, 60, 70, 80, 90):
        assert m["r_at_p"][str(P)] == pytest.approx(rec[prec >= P / 100].max())


@pytest.mark.parametrize("seed", range(6))
def test_r_at_p_and_beta_variance_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 25))
    y = rng.integers(0, 3, n)
    y[0], y[1] = 0, 1
    p = rng.dirichlet(np.ones(3), n)
    p[:, 0] = np.round(p[:, 0], 1)  # ties in the score
    p[:, 1:] *= ((1 - p[:, 0]) / p[:, 1:].sum(1))[:, None]
    m = compute(y, p)
    vars_ = []
    for P in (40, 50, 60, 70, 80, 90):
        r, pt = _brute(y, p, P)
        assert m["r_at_p"][str(P)] == pytest.approx(r, nan_ok=True)
        assert m["r_at_p_reachable"][str(P)] == (pt is not None)
        if pt is not None:
            vars_.append(_bvar(*pt))
    assert m["max_beta_variance"] == pytest.approx(max(vars_))
    # "all" operating points: every distinct threshold, by hand
    s, yb = 1 - p[:, 0], y != 0
    allv = [_bvar(int(((s >= t) & yb).sum()), int(((s >= t) & ~yb).sum())) for t in set(s.tolist())]
    assert compute(y, p, beta_points="all")["max_beta_variance"] == pytest.approx(max(allv))


def test_beta_variance_formula_value():
    # scores 0.9, 0.8, 0.7 are positives, 0.6 is the negative
    y = np.array([1, 1, 1, 0])
    p = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    m = compute(y, p)
    # every level picks threshold 0.7 (tp=3, fp=0; recall 1 with fewer FP than threshold 0.6)
    # -> alpha = 4, beta = 1
    assert m["r_at_p"]["90"] == 1.0
    assert m["max_beta_variance"] == pytest.approx(4 * 1 / (25 * 6))


def test_degenerate_single_class_gives_nan_not_crash():
    p = np.tile([0.7, 0.2, 0.1], (5, 1))
    m = compute(np.zeros(5, int), p)
    assert math.isnan(m["auc"]) and math.isnan(m["f1"]) and math.isnan(m["max_beta_variance"])
    assert all(math.isnan(v) for v in m["r_at_p"].values())
    assert math.isnan(m["spearman"]) and math.isnan(m["pearson"])
    assert m["accuracy"] == 1.0
    m = compute(np.ones(4, int), np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]]))
    assert math.isnan(m["auc"]) and m["f1"] == pytest.approx(f1_score([1] * 4, [1, 0, 1, 1]))
    assert compute(np.zeros(0, int), np.zeros((0, 2)))["n"] == 0


def test_multiclass_loss_and_bad_input():
    assert multiclass_loss([0, 3], [[1, 0, 0, 0], [0, 0.5, 0, 0.5]]) == pytest.approx((0 + 1) / 2)
    with pytest.raises(ConfigError, match="probs must be"):
        compute([0, 1], np.ones((3, 2)) / 2)
    with pytest.raises(ConfigError, match="labels in"):
        compute([0, 2], np.ones((2, 2)) / 2)


def test_modality_gap():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8)) + 5 * np.eye(8)[0]
    b = rng.normal(size=(50, 8)) + 5 * np.eye(8)[1]
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    assert modality_gap(a, b) == pytest.approx(np.linalg.norm(an.mean(0) - bn.mean(0)))
    assert modality_gap(a, a) == pytest.approx(0.0)
    c = modality_cosines(a, b)
    cos = an @ an.T
    assert c["uni_cosine_1"] == pytest.approx((cos.sum() - np.trace(cos)) / (50 * 49))
    assert c["cross_cosine"] == pytest.approx((an * bn).sum(1).mean())


def test_unreachable_precision_is_nan_with_flag_not_zero():
    # scores: negatives on top, so precision >= 70 % is never reached; 40 % is (all items: 2/4 = 50 %)
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    m = compute(y, p)
    # by hand: thresholds 0.9, 0.8, 0.7, 0.6 give precision 0, 0, 1/3, 1/2
    for P, reach, rec in ((40, True, 1.0), (50, True, 1.0), (60, False, None), (90, False, None)):
        assert m["r_at_p_reachable"][str(P)] is reach
        if reach:
            assert m["r_at_p"][str(P)] == pytest.approx(rec)
        else:
            assert math.isnan(m["r_at_p"][str(P)])


def test_f1_views_binary_threshold_and_argmax():
    # C = 3: item 0 has p_0 largest (argmax 0) but 1 - p_0 = 0.6 >= 0.5 (binary view: non-zero)
    y = np.array([1, 0, 2, 0, 1])
    p = np.array([[0.40, 0.30, 0.30],
                  [0.70, 0.20, 0.10],
                  [0.20, 0.10, 0.70],
                  [0.45, 0.50, 0.05],
                  [0.50, 0.25, 0.25]])  # 1 - p_0 = 0.5: inclusive threshold -> predicted non-zero
    yb = y != 0
    binary = (1 - p[:, 0]) >= 0.5  # the 000 §4.3 view with our documented convention
    argmax = p.argmax(1) != 0
    assert binary.tolist() == [True, False, True, True, True]
    assert argmax.tolist() == [False, False, True, True, False]
    m = compute(y, p)
    assert m["f1_view"] == "binary" and m["f1"] == pytest.approx(f1_score(yb, binary))
    ma = compute(y, p, f1_view="argmax")
    assert ma["f1_view"] == "argmax" and ma["f1"] == pytest.approx(f1_score(yb, argmax))
    assert m["f1"] != pytest.approx(ma["f1"])
    assert compute(y, p, threshold=0.55)["f1"] == pytest.approx(f1_score(yb, (1 - p[:, 0]) >= 0.55))
    with pytest.raises(ConfigError, match="f1_view"):
        compute(y, p, f1_view="macro")
