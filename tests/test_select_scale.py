"""Scale kernels of the diversity strategies.

* Core-Set ``method="lazy"`` must pick exactly what a naive O(N·|S|) k-center greedy
  written here picks (ties included), whatever ``max_checks`` forces.
* BADGE/BMMAL ``method="rejection"`` must draw from the k-means++ law: the probability of
  every ordered pick sequence is enumerated here on a materialised gradient embedding and
  compared with the empirical frequencies over many seeds (chi-square).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from mmal.errors import ConfigError
from mmal.select.badge import GradientSpace, kmeanspp_seed, pseudo_label_residual
from mmal.select.coreset import kcenter_greedy


# ---------------------------------------------------------------------------------------
# Core-Set: lazy == naive
# ---------------------------------------------------------------------------------------
def naive_kcenter(x, budget, cand, centres, rng):
    """Sener & Savarese Alg. 1 literally: max over candidates of min over centres (ties: first)."""
    x = np.asarray(x, np.float64)
    cand = np.asarray(cand)
    chosen, picks = list(centres), []
    for _ in range(min(budget, len(cand))):
        if not chosen:
            p = int(cand[rng.integers(len(cand))])
        else:  # squared distance of every candidate to every chosen point, then max-min
            d2 = ((x[cand][:, None, :] - x[chosen][None, :, :]) ** 2).sum(-1).min(1)
            d2[np.isin(cand, picks)] = -1.0
            p = int(cand[np.argmax(d2)])  # np.argmax: the first of equal maxima
        picks.append(p)
        chosen.append(p)
    return np.array(picks)


@pytest.mark.parametrize("n_labeled", [0, 3])
@pytest.mark.parametrize("max_checks", [1, 4, None])
@pytest.mark.parametrize("data", ["gauss", "grid"])
def test_lazy_kcenter_equals_naive(n_labeled, max_checks, data):
    rng = np.random.default_rng(7)
    if data == "gauss":
        x = rng.normal(size=(300, 6))
    else:  # small integer grid: many exact distance ties, so the tie rule is exercised
        x = rng.integers(0, 4, size=(300, 3)).astype(np.float64)
    centres = np.arange(n_labeled)
    cand = np.setdiff1d(np.arange(300), np.r_[centres, [50, 51]])
    got, radius = kcenter_greedy(x, 40, cand, centres, np.random.default_rng(5), method="lazy",
                                 max_checks=max_checks)
    full, full_radius = kcenter_greedy(x, 40, cand, centres, np.random.default_rng(5), method="full")
    want = naive_kcenter(x, 40, cand, list(centres), np.random.default_rng(5))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(full, want)
    np.testing.assert_allclose(radius, full_radius, rtol=1e-9)


def test_lazy_kcenter_float32_large_blocks_equals_naive():
    rng = np.random.default_rng(8)
    centres_true = rng.normal(size=(20, 16)) * 4
    x = (centres_true[rng.integers(20, size=3000)] + rng.normal(size=(3000, 16))).astype(np.float32)
    got, _ = kcenter_greedy(x, 60, np.arange(3000), [0], np.random.default_rng(0), method="lazy", block=512)
    want = naive_kcenter(x.astype(np.float64), 60, np.arange(3000), [0], np.random.default_rng(0))
    np.testing.assert_array_equal(got, want)


def test_kcenter_unknown_method():
    with pytest.raises(ConfigError, match="method"):
        kcenter_greedy(np.zeros((3, 2)), 1, np.arange(3), method="fast")


# ---------------------------------------------------------------------------------------
# BADGE / BMMAL rejection sampler: the k-means++ law
# ---------------------------------------------------------------------------------------
def dense_embedding(probs, zs, w):
    """g_i = concat_m w_im · (p_i - e_argmax) ⊗ z_im, written out here (not the project's helper)."""
    n = len(probs)
    a = np.array(probs, np.float64)
    a[np.arange(n), a.argmax(1)] -= 1.0
    blocks = [w[:, m, None] * np.einsum("nc,nd->ncd", a, z).reshape(n, -1) for m, z in enumerate(zs)]
    return np.concatenate(blocks, axis=1)


def kmeanspp_sequence_law(g, budget):
    """Probability of every ordered pick sequence under k-means++ seeding (first = max norm)."""
    first = int(np.argmax((g**2).sum(1)))
    law = {}

    def rec(seq, p):
        if len(seq) == budget:
            law[tuple(seq)] = p
            return
        d2 = np.min([((g - g[c]) ** 2).sum(1) for c in seq], axis=0)
        d2[seq] = 0.0
        for i in np.flatnonzero(d2 > 0):
            rec(seq + [int(i)], p * d2[i] / d2.sum())

    rec([first], 1.0)
    return law


@pytest.mark.parametrize("weighted,max_rejects", [(False, 32), (True, 1)])
def test_rejection_sampler_follows_kmeanspp_law(weighted, max_rejects):
    rng = np.random.default_rng(3)
    n, budget = 6, 3
    probs = rng.dirichlet(np.ones(3), size=n)
    zs = [rng.normal(size=(n, 2)), rng.normal(size=(n, 3))] if weighted else [rng.normal(size=(n, 2))]
    w = rng.uniform(0.2, 1.0, size=(n, len(zs))) if weighted else np.ones((n, 1))
    law = kmeanspp_sequence_law(dense_embedding(probs, zs, w), budget)
    space = GradientSpace(pseudo_label_residual(probs), zs, weights=w if weighted else None)
    counts = dict.fromkeys(law, 0)
    runs = 2000
    for seed in range(runs):
        picks, score = kmeanspp_seed(space, budget, np.arange(n), np.random.default_rng(seed),
                                     method="rejection", max_rejects=max_rejects, block=4)
        counts[tuple(int(p) for p in picks)] += 1  # KeyError = a sequence of probability 0
    keys = sorted(law)
    expected = np.array([law[k] for k in keys]) * runs
    observed = np.array([counts[k] for k in keys])
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_rejection_scores_are_true_d2_and_no_repeats():
    rng = np.random.default_rng(4)
    n = 400
    probs = rng.dirichlet(np.ones(5) * 0.5, size=n)
    z = rng.normal(size=(n, 7)).astype(np.float32)
    cand = np.flatnonzero(rng.uniform(size=n) < 0.8)
    space = GradientSpace(pseudo_label_residual(probs), [z])
    picks, score = kmeanspp_seed(space, 50, cand, np.random.default_rng(1), method="rejection", max_rejects=3)
    assert len(set(picks.tolist())) == 50 and set(picks.tolist()) <= set(cand.tolist())
    g = dense_embedding(probs, [z.astype(np.float64)], np.ones((n, 1)))
    for k in range(1, 50):  # D² at pick time = squared distance to the nearest earlier pick
        want = min(((g[picks[k]] - g[c]) ** 2).sum() for c in picks[:k])
        np.testing.assert_allclose(score[k], want, rtol=1e-4, atol=1e-6)


def test_rejection_all_duplicates_fills_at_random():
    n = 20
    probs = np.tile([[0.6, 0.3, 0.1]], (n, 1))
    z = np.tile([[1.0, -2.0]], (n, 1))
    space = GradientSpace(pseudo_label_residual(probs), [z])
    picks, score = kmeanspp_seed(space, 8, np.arange(n), np.random.default_rng(0), method="rejection")
    assert len(set(picks.tolist())) == 8
    assert np.isnan(score[1:]).all()


def test_kmeanspp_unknown_method():
    space = GradientSpace(pseudo_label_residual(np.full((3, 2), 0.5)), [np.ones((3, 1))])
    with pytest.raises(ConfigError, match="method"):
        kmeanspp_seed(space, 2, np.arange(3), np.random.default_rng(0), method="mcmc2")


def test_strategies_take_the_method_option():
    """badge/bmmal/coreset accept method=; coreset's two methods agree, the samplers stay in the pool."""
    from mmal.pool import ScoredPool
    from mmal.select import select

    rng = np.random.default_rng(11)
    n, c = 120, 3
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
    modality = {"a": rng.normal(size=(n, 4)).astype(np.float32), "b": rng.normal(size=(n, 5)).astype(np.float32)}
    pool = ScoredPool(ids=[f"i{k}" for k in range(n)], probs=probs, embedding=rng.normal(size=(n, 6)).astype(np.float32),
                      modality=modality, fused_blocks=True)
    labeled = np.zeros(n, bool)
    labeled[:10] = True
    for name, kw in [("badge", {}), ("bmmal", {"weights": "ones"})]:
        sel = select(name, pool, 15, labeled_mask=labeled, seed=0, method="rejection", **kw)
        assert len(set(sel.ids)) == 15 and not set(sel.ids) & {f"i{k}" for k in range(10)}
        assert sel.info["method"] == "rejection"
    lazy = select("coreset", pool, 15, labeled_mask=labeled, seed=0, method="lazy")
    full = select("coreset", pool, 15, labeled_mask=labeled, seed=0, method="full")
    assert list(lazy.ids) == list(full.ids)
