"""The relevance baselines as learners: `cosine` equals the direct cosine; `auto-relevance`
never picks a learner below the cosine on held-out, query-grouped folds."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from test_relevance_al import _tiny_relevance_data


def _cos_direct(d, idx):
    out = []
    for i in idx:
        q = d.query_text[i].states.mean(0).numpy().astype(np.float64)
        q /= np.linalg.norm(q)
        t = d.text_pooled[d.video_index[i]].astype(np.float64)
        t /= np.linalg.norm(t)
        out.append(float(q @ t))
    return np.array(out)


def test_cosine_learner_scores_are_the_direct_cosine_and_levels_are_monotone():
    from mmal.learners import make_learner

    d = _tiny_relevance_data(seed=1, n_pairs=80)
    m = make_learner("cosine")
    m.fit(d, d.labels, np.arange(40))
    res = m.score(d)
    np.testing.assert_allclose(res["scores"], _cos_direct(d, range(len(d.labels))), atol=1e-6)
    p = res["probs"]
    assert p.shape == (80, 4) and np.allclose(p.sum(1), 1, atol=1e-9) and (p >= 0).all()
    ev = p @ np.arange(4)
    o = np.argsort(res["scores"])
    assert np.all(np.diff(ev[o]) >= -1e-12)  # a larger cosine never lowers E[y]
    # labels change only the calibration, never the ranking
    m2 = make_learner("cosine")
    m2.fit(d, (d.labels + 1) % 4, np.arange(40))
    np.testing.assert_array_equal(m2.score(d)["scores"], res["scores"])
    # checkpoint state round trip
    m3 = make_learner("cosine")
    m3.load_state(m.state())
    np.testing.assert_array_equal(m3.score(d)["probs"], p)


def _planted(seed, signal):
    """Pairs whose level follows a direction the cosine does not see (signal > 0) or only noise."""
    d = _tiny_relevance_data(seed=seed, n_videos=30, n_pairs=180)
    rng = np.random.default_rng(seed)
    q = np.stack([s.states.mean(0).numpy() for s in d.query_text])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t = d.text_pooled[d.video_index]
    z = (q * t)[:, :4].sum(1)
    lv = signal * z + rng.normal(size=len(z))
    d.labels = np.digitize(lv, np.quantile(lv, [0.25, 0.5, 0.75])).astype(np.int64)
    d.query_ids = np.array([f"q{i % 12}" for i in range(len(z))], dtype=object)
    return d


@pytest.mark.parametrize("signal", [0.0, 6.0])
def test_auto_relevance_takes_the_probe_only_when_it_beats_the_cosine_on_held_out_folds(signal):
    from mmal.learners import make_learner

    d = _planted(0, signal)
    rows = np.arange(150)
    m = make_learner("auto-relevance", seed=0, train={"epochs": 150})
    h = m.fit(d, d.labels, rows)
    sc = h["auto"]["scores"]
    # the cosine's held-out criteria need no training: the pooled out-of-fold scores are the cosine
    cos = _cos_direct(d, rows)
    assert sc["cosine"]["spearman"] == pytest.approx(spearmanr(cos, d.labels[rows]).statistic, abs=1e-9)
    assert sc["cosine"]["auc"] == pytest.approx(roc_auc_score(d.labels[rows] >= 2, cos), abs=1e-9)
    # the probe needs both: above the cosine on Spearman and on AUC, each in >= 90 % of the resamples
    wins = all(sc["probe"][c] > sc["cosine"][c] and h["auto"]["p_better_than_cosine"][c] >= 0.9
               for c in ("spearman", "auc"))
    assert h["auto"]["chosen"] == ("probe" if wins else "cosine")
    if h["auto"]["chosen"] == "cosine":
        np.testing.assert_allclose(m.score(d)["scores"], _cos_direct(d, range(len(d.labels))), atol=1e-6)
    if signal > 0:  # a planted direction the probe can learn and the cosine cannot
        assert h["auto"]["chosen"] == "probe"


def test_auto_relevance_never_reads_test_labels_and_falls_back_without_queries():
    from mmal.learners import make_learner

    d = _planted(1, 6.0)
    rows = np.arange(150)
    a = make_learner("auto-relevance", seed=2, train={"epochs": 50})
    ha = a.fit(d, d.labels, rows)
    poisoned = d.labels.copy()
    poisoned[150:] = 3 - poisoned[150:]
    b = make_learner("auto-relevance", seed=2, train={"epochs": 50})
    hb = b.fit(d, poisoned, rows)
    assert ha["auto"] == hb["auto"]
    np.testing.assert_array_equal(a.score(d)["scores"], b.score(d)["scores"])
    d.query_ids = np.array(["q0"] * len(d.labels), dtype=object)  # one query: nothing to hold out
    c = make_learner("auto-relevance", seed=2)
    assert c.fit(d, d.labels, rows)["auto"]["chosen"] == "cosine"


def test_query_bootstrap_share_on_cases_decided_by_hand():
    from mmal.learners.relevance import query_bootstrap_p_better

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 120).astype(float)
    groups = np.array([f"q{i % 10}" for i in range(120)])
    noise = rng.normal(size=120)
    # scores equal to the levels beat noise in every resample; a tie is never a win
    assert query_bootstrap_p_better(y + 1e-3 * noise, noise, y, groups, 50) == 1.0
    assert query_bootstrap_p_better(noise, noise, y, groups, 50) == 0.0
    # two continuous scorers: every resample has exactly one winner, so the shares add up to one
    other = y + 3.0 * rng.normal(size=120)
    a = query_bootstrap_p_better(other, y + 2.0 * noise, y, groups, 60, seed=1)
    b = query_bootstrap_p_better(y + 2.0 * noise, other, y, groups, 60, seed=1)
    assert a + b == pytest.approx(1.0)
    # by AUC of "relevant" (level >= 2): a scorer that orders relevant above the rest but scrambles the
    # levels inside each side has AUC 1: it wins every AUC resample against noise and noise never wins
    split_only = (y >= 2) + 0.1 * rng.random(120)
    assert query_bootstrap_p_better(split_only, noise, y, groups, 40, metric="auc") == 1.0
    assert query_bootstrap_p_better(noise, split_only, y, groups, 40, metric="auc") == 0.0
