"""Tests for BADGE, BMMAL (Shapley), Core-Set, BALD and MC dropout."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import mmal.select.badge  # noqa: F401  (registers "badge")
import mmal.select.bald  # noqa: F401
import mmal.select.bmmal  # noqa: F401
import mmal.select.coreset  # noqa: F401
from mmal.errors import ConfigError
from mmal.select.badge import (
    GradientSpace,
    badge_select,
    gradient_embedding,
    kmeanspp_dense,
    kmeanspp_seed,
    pseudo_label_residual,
)
from mmal.select.bald import bald_scores
from mmal.select.bmmal import balance_weights, coalition_key, contribution_share, modality_contributions
from mmal.select.coreset import kcenter_greedy
from mmal.select.registry import get_strategy
from mmal.select.shapley import shapley_exact, shapley_mc
from mmal.pool import ScoredPool
from mmal.train.mc_dropout import mc_dropout, mc_dropout_probs


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_pool(n, c=4, d=5, seed=0, modalities=("audio", "video"), t=3, split=None, dup=False):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(n, c)) * 2).astype(np.float32)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    if dup:  # every row identical
        probs[:] = probs[0]
        emb[:] = emb[0]
    modality = {m: rng.normal(size=(n, d + k)).astype(np.float32) for k, m in enumerate(modalities)}
    extras = {"mc_probs": softmax(rng.normal(size=(t, n, c)) * 2).astype(np.float32)}
    for r in range(len(modalities) + 1):
        for s in itertools.combinations(modalities, r):
            extras[coalition_key(s)] = softmax(rng.normal(size=(n, c))).astype(np.float32)
    extras[coalition_key(modalities)] = probs
    return ScoredPool(
        ids=[f"it{i}" for i in range(n)], probs=probs, embedding=emb, modality=modality,
        split=split, extras=extras, fused_blocks=True,
    )


def dist_matrix(g):
    g = np.asarray(g, dtype=np.float64)
    return ((g[:, None, :] - g[None, :, :]) ** 2).sum(-1)


# ---------------------------------------------------------------------------------------
# BADGE
# ---------------------------------------------------------------------------------------
def test_factorised_distances_equal_materialised():
    rng = np.random.default_rng(1)
    n, c, d = 30, 5, 7
    probs = softmax(rng.normal(size=(n, c)))
    z = rng.normal(size=(n, d))
    g = gradient_embedding(probs, z)  # [N, C·D]
    assert g.shape == (n, c * d)
    space = GradientSpace(pseudo_label_residual(probs), [z])
    want = dist_matrix(g)
    got = np.stack([space.sqdist(slice(0, n), j) for j in range(n)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(space.sqnorm(slice(0, n)), (g.astype(np.float64) ** 2).sum(1), rtol=1e-5)


def test_factorised_distances_weighted_blocks_equal_materialised():
    rng = np.random.default_rng(2)
    n, c = 25, 3
    probs = softmax(rng.normal(size=(n, c)))
    zs = [rng.normal(size=(n, 4)), rng.normal(size=(n, 6)), rng.normal(size=(n, 2))]
    w = rng.uniform(size=(n, 3))
    g = gradient_embedding(probs, zs, weights=w)
    assert g.shape == (n, c * 12)
    space = GradientSpace(pseudo_label_residual(probs), zs, weights=w)
    got = np.stack([space.sqdist(np.arange(n), j) for j in range(n)], axis=1)
    np.testing.assert_allclose(got, dist_matrix(g), rtol=1e-5, atol=1e-6)


def test_gradient_embedding_block_is_residual_times_feature():
    probs = np.array([[0.7, 0.2, 0.1]])
    z = np.array([[2.0, -1.0]])
    g = gradient_embedding(probs, z)[0]
    # ŷ = 0: a = [0.7-1, 0.2, 0.1]; g = a ⊗ z, class-major
    np.testing.assert_allclose(g, [-0.6, 0.3, 0.4, -0.2, 0.2, -0.1], rtol=1e-6)


def test_badge_first_pick_is_largest_norm_candidate():
    pool = make_pool(60, seed=3)
    a = pseudo_label_residual(pool.probs)
    norms = (a**2).sum(1) * (pool.embedding.astype(np.float64) ** 2).sum(1)
    top = int(np.argmax(norms))
    sel = get_strategy("badge")(pool, 5, labeled_mask=None, rng=np.random.default_rng(0))
    assert sel.ids[0] == pool.ids[top]
    # once the top item is labeled, the first pick is the largest norm among the rest
    labeled = np.zeros(len(pool), bool)
    labeled[top] = True
    second = int(np.argmax(np.where(labeled, -1, norms)))
    sel = get_strategy("badge")(pool, 5, labeled_mask=labeled, rng=np.random.default_rng(0))
    assert sel.ids[0] == pool.ids[second]


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_badge_factorised_selection_equals_dense(block):
    rng = np.random.default_rng(4)
    n = 80
    probs = softmax(rng.normal(size=(n, 6)) * 2)
    z = rng.normal(size=(n, 9))
    cand = np.flatnonzero(rng.uniform(size=n) < 0.7)
    fac, fs = badge_select(probs, z, 20, cand, np.random.default_rng(11), block=block)
    den, ds = kmeanspp_dense(gradient_embedding(probs, z), 20, cand, np.random.default_rng(11))
    np.testing.assert_array_equal(fac, den)
    np.testing.assert_allclose(fs, ds, rtol=1e-4)


def test_badge_second_pick_follows_d2_distribution():
    # three candidates: 1-d features, probs chosen so that g = a ⊗ z is easy.
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])  # ŷ = 0, a = [-0.5, 0.5]
    z = np.array([[3.0], [1.0], [0.0]])  # g = [-1.5, 1.5], [-0.5, 0.5], [0, 0]
    # first pick = row 0 (largest norm); D² to it: row1 = 2·1² = 2, row2 = 2·1.5² = 4.5
    p_row2 = 4.5 / 6.5
    counts = np.zeros(3)
    for seed in range(3000):
        picks, _ = badge_select(probs, z, 2, np.arange(3), np.random.default_rng(seed))
        assert picks[0] == 0
        counts[picks[1]] += 1
    assert counts[0] == 0
    frac = counts[2] / counts.sum()
    assert abs(frac - p_row2) < 4 * math.sqrt(p_row2 * (1 - p_row2) / 3000)


def test_badge_all_duplicates_fills_at_random():
    pool = make_pool(30, dup=True)
    sel = get_strategy("badge")(pool, 10, labeled_mask=None, rng=np.random.default_rng(0))
    assert len(sel) == 10 and len(set(sel.ids)) == 10
    assert np.isnan(sel.score[1:]).all()  # picks after the first were random fills
    other = get_strategy("badge")(pool, 10, labeled_mask=None, rng=np.random.default_rng(1))
    assert set(other.ids) != set(sel.ids)


# ---------------------------------------------------------------------------------------
# Shapley / BMMAL
# ---------------------------------------------------------------------------------------
def random_game(m, n=7, seed=0):
    rng = np.random.default_rng(seed)
    players = [f"m{k}" for k in range(m)]
    table = {}
    for r in range(m + 1):
        for s in itertools.combinations(players, r):
            table[tuple(sorted(s))] = rng.uniform(size=n)
    return players, (lambda s: table[tuple(sorted(s))]), table


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_shapley_exact_efficiency(m):
    players, v, table = random_game(m)
    phi = shapley_exact(v, players)
    np.testing.assert_allclose(phi.sum(1), table[tuple(players)] - table[()], atol=1e-12)


def test_shapley_two_players_matches_thesis_eq_3_10():
    players, v, t = random_game(2, seed=5)
    phi = shapley_exact(v, players)
    full, only0, only1, none = t[("m0", "m1")], t[("m0",)], t[("m1",)], t[()]
    np.testing.assert_allclose(phi[:, 0], 0.5 * (full - only1 + only0 - none))
    np.testing.assert_allclose(phi[:, 1], 0.5 * (full - only0 + only1 - none))


def test_shapley_dummy_player_gets_zero():
    rng = np.random.default_rng(0)
    base = {(): rng.uniform(size=4), ("a",): rng.uniform(size=4)}
    v = lambda s: base[tuple(p for p in s if p == "a")]  # noqa: E731  ("b" never matters)
    phi = shapley_exact(v, ["a", "b", "c"])
    np.testing.assert_allclose(phi[:, 1:], 0.0, atol=1e-12)


@pytest.mark.parametrize("m", [2, 3, 5])
def test_shapley_mc_all_permutations_is_exact(m):
    players, v, table = random_game(m, seed=m)
    np.testing.assert_allclose(shapley_mc(v, players, n_permutations=None), shapley_exact(v, players), atol=1e-12)


def test_shapley_mc_sampled_efficiency_exact_and_values_close():
    players, v, table = random_game(6, seed=9)
    phi = shapley_mc(v, players, n_permutations=20, rng=np.random.default_rng(0))
    np.testing.assert_allclose(phi.sum(1), table[tuple(players)] - table[()], atol=1e-12)
    exact = shapley_exact(v, players)
    approx = shapley_mc(v, players, n_permutations=4000, rng=np.random.default_rng(1))
    assert np.abs(approx - exact).max() < 0.05
    assert np.abs(phi - exact).max() > 1e-6  # 20 permutations of 720 really is an estimate


def test_contribution_share_and_weights():
    phi = np.array([[0.3, -0.1], [0.0, 0.0], [0.2, 0.2], [-0.5, 0.1], [0.1, 0.3]])
    Phi = contribution_share(phi)
    np.testing.assert_allclose(Phi, [[0.75, 0.25], [0.5, 0.5], [0.5, 0.5], [5 / 6, 1 / 6], [0.25, 0.75]])
    w = balance_weights(Phi)
    np.testing.assert_allclose(w, [[1, 0.5], [1, 1], [1, 1], [1, 1 / 3], [0.5, 1]])


@pytest.mark.parametrize("mods", [("audio", "video"), ("audio", "text", "video")])
def test_bmmal_weights_in_unit_interval_dominant_is_one(mods):
    pool = make_pool(50, modalities=mods, seed=6)
    phi, Phi, names = modality_contributions(pool)
    assert names == sorted(mods) and phi.shape == (50, len(mods))
    np.testing.assert_allclose(Phi.sum(1), 1.0)
    w = balance_weights(Phi)
    assert (w >= 0).all() and (w <= 1 + 1e-12).all()
    np.testing.assert_allclose(w[np.arange(50), np.argmax(Phi, 1)], 1.0)
    # V = probability of the pseudo class: efficiency against the coalition tables
    yhat = pool.probs.argmax(1)
    v_all = pool.probs[np.arange(50), yhat]
    v_none = pool.extras["coalition:"][np.arange(50), yhat]
    np.testing.assert_allclose(phi.sum(1), v_all - v_none, atol=1e-6)


def test_bmmal_selection_matches_dense_weighted_embedding():
    pool = make_pool(60, modalities=("audio", "text", "video"), seed=7)
    labeled = np.zeros(60, bool)
    labeled[:10] = True
    sel = get_strategy("bmmal")(pool, 12, labeled_mask=labeled, rng=np.random.default_rng(3))
    _, Phi, names = modality_contributions(pool)
    g = gradient_embedding(pool.probs, [pool.modality[m] for m in names], weights=balance_weights(Phi))
    picks, _ = kmeanspp_dense(g, 12, np.arange(10, 60), np.random.default_rng(3))
    np.testing.assert_array_equal(sel.ids, pool.ids[picks])
    assert set(sel.info["mean_contribution"]) == set(names)
    np.testing.assert_allclose(sum(sel.info["mean_contribution"].values()), 1.0)
    assert sel.info["shapley"] == "exact"


def test_bmmal_value_fn_equals_extras_and_missing_key_errors():
    pool = make_pool(30, seed=8)
    fn = lambda s: pool.extras[coalition_key(s)]  # noqa: E731
    a = get_strategy("bmmal")(pool, 6, labeled_mask=None, rng=np.random.default_rng(0))
    b = get_strategy("bmmal")(pool, 6, labeled_mask=None, rng=np.random.default_rng(0), value_fn=fn)
    np.testing.assert_array_equal(a.ids, b.ids)
    del pool.extras["coalition:audio"]
    with pytest.raises(ConfigError, match="coalition:audio"):
        get_strategy("bmmal")(pool, 6, labeled_mask=None, rng=np.random.default_rng(0))


def test_bmmal_penalises_unbalanced_items():
    # two identical-gradient items except for balance: the balanced one has the larger
    # scaled gradient norm, so it is BMMAL's first pick (002 Guideline 1)
    n = 2
    probs = np.array([[0.6, 0.4], [0.6, 0.4]], np.float32)
    feats = {"a": np.ones((n, 3), np.float32), "b": np.ones((n, 3), np.float32)}
    ext = {
        "coalition:": np.array([[0.5, 0.5], [0.5, 0.5]], np.float32),
        "coalition:a": np.array([[0.6, 0.4], [0.55, 0.45]], np.float32),  # item0: a dominates
        "coalition:b": np.array([[0.5, 0.5], [0.55, 0.45]], np.float32),  # item1: balanced
    }
    pool = ScoredPool(ids=["unbal", "bal"], probs=probs, modality=feats, extras=ext, fused_blocks=True)
    sel = get_strategy("bmmal")(pool, 1, labeled_mask=None, rng=np.random.default_rng(0))
    assert sel.ids[0] == "bal"


# ---------------------------------------------------------------------------------------
# Core-Set
# ---------------------------------------------------------------------------------------
def naive_kcenter(x, budget, cand, centres, rng):
    x = np.asarray(x, np.float64)
    chosen = list(centres)
    picks = []
    for k in range(min(budget, len(cand))):
        if not chosen:
            p = int(cand[rng.integers(len(cand))])
        else:
            best, p = -1.0, None
            for i in cand:
                if i in picks:
                    continue
                dmin = min(np.sqrt(((x[i] - x[c]) ** 2).sum()) for c in chosen)  # O(N·|S|)
                if dmin > best:
                    best, p = dmin, int(i)
        picks.append(p)
        chosen.append(p)
    return np.array(picks)


@pytest.mark.parametrize("n_labeled", [0, 1, 5])
@pytest.mark.parametrize("block", [3, 1000])
def test_coreset_equals_naive(n_labeled, block):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(40, 4))
    centres = np.arange(n_labeled)
    cand = np.setdiff1d(np.arange(40), np.r_[centres, [20, 21]])
    got, radius = kcenter_greedy(x, 15, cand, centres, np.random.default_rng(5), block=block)
    want = naive_kcenter(x, 15, cand, list(centres), np.random.default_rng(5))
    np.testing.assert_array_equal(got, want)
    assert np.all(np.diff(radius[1:]) <= 1e-12)  # covering radius never grows


def test_coreset_strategy_uses_labeled_as_centres():
    pool = make_pool(30, seed=13)
    labeled = np.zeros(30, bool)
    labeled[[2, 7]] = True
    sel = get_strategy("coreset")(pool, 4, labeled_mask=labeled, rng=np.random.default_rng(0))
    want = naive_kcenter(pool.embedding, 4, np.flatnonzero(~labeled), [2, 7], np.random.default_rng(0))
    np.testing.assert_array_equal(sel.ids, pool.ids[want])


# ---------------------------------------------------------------------------------------
# BALD / MC dropout
# ---------------------------------------------------------------------------------------
def test_bald_hand_computed():
    mc = np.array(
        [
            [[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]],  # pass 1
            [[0.0, 1.0], [0.5, 0.5], [0.4, 0.6]],  # pass 2
        ]
    )  # [T=2, N=3, C=2]
    # item 0: mean [.5,.5] -> H = ln 2 = 0.693147; each pass H = 0 -> MI = 0.693147
    # item 1: every pass [.5,.5] -> MI = ln 2 - ln 2 = 0
    # item 2: mean [.6,.4] -> H = .6·0.510826 + .4·0.916291 = 0.673012
    #         H(pass1) = .8·0.223144 + .2·1.609438 = 0.500402; H(pass2) = 0.673012
    #         MI = 0.673012 - (0.500402 + 0.673012)/2 = 0.086305
    np.testing.assert_allclose(bald_scores(mc), [0.693147, 0.0, 0.086305], atol=2e-6)
    pool = ScoredPool(ids=["a", "b", "c"], probs=mc.mean(0), extras={"mc_probs": mc})
    sel = get_strategy("bald")(pool, 2, labeled_mask=None, rng=np.random.default_rng(0))
    assert list(sel.ids) == ["a", "c"]


def test_bald_rejects_bad_shape():
    pool = ScoredPool(ids=["a", "b"], probs=np.full((2, 2), 0.5), extras={"mc_probs": np.full((2, 3, 2), 0.5)})
    with pytest.raises(ConfigError, match="T, N=2"):
        get_strategy("bald")(pool, 1, labeled_mask=None, rng=np.random.default_rng(0))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.5)
        self.drop2 = nn.Dropout1d(0.3)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return torch.softmax(self.out(self.drop(self.ln(self.bn(self.lin(x))))), -1)


@pytest.mark.parametrize("start_training", [True, False])
def test_mc_dropout_only_dropout_in_train_mode(start_training):
    net = TinyNet().train(start_training)
    with mc_dropout(net):
        modes = {name: m.training for name, m in net.named_modules()}
    assert modes == {"": False, "lin": False, "bn": False, "ln": False, "drop": True, "drop2": True, "out": False}
    assert all(m.training == start_training for m in net.modules())  # restored


def test_mc_dropout_probs_vary_reproducible_and_bn_frozen():
    torch.manual_seed(0)
    net = TinyNet()
    x = torch.randn(16, 4)
    net.train()
    net(x)  # give BN non-trivial running stats
    mean_before = net.bn.running_mean.clone()
    with mc_dropout(net):
        p1 = mc_dropout_probs(lambda: net(x), T=5, seed=3)
        p2 = mc_dropout_probs(lambda: net(x), T=5, seed=3)
    assert p1.shape == (5, 16, 3)
    np.testing.assert_allclose(p1.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(p1, p2)
    assert np.abs(p1[0] - p1[1]).max() > 1e-4  # dropout really is active
    assert torch.equal(net.bn.running_mean, mean_before)  # BN stayed in eval
    assert (bald_scores(p1) > 0).all()


# ---------------------------------------------------------------------------------------
# property tests for all four strategies
# ---------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw):
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    labeled = rng.uniform(size=n) < draw(st.floats(0, 0.9))
    split = rng.choice(["train", "pool", "test"], size=n, p=[0.2, 0.6, 0.2])
    budget = draw(st.integers(0, 45))
    dup = draw(st.booleans()) and draw(st.booleans())
    return n, seed, labeled, split, budget, dup


@pytest.mark.parametrize("name", ["badge", "bmmal", "coreset", "bald"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pool_cases())
def test_strategy_properties(name, case):
    n, seed, labeled, split, budget, dup = case
    pool = make_pool(n, seed=seed, split=split, dup=dup)
    fn = get_strategy(name)
    sel = fn(pool, budget, labeled_mask=labeled, rng=np.random.default_rng(seed))
    selectable = ~labeled & (split != "test")
    assert len(sel) == min(budget, int(selectable.sum()))
    assert len(set(sel.ids)) == len(sel)
    allowed = set(pool.ids[selectable])
    assert set(sel.ids) <= allowed
    again = fn(pool, budget, labeled_mask=labeled, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(sel.ids, again.ids)


def test_negative_budget_rejected():
    pool = make_pool(5)
    for name in ["badge", "bmmal", "coreset", "bald"]:
        with pytest.raises(ConfigError):
            get_strategy(name)(pool, -1, labeled_mask=None, rng=np.random.default_rng(0))
