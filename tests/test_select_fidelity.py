"""Fidelity of LSB / Core-Set / BMMAL to the seeds, and the one strategy contract.

Every expectation is computed here by hand (brute-force kNN, a LogisticRegression fitted
in the test, a naive k-center loop), not with the project's helpers.
"""

from __future__ import annotations

import itertools
import pathlib

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mmal.errors import ConfigError
from mmal.pool import ScoredPool
from mmal.select import STRATEGIES, get_strategy, needs_of, parse_strategies, select, shares_note, spec_params

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "mmal"


# ---------------------------------------------------------------------------------------
# pools and hand computations
# ---------------------------------------------------------------------------------------
def lsb_pool(n=400, d=8, seed=0, p_labeled=0.3, p_test=0.1):
    """Binary pool whose labels follow the embedding so that mistakes cluster."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    y = (emb[:, 0] + 0.7 * rng.standard_normal(n) > 0).astype(int)
    p1 = 1 / (1 + np.exp(-2.0 * emb[:, 0] - 0.8 * emb[:, 1]))  # the "model" ignores the noise
    probs = np.stack([1 - p1, p1], axis=1)
    labeled = rng.random(n) < p_labeled
    split = np.where(rng.random(n) < p_test, "test", "pool")
    return ScoredPool(ids=[f"i{k:04d}" for k in range(n)], probs=probs, embedding=emb,
                      labels=np.where(labeled, y, -1), split=split)


def hand_seeds(pool, top_s=None):
    """Labeled non-test mistakes (default) or the top_s by |p_1 - y| (binary badness)."""
    lab = (pool.labels >= 0) & (pool.split != "test")
    rows = np.flatnonzero(lab)
    bad = np.abs(pool.probs[rows, 1] - pool.labels[rows])
    if top_s is None:
        keep = pool.probs[rows].argmax(1) != pool.labels[rows]
        rows, bad = rows[keep], bad[keep]
    order = sorted(range(len(rows)), key=lambda i: (-bad[i], rows[i]))
    if top_s is not None:
        order = order[:top_s]
    return rows[order]


def hand_knn_set(pool, seeds, k=3):
    """Exact k-NN (cosine) of every seed among unlabeled non-test rows -> {row: closest seed}."""
    x = pool.embedding.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cand = np.flatnonzero((pool.labels < 0) & (pool.split != "test"))
    best = {}
    for s in seeds:
        sims = x[cand] @ x[s]
        for j in np.argsort(-sims, kind="stable")[:k]:
            r = int(cand[j])
            if r not in best or sims[j] > best[r][0] or (sims[j] == best[r][0] and s < best[r][1]):
                best[r] = (sims[j], int(s))
    return {r: s for r, (_, s) in best.items()}


# ---------------------------------------------------------------------------------------
# 1. LSB-kNN samples at random from the broadened set (000 l. 227); k fixed at 3
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 7])
def test_lsb_knn_is_random_subsample_of_exact_3nn_set(seed):
    pool = lsb_pool(seed=seed)
    seeds = hand_seeds(pool)
    near = hand_knn_set(pool, seeds, k=3)
    broadened = np.array(sorted(near))  # ascending pool rows
    budget = len(broadened) // 2
    assert budget >= 10
    take = broadened[np.random.default_rng(11).choice(len(broadened), size=budget, replace=False)]
    sel = select("lsb-knn", pool, budget, seed=11)
    assert sel.ids.tolist() == pool.ids[take].tolist()
    assert sel.reason.tolist() == pool.ids[[near[r] for r in take]].tolist()  # closest seed
    assert np.isnan(sel.score).all()
    assert sel.info["n_seeds"] == len(seeds) and sel.info["n_broadened"] == len(broadened)


def test_lsb_knn_fixed_k_returns_shortfall_and_mix_hands_it_on():
    pool = lsb_pool(seed=3)
    near = hand_knn_set(pool, hand_seeds(pool), k=3)
    m = len(near)
    budget = m + 25
    sel = select("lsb-knn", pool, budget, seed=0)  # default fill: the paper's fixed k = 3
    assert sorted(sel.ids.tolist()) == sorted(pool.ids[list(near)].tolist())
    assert sel.info["shortfall"] == 25 and sel.info["k_used"] == 3
    # the mix hands the shortfall to entropy, which ranks the rest by hand-computed entropy
    mix = select("lsb-knn:0.9,entropy:0.1", pool, budget, seed=0)
    assert len(mix) == budget and mix.info["shortfall"] == 0
    assert mix.info["quotas"][0] > m and mix.info["parts"][1]["asked"] == budget - m
    ent_ids = mix.ids[mix.strategy == "entropy"]
    assert len(ent_ids) == budget - m
    p = pool.probs
    h = -(p * np.log(p + 1e-12)).sum(1)
    free = [r for r in np.flatnonzero((pool.labels < 0) & (pool.split != "test")) if r not in near]
    expect = sorted(free, key=lambda r: (-h[r], r))[: budget - m]
    assert ent_ids.tolist() == pool.ids[expect].tolist()
    # growing k stays a named option
    grown = select("lsb-knn", pool, budget, seed=0, fill="knn")
    assert len(grown) == budget and grown.info["k_used"] > 3


# ---------------------------------------------------------------------------------------
# 1 + 3. lsb-lt ranks the filtered set by g(h); positives = the seed bad cases only
# ---------------------------------------------------------------------------------------
def hand_lookalike_g(pool, seeds):
    lab = np.flatnonzero((pool.labels >= 0) & (pool.split != "test"))
    correct = pool.probs[lab].argmax(1) == pool.labels[lab]
    is_seed = np.isin(lab, seeds)
    use = is_seed | correct
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=0)
    lr.fit(pool.embedding[lab[use]].astype(np.float32), is_seed[use].astype(int))
    return lambda rows: lr.predict_proba(pool.embedding[rows].astype(np.float32))[:, 1]


@pytest.mark.parametrize("top_s,l_t", [(None, 0.5), (6, 0.3)])
def test_lsb_lt_order_is_g_of_a_logistic_regression_fitted_here(top_s, l_t):
    pool = lsb_pool(n=500, seed=5)
    seeds = hand_seeds(pool, top_s=top_s)
    near = hand_knn_set(pool, seeds, k=3)
    rows = np.array(sorted(near))
    g = hand_lookalike_g(pool, seeds)(rows)
    keep = g > l_t
    assert 0 < keep.sum() < len(rows) or top_s is not None  # the filter really filters
    expect = sorted(rows[keep], key=lambda r: (-g[rows.tolist().index(r)], r))
    params = {"l_t": l_t} if top_s is None else {"top_s": top_s, "l_t": l_t}
    sel = select("lsb-lt", pool, 10_000, seed=0, **params)
    assert sel.ids.tolist() == pool.ids[expect].tolist()
    np.testing.assert_allclose(sel.score, sorted(g[keep], reverse=True), rtol=1e-6)
    assert sel.info["n_lookalike_pos"] == len(seeds)


def test_lookalike_positives_are_the_seeds_not_every_mistake():
    pool = lsb_pool(n=500, seed=5)
    seeds = hand_seeds(pool, top_s=4)
    all_mistakes = hand_seeds(pool)
    assert len(all_mistakes) > 4
    sel = select("lsb-lt", pool, 10_000, seed=0, top_s=4, l_t=0.0)
    rows = np.array(sorted(hand_knn_set(pool, seeds, k=3)))
    g_seeds = hand_lookalike_g(pool, seeds)(rows)
    g_all = hand_lookalike_g(pool, all_mistakes)(rows)  # what the code did in earlier versions
    by = lambda g: pool.ids[sorted(rows, key=lambda r: (-g[rows.tolist().index(r)], r))].tolist()  # noqa: E731
    assert sel.ids.tolist() == by(g_seeds)
    assert by(g_seeds) != by(g_all)  # the test tells the two apart
    assert sel.info["n_lookalike_pos"] == 4
    lab = (pool.labels >= 0) & (pool.split != "test")
    assert sel.info["n_lookalike_neg"] == int((pool.probs[lab].argmax(1) == pool.labels[lab]).sum())


def test_lsb_seed_badness_order_remains_a_named_option():
    pool = lsb_pool(seed=2)
    sel = select("lsb-knn", pool, 20, order="badness")
    bad = {pool.ids[s]: abs(pool.probs[s, 1] - pool.labels[s]) for s in hand_seeds(pool)}
    np.testing.assert_allclose(sel.score, [bad[r] for r in sel.reason])
    assert np.all(np.diff(sel.score) <= 1e-12)
    with pytest.raises(ConfigError, match="order"):
        select("lsb-knn", pool, 5, order="lookalike")  # no lookalike model in lsb-knn


# ---------------------------------------------------------------------------------------
# 5. Core-Set centres = labeled, available items only
# ---------------------------------------------------------------------------------------
def naive_kcenter(x, budget, cand, centres):
    chosen, picks = list(centres), []
    for _ in range(budget):
        best, p = -1.0, None
        for i in cand:
            if i in picks:
                continue
            dmin = min(np.linalg.norm(x[i] - x[c]) for c in chosen)
            if dmin > best:
                best, p = dmin, int(i)
        picks.append(p)
        chosen.append(p)
    return picks


def test_coreset_centres_exclude_unavailable_and_labeled_test_items():
    rng = np.random.default_rng(4)
    n = 80
    x = rng.standard_normal((n, 3))
    x[50:70] += 6.0  # far cluster: candidates 50-59 next to items without a gold label (60-69)
    x[40:50] -= 6.0  # far cluster: candidates 40-49 next to labeled test items (70-79)
    x[70:80] -= 6.0
    labels = np.full(n, -1)
    labels[:8] = rng.integers(0, 2, 8)  # labeled, available
    labels[70:80] = 1  # labeled test items
    split = np.array(["pool"] * 70 + ["test"] * 10)
    mask = np.zeros(n, bool)
    mask[:8] = True
    mask[60:70] = True  # unavailable (no gold label) -- in labeled_mask but not labeled
    mask[70:80] = True  # labeled test items (workspace: labels >= 0)
    pool = ScoredPool(ids=[f"c{i}" for i in range(n)], probs=np.full((n, 2), 0.5), embedding=x.astype(np.float32),
                      labels=labels, split=split)
    sel = select("coreset", pool, 6, labeled_mask=mask)
    cand = np.flatnonzero(~mask & (split != "test"))
    right = naive_kcenter(x.astype(np.float32).astype(np.float64), 6, cand, range(8))
    wrong = naive_kcenter(x.astype(np.float32).astype(np.float64), 6, cand, np.flatnonzero(mask))
    assert sel.ids.tolist() == [f"c{i}" for i in right]
    assert right != wrong and sel.info["n_centres"] == 8


# ---------------------------------------------------------------------------------------
# 4. BMMAL uses true fused blocks only; equal weights = BADGE on their concatenation
# ---------------------------------------------------------------------------------------
def fused_pool(n=60, c=3, seed=0, equal_shares=True, fused=True):
    rng = np.random.default_rng(seed)
    z = {"audio": rng.standard_normal((n, 4)).astype(np.float32), "video": rng.standard_normal((n, 5)).astype(np.float32)}
    logits = rng.standard_normal((n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    half = (probs + 1 / c) / 2  # any [N, C] rows summing to 1
    other = rng.dirichlet(np.ones(c), n)
    extras = {"coalition:": np.full((n, c), 1 / c), "coalition:audio+video": probs,
              "coalition:audio": half, "coalition:video": half if equal_shares else other,
              "penultimate": np.concatenate([z["audio"], z["video"]], axis=1)}
    return ScoredPool(ids=[f"m{i}" for i in range(n)], probs=probs, embedding=rng.standard_normal((n, 6)).astype(np.float32),
                      modality=z, extras=extras, fused_blocks=fused)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bmmal_with_equal_weights_selects_what_badge_selects(seed):
    pool = fused_pool(seed=seed)  # V(S) depends on |S| only -> phi_audio = phi_video -> w = 1
    labeled = np.zeros(len(pool), bool)
    labeled[:5] = True
    b = select("bmmal", pool, 12, labeled_mask=labeled, seed=seed)
    assert b.info["mean_weight"] == {"audio": 1.0, "video": 1.0}
    a = select("badge", pool, 12, labeled_mask=labeled, seed=seed, feature="penultimate")
    assert b.ids.tolist() == a.ids.tolist()
    np.testing.assert_allclose(b.score, a.score, rtol=1e-6)
    # unequal shares: weights differ from 1 and so does the selection; weights="ones" is BADGE again
    uneq = fused_pool(seed=seed, equal_shares=False)
    assert min(select("bmmal", uneq, 12, labeled_mask=labeled, seed=seed).info["mean_weight"].values()) < 1
    ones = select("bmmal", uneq, 12, labeled_mask=labeled, seed=seed, weights="ones")
    assert ones.ids.tolist() == select("badge", uneq, 12, labeled_mask=labeled, seed=seed).ids.tolist()


def test_bmmal_refuses_without_true_fused_blocks():
    pool = fused_pool(fused=False)
    with pytest.raises(ConfigError, match="--learner late-fusion"):
        select("bmmal", pool, 5)


# ---------------------------------------------------------------------------------------
# one strategy contract
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_rejects_an_unknown_parameter_naming_it_and_its_allowed(name):
    pool = fused_pool()
    allowed = sorted(get_strategy(name).params)
    with pytest.raises(ConfigError) as e:
        select(name, pool, 5, foo=1)
    msg = str(e.value)
    assert f"'{name}'" in msg and "foo" in msg and all(p in msg for p in allowed)
    with pytest.raises(ConfigError, match="foo"):
        get_strategy(name)(pool, 5, labeled_mask=None, rng=np.random.default_rng(0), foo=1)
    partner = "entropy" if name != "entropy" else "random"
    with pytest.raises(ConfigError, match="foo"):  # mix parts go through the same contract
        select(f"{name}:1,{partner}:1", pool, 5, **{name: {"foo": 1}})


def test_issue_examples_are_config_errors_not_type_errors():
    pool = fused_pool()
    with pytest.raises(ConfigError, match="'badge'.*foo"):
        select("badge", pool, 5, foo=1)
    with pytest.raises(ConfigError, match="'least-confidence'.*eps.*allowed: block_size"):
        select("least-confidence", pool, 5, eps=1e-9)


def test_registry_entries_document_every_parameter_and_need():
    for name, s in STRATEGIES.items():
        assert s.fn.__doc__, name
        for p, spec in s.params.items():
            assert spec.doc.strip(), (name, p)
    assert needs_of("bald") == {"mc_samples"}
    assert {"coalitions", "fused_blocks"} <= needs_of("entropy:0.5,bmmal:0.5")
    assert needs_of("entropy") == set()


def test_mix_per_part_params_are_not_flattened():
    pool = lsb_pool(seed=1)
    # both parts have `order`; different values per part must reach their own part
    sp = {"lsb-knn": {"order": "badness"}, "lsb-lt": {"order": "random", "l_t": 0.0}, "margin": {"block_size": 7}}
    params = spec_params("lsb-knn:0.5,lsb-lt:0.5", sp)
    assert params == {"lsb-knn": {"order": "badness"}, "lsb-lt": {"order": "random", "l_t": 0.0}}
    sel = select("lsb-knn:0.5,lsb-lt:0.5", pool, 20, seed=0, **params)
    parts = {c["strategy"]: c["info"] for c in sel.info["parts"]}
    assert parts["lsb-knn"]["order"] == "badness" and parts["lsb-lt"]["order"] == "random"
    with pytest.raises(ConfigError, match="margin.*bogus"):
        spec_params("margin", {"margin": {"bogus": 1}})


# ---------------------------------------------------------------------------------------
# strategy-list grammar (the one parser for the CLI, simulate and scripts)
# ---------------------------------------------------------------------------------------
def test_parse_strategies_grammar():
    assert parse_strategies("entropy:3,lsb-lt:1") == ["entropy:3,lsb-lt:1"]  # ONE mix
    assert parse_strategies("random | entropy:0.8, lsb-lt:0.2|badge") == ["random", "entropy:0.8,lsb-lt:0.2", "badge"]
    assert parse_strategies("random,entropy") == ["random", "entropy"]  # bare names: a list
    for bad, why in [("entropy:3,lsb-lt", "with and without a share"), ("entropy:0.8;lsb-lt:0.2", "';'"),
                     ("entropy|entropy", "twice"), ("entropy:1,entropy:2", "twice"), ("nope", "unknown strategy"),
                     ("entropy:0", "positive"), ("random||entropy", "empty"), ("", "at least one")]:
        with pytest.raises(ConfigError, match=why):
            parse_strategies(bad)


def test_mix_shares_are_normalised():
    pool = lsb_pool(seed=1)
    a = select("entropy:3,margin:1", pool, 40, seed=0)
    b = select("entropy:0.75,margin:0.25", pool, 40, seed=0)
    assert a.ids.tolist() == b.ids.tolist() and a.info["quotas"] == [30, 10]
    assert a.info["shares"] == {"entropy": 0.75, "margin": 0.25} and a.info["shares_sum"] == 4
    assert shares_note("entropy:3,margin:1") == "mix 'entropy:3,margin:1': shares sum to 4; normalised to entropy 0.75, margin 0.25"
    assert shares_note("entropy:0.75,margin:0.25") is None and shares_note("entropy") is None


# ---------------------------------------------------------------------------------------
# progress: one callback, no rich in select/ or index/
# ---------------------------------------------------------------------------------------
def test_progress_callback_and_no_rich_import():
    pool = fused_pool()
    seen = []
    select("badge", pool, 7, progress=lambda done, total, desc: seen.append((done, total, desc)))
    assert seen[-1][:2] == (7, 7) and [d for d, _, _ in seen] == list(range(1, 8))
    for f in itertools.chain((SRC / "select").glob("*.py"), (SRC / "index").glob("*.py")):
        assert "rich" not in f.read_text(), f


# ---------------------------------------------------------------------------------------
# LSB seeds from out-of-sample predictions (pool.extras["at_selection_probs"])
# ---------------------------------------------------------------------------------------
def _fitted_pool_with_prior(seed=0):
    """A pool whose current model fits every labeled item (no in-sample mistake) while the
    probabilities recorded when half of them were selected got some wrong."""
    pool = lsb_pool(seed=seed)
    rng = np.random.default_rng(seed + 100)
    lab = np.flatnonzero((pool.labels >= 0) & (pool.split != "test"))
    probs = pool.probs.copy()
    probs[lab] = np.eye(2)[pool.labels[lab]] * 0.9 + 0.05  # in-sample: all right
    prior = np.full_like(probs, np.nan)
    judged = lab[rng.random(len(lab)) < 0.5]
    prior[judged] = pool.probs[judged]  # out-of-sample: the original model's view
    pool = ScoredPool(ids=pool.ids, probs=probs, embedding=pool.embedding, labels=pool.labels, split=pool.split,
                      extras={"at_selection_probs": prior})
    return pool, judged, prior


def test_lsb_seeds_are_the_mistakes_made_before_labeling():
    pool, judged, prior = _fitted_pool_with_prior()
    # hand: judged items whose recorded prediction was wrong, worst first (|p_1 - y|), ties by row
    wrong = judged[prior[judged].argmax(1) != pool.labels[judged]]
    bad = np.abs(prior[wrong, 1] - pool.labels[wrong])
    seeds = wrong[sorted(range(len(wrong)), key=lambda i: (-bad[i], wrong[i]))]
    assert len(seeds) >= 5
    near = hand_knn_set(pool, seeds, k=3)
    sel = select("lsb-knn", pool, 10_000, seed=3, order="badness")
    assert set(sel.ids.tolist()) == set(pool.ids[sorted(near)].tolist())
    assert sel.info["n_seeds"] == len(seeds) and sel.info["n_judged_at_selection"] == len(judged)
    # the in-sample view finds nothing: the current model fits its labels
    empty = select("lsb-knn", pool, 50, seed=3, seeds_from="current")
    assert len(empty.ids) == 0 and empty.info["n_seeds"] == 0
    # 'at_selection' ignores items without a recorded prediction; here the same seeds
    only = select("lsb-knn", pool, 10_000, seed=3, order="badness", seeds_from="at_selection")
    assert set(only.ids.tolist()) == set(sel.ids.tolist())


def test_lsb_lt_lookalike_negatives_use_the_same_judgement():
    from mmal.select.lsb import lookalike_training_set

    pool, judged, prior = _fitted_pool_with_prior(seed=1)
    eligible = (pool.labels >= 0) & (pool.split != "test")
    lab = np.flatnonzero(eligible)
    view = pool.probs[lab].copy()
    have = np.isin(lab, judged)
    view[have] = prior[lab[have]]  # 'auto': recorded where known, current elsewhere
    wrong = lab[view.argmax(1) != pool.labels[lab]]
    rows, is_seed = lookalike_training_set(pool, eligible, wrong)
    assert set(rows[is_seed].tolist()) == set(wrong.tolist())
    assert set(rows[~is_seed].tolist()) == set(lab.tolist()) - set(wrong.tolist())


def test_lsb_rejects_an_unknown_seed_source():
    pool, _, _ = _fitted_pool_with_prior()
    with pytest.raises(ConfigError, match="seeds_from"):
        select("lsb-knn", pool, 5, seeds_from="oracle")
