"""Relevance AL: scores from the 4-level distribution against hand values, selection on a relevance pool."""

import math

import numpy as np
import pytest

from mmal.metrics import expected_label, expected_label_error
from mmal.select.uncertainty import entropy, least_confidence, level_variance


def test_scores_on_hand_values():
    p = np.array([[0.5, 0.0, 0.0, 0.5], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 1.0], [0.25] * 4])
    np.testing.assert_allclose(expected_label(p), [1.5, 2.5, 3.0, 1.5])
    # Var: (0.5*0 + 0.5*9) - 1.5^2 = 2.25; (0.5*4 + 0.5*9) - 6.25 = 0.25; 0; (0+1+4+9)/4 - 2.25 = 1.25
    np.testing.assert_allclose(level_variance(p), [2.25, 0.25, 0.0, 1.25])
    np.testing.assert_allclose(entropy(p), [math.log(2), math.log(2), 0.0, math.log(4)], atol=1e-9)
    np.testing.assert_allclose(least_confidence(p), [0.5, 0.5, 0.0, 0.75])
    np.testing.assert_allclose(expected_label_error(p, [3, 2, 0, 1]), [1.5, 0.5, 3.0, 0.5])


# ---- selection on a relevance pool -------------------------------------------
def _tiny_relevance_data(seed=0, n_videos=10, n_pairs=60, dim=16):
    """Hand-made RelevanceData (no towers): random unit query / keyword vectors, levels 0..3."""
    import torch

    from mmal.features.hcmrm import RelevanceData, Segment

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)  # the data must not depend on the tests that ran before

    def seg(n):
        return Segment(torch.arange(n), torch.arange(n), torch.randn(n, dim, generator=gen))

    tp = rng.normal(size=(n_videos, dim)).astype(np.float32)
    tp /= np.linalg.norm(tp, axis=1, keepdims=True)
    qs = [seg(2) for _ in range(6)]
    qi = np.arange(n_pairs) % 6
    splits = np.array(["train"] * 30 + ["pool"] * 20 + ["test"] * (n_pairs - 50), dtype=object)
    return RelevanceData(
        video_ids=[f"v{i}" for i in range(n_videos)], keywords=[["w"]] * n_videos, video_text=[seg(3) for _ in range(n_videos)],
        visual=np.zeros((n_videos, 4, 8), np.float32), visual_pooled=rng.normal(size=(n_videos, 8)).astype(np.float32),
        text_pooled=tp, queries=[f"q{i}" for i in qi], query_text=[qs[i] for i in qi],
        video_index=rng.integers(0, n_videos, n_pairs), labels=rng.integers(0, 4, n_pairs), splits=splits,
        query_ids=np.array([f"q{i}" for i in qi], dtype=object), cls_vec=torch.zeros(dim), sep_vec=torch.zeros(dim))


def _probe_pool(head="hsoftmax"):
    from mmal.learners import RelevanceProbe
    from mmal.loop.core import score_pool

    d = _tiny_relevance_data()
    labeled = np.arange(20)
    m = RelevanceProbe(seed=0, head=head, train={"epochs": 50})
    m.fit(d, d.labels, labeled)
    known = np.full(len(d.labels), -1)
    known[labeled] = d.labels[labeled]
    ids = np.array([f"p{i:03d}" for i in range(len(d.labels))])
    return d, score_pool(m, d, ids, labels=known, split=d.splits.astype(str), ordered=True), labeled


def _hand_entropy(row):
    return -sum(p * math.log(p) for p in row if p > 0)


def _hand_variance(row):
    m = sum(k * p for k, p in enumerate(row))
    return sum((k - m) ** 2 * p for k, p in enumerate(row))


@pytest.mark.parametrize("head", ["hsoftmax", "ordinal"])
def test_relevance_select_top_b_by_level_entropy_and_variance(head):
    from mmal.select import select

    d, pool, labeled = _probe_pool(head)
    probs = np.asarray(pool.probs, float)
    assert probs.shape == (len(d.labels), 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)  # a four-level distribution
    selectable = [i for i in range(len(d.labels)) if i not in set(labeled) and d.splits[i] != "test"]
    for spec, fn in (("entropy", _hand_entropy), ("level-variance", _hand_variance)):
        hand = sorted(selectable, key=lambda i: (-fn(probs[i]), i))[:7]  # ties: lower row first
        sel = select(spec, pool, 7, seed=0)
        assert sel.ids.tolist() == [pool.ids[i] for i in hand], spec
        np.testing.assert_allclose(sel.score, [fn(probs[i]) for i in hand], atol=1e-6)


def test_level_variance_refuses_a_classification_pool():
    from mmal.errors import ConfigError
    from mmal.select import ScoredPool, select

    pool = ScoredPool(ids=np.array(["a", "b"]), probs=np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    with pytest.raises(ConfigError, match="ordered levels"):
        select("level-variance", pool, 1)


def test_lsb_seeds_on_a_relevance_pool_are_scored_by_abs_expected_level_minus_label():
    """000 eq. 11 with E[y] = p1 + 2 p2 + 3 p3 (003 eq. 9), computed here by hand per labeled pair."""
    from mmal.select import select, seed_bad_cases

    d, pool, labeled = _probe_pool()
    probs = np.asarray(pool.probs, float)
    hand = {int(i): abs(sum(k * probs[i, k] for k in range(4)) - int(pool.labels[i])) for i in labeled}
    rows, scores = seed_bad_cases(pool.probs, pool.labels, pool.labels >= 0, top_s=5, ordered=True)
    want = sorted(hand, key=lambda i: (-hand[i], i))[:5]
    assert rows.tolist() == want
    np.testing.assert_allclose(scores, [hand[i] for i in want], atol=1e-9)
    # lsb-knn on the pool: every selected pair names one of those seeds as its reason
    sel = select("lsb-knn", pool, 6, seed=0, top_s=5, fill="knn", order="badness")
    assert len(sel) == 6 and set(sel.reason.tolist()) <= {pool.ids[i] for i in want}


def test_relevance_probe_refuses_coalitions_bad_heads_and_other_learners_settings():
    from mmal.errors import ConfigError
    from mmal.learners import RelevanceProbe, make_learner
    from mmal.loop.core import build_learner

    with pytest.raises(ConfigError, match="--head"):
        make_learner("probe", head="softmax")
    with pytest.raises(ConfigError, match="unknown parameters"):
        make_learner("probe", fusion="vlmae")
    notes = []
    m = build_learner("probe", 4, model={"fusion": "vlmae", "head": "ordinal"}, log=notes.append)  # fusion: another learner's
    assert m.params["head"] == "ordinal" and notes and "fusion" in notes[0]
    d, pool, labeled = _probe_pool()
    m = RelevanceProbe(train={"epochs": 5})
    m.fit(d, d.labels, labeled)
    with pytest.raises(ConfigError, match="coalitions"):
        m.score(d, coalitions=True)
    with pytest.raises(ConfigError, match="modality coalitions"):
        RelevanceProbe.settings_for({"coalitions"})


def test_probe_state_round_trip():
    from mmal.learners import make_learner

    d, _, labeled = _probe_pool()
    a = make_learner("probe", seed=3, train={"epochs": 20})
    a.fit(d, d.labels, labeled)
    b = make_learner("probe", **{k: v for k, v in a.config().items() if k != "n_classes"})
    b.load_state(a.state())
    np.testing.assert_allclose(a.score(d)["probs"], b.score(d)["probs"], atol=1e-7)
