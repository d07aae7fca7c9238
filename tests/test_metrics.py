"""Metrics per task, each checked against scikit-learn / scipy (or a brute force written here) on random inputs."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, precision_recall_curve, precision_recall_fscore_support, roc_auc_score)

from mmal.errors import ConfigError
from mmal.metrics import (badness, binary_metrics, expected_label_error, modality_cosines, modality_gap,
                          multiclass_metrics, ndcg_at_k, relevance_metrics, true_class_error)


def _random(n, c, seed, strength=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + strength * np.eye(c)[y] * rng.random((n, 1))
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return y, p


def _brute(yb, s, P):
    """R@P and (tp, fp) of the chosen point, by enumerating every threshold by hand."""
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


# ---- binary ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,pos_rate", [(0, 0.5), (1, 0.05), (2, 0.2)])
def test_binary_matches_sklearn_on_the_positive_class(seed, pos_rate):
    rng = np.random.default_rng(seed)
    n = 400
    y = (rng.random(n) < pos_rate).astype(int)
    y[:2] = [0, 1]
    s = np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0.001, 0.999)
    p = np.stack([1 - s, s], 1)
    m = binary_metrics(y, p)
    assert m["n_positive"] == int(y.sum())
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s))
    assert m["f1"] == pytest.approx(f1_score(y, s >= 0.5))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, s >= 0.5))
    prec, rec, _ = precision_recall_curve(y, s)
    for P in (40, 50, 60, 70, 80, 90):
        ok = prec >= P / 100 - 1e-12
        want = rec[ok].max() if ok.any() and rec[ok].max() > 0 else float("nan")
        got = m[f"r_at_p{P}"]
        if math.isnan(want):  # sklearn's curve ends at recall 0: "never reached" is NaN here
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want)


@pytest.mark.parametrize("seed", range(6))
def test_binary_r_at_p_and_beta_variance_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 25))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = np.round(rng.random(n), 1)  # ties in the score
    m = binary_metrics(y, np.stack([1 - s, s], 1))
    vars_ = []
    for P in (40, 50, 60, 70, 80, 90):
        r, pt = _brute(y.astype(bool), s, P)
        assert m[f"r_at_p{P}"] == pytest.approx(r, nan_ok=True)
        assert m["r_at_p_reachable"][str(P)] == (pt is not None)
        if pt is not None:
            vars_.append(_bvar(*pt))
    assert m["max_beta_variance"] == pytest.approx(max(vars_))
    yb = y.astype(bool)
    allv = [_bvar(int(((s >= t) & yb).sum()), int(((s >= t) & ~yb).sum())) for t in set(s.tolist())]
    assert binary_metrics(y, s, beta_points="all")["max_beta_variance"] == pytest.approx(max(allv))


def test_binary_beta_variance_formula_value():
    # scores 0.9, 0.8, 0.7 are positives, 0.6 is the negative: every level picks t = 0.7 (tp 3, fp 0)
    y = np.array([1, 1, 1, 0])
    p = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    m = binary_metrics(y, p)
    assert m["r_at_p90"] == 1.0
    assert m["max_beta_variance"] == pytest.approx(4 * 1 / (25 * 6))


def test_binary_unreachable_precision_is_nan_with_flag_not_zero():
    # negatives on top: thresholds 0.9, 0.8, 0.7, 0.6 give precision 0, 0, 1/3, 1/2
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    m = binary_metrics(y, p)
    for P, reach, rec in ((40, True, 1.0), (50, True, 1.0), (60, False, None), (90, False, None)):
        assert m["r_at_p_reachable"][str(P)] is reach
        if reach:
            assert m[f"r_at_p{P}"] == pytest.approx(rec)
        else:
            assert math.isnan(m[f"r_at_p{P}"])


def test_binary_degenerate_and_bad_input():
    m = binary_metrics(np.zeros(5, int), np.tile([0.7, 0.3], (5, 1)))
    assert math.isnan(m["auc"]) and math.isnan(m["average_precision"]) and math.isnan(m["r_at_p80"])
    with pytest.raises(ConfigError, match=r"probs \[N, 2\]"):
        binary_metrics([0, 1, 2], np.ones((3, 3)) / 3)
    with pytest.raises(ConfigError, match="0 or 1"):
        binary_metrics([0, 2], np.ones((2, 2)) / 2)


# ---- multiclass --------------------------------------------------------------------------------------
@pytest.mark.parametrize("c,seed", [(3, 0), (5, 1), (8, 2)])
def test_multiclass_matches_sklearn(c, seed):
    y, p = _random(500, c, seed)
    m = multiclass_metrics(y, p, names=[f"k{i}" for i in range(c)])
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=np.arange(c)))
    assert m["auc_ovr"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["confusion"] == confusion_matrix(y, pred, labels=np.arange(c)).tolist()
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=np.arange(c), zero_division=0)
    for i in range(c):
        row = m["per_class"][f"k{i}"]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((prec[i], rec[i], f1[i], sup[i]))
    assert "spearman" not in m and "pearson" not in m and "r_at_p80" not in m  # no ordered or "class 0" view


def test_multiclass_ovr_auc_skips_absent_classes():
    y, p = _random(200, 4, 3)
    keep = y != 2  # class 2 never true: its AUC is undefined and left out of the mean
    y, p = y[keep], p[keep]
    want = np.mean([roc_auc_score(y == c, p[:, c]) for c in (0, 1, 3)])
    assert multiclass_metrics(y, p)["auc_ovr"] == pytest.approx(want)


def test_multiclass_bad_input():
    with pytest.raises(ConfigError, match="probs must be"):
        multiclass_metrics([0, 1], np.ones((3, 2)) / 2)
    with pytest.raises(ConfigError, match="labels in"):
        multiclass_metrics([0, 2], np.ones((2, 2)) / 2)


# ---- relevance ---------------------------------------------------------------------------------------
def test_relevance_matches_scipy_sklearn_and_a_hand_ndcg():
    rng = np.random.default_rng(4)
    n = 120
    y = rng.integers(0, 4, n)
    s = y + rng.normal(0, 1.2, n)
    q = np.repeat(np.arange(12), 10)
    m = relevance_metrics(y, s, query_ids=q)
    assert m["auc"] == pytest.approx(roc_auc_score(y >= 2, s))
    assert m["spearman"] == pytest.approx(stats.spearmanr(y, s).statistic)
    assert m["pearson"] == pytest.approx(stats.pearsonr(y, s).statistic)

    def ndcg_by_hand(lv, sc, k=10):
        order = sorted(range(len(lv)), key=lambda i: -sc[i])[:k]
        dcg = sum((2 ** lv[i] - 1) / math.log2(r + 2) for r, i in enumerate(order))
        ideal = sorted(lv, reverse=True)[:k]
        idcg = sum((2 ** v - 1) / math.log2(r + 2) for r, v in enumerate(ideal))
        return dcg / idcg

    per_q = [ndcg_by_hand(y[q == k].tolist(), s[q == k].tolist()) for k in range(12) if y[q == k].max() > 0]
    assert m["ndcg@10"] == pytest.approx(np.mean(per_q))
    assert ndcg_at_k([3, 0, 2], [0.1, 0.9, 0.5]) == pytest.approx(
        ((2**0 - 1) / 1 + (2**2 - 1) / math.log2(3) + (2**3 - 1) / 2) / ((2**3 - 1) + (2**2 - 1) / math.log2(3)))


def test_relevance_score_defaults_to_the_expected_level_of_the_distribution():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4), 50)
    y = rng.integers(0, 4, 50)
    m = relevance_metrics(y, probs=p)
    e = p @ np.arange(4)
    assert m["spearman"] == pytest.approx(stats.spearmanr(y, e).statistic)
    assert m["accuracy"] == pytest.approx((p.argmax(1) == y).mean())
    assert m["expected_level_error"] == pytest.approx(np.abs(e - y).mean())
    with pytest.raises(ConfigError, match="0..3"):
        relevance_metrics([0, 4], [0.1, 0.2])


# ---- bad-case scores ---------------------------------------------------------------------------------
def test_badness_is_eq11_for_ordered_labels_and_one_minus_p_y_for_classes():
    p = np.array([[0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.5], [0.9, 0, 0, 0, 0, 0, 0.1]])
    y = np.array([5, 6])
    # the example of METHODS D: a wrong 50/50 prediction of classes 4 and 6 for label 5
    assert expected_label_error(p, y)[0] == pytest.approx(0.0)
    assert true_class_error(p, y).tolist() == pytest.approx([1.0, 0.9])
    assert badness(p, y, ordered=True).tolist() == pytest.approx([0.0, abs(0.6 - 6)])
    assert badness(p, y, ordered=False).tolist() == pytest.approx([1.0, 0.9])
    b = np.array([[0.3, 0.7], [0.8, 0.2]])
    assert badness(b, [0, 0], True).tolist() == pytest.approx(badness(b, [0, 0], False).tolist())  # two classes: equal


# ---- modality gap --------------------------------------------------------------------------------------
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
