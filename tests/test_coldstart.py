"""Cold-start strategies (METHODS F): properties, ActiveFT loss and pick rule, and TypiClust /
ProbCover against brute-force references written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmal.errors import ConfigError
from mmal.loop.pretrain import check_cold_strategy, cold_start_initial
from mmal.select import select
from mmal.select.registry import cold_start_strategies
from mmal.select.activeft import greedy_unique_pick, parametric_selection
from mmal.select.coldstart import cold_pool
from mmal.select.probcover import purity_delta


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pool(n=90, seed=0, with_mmssl=True, test_every=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    raw = {"image": z @ rng.normal(size=(4, 10)) + 0.2 * rng.normal(size=(n, 10)),
           "text": z @ rng.normal(size=(4, 6)) + 0.2 * rng.normal(size=(n, 6))}
    mm = {"image": z @ rng.normal(size=(4, 8)) + 0.3 * rng.normal(size=(n, 8)),
          "text": z @ rng.normal(size=(4, 8)) + 0.3 * rng.normal(size=(n, 8))} if with_mmssl else None
    split = np.array(["test" if test_every and i % test_every == 0 else "pool" for i in range(n)])
    return cold_pool([f"i{i:03d}" for i in range(n)], raw, mm, n_classes=3, split=split)


FAST = {"activeft": {"steps": 40}, "mm-activeft": {"steps": 40}, "mmcsal": {"steps": 40}}
COLD_START_STRATEGIES = cold_start_strategies()


def test_the_registry_marks_exactly_the_cold_start_strategies():
    assert set(COLD_START_STRATEGIES) == {"random", "coreset", "kmeans", "typiclust", "probcover", "activeft",
                                          "mm-activeft", "mmcsal"}


@pytest.mark.parametrize("name", COLD_START_STRATEGIES)
@pytest.mark.parametrize("budget", [1, 7])
def test_exactly_b_unique_ids_with_nothing_labeled_and_deterministic(name, budget):
    pool = _pool(test_every=5)
    params = FAST.get(name, {})
    a = select(name, pool, budget, seed=3, **params)
    b = select(name, pool, budget, seed=3, **params)
    assert len(a) == budget and len(set(a.ids)) == budget
    assert not any(int(i[1:]) % 5 == 0 for i in a.ids)  # never a test item
    np.testing.assert_array_equal(a.ids, b.ids)
    if name in ("random", "coreset", "activeft", "mm-activeft", "mmcsal"):  # random starts: the seed matters
        others = [select(name, pool, budget, seed=s, **params).ids for s in range(4, 9)]
        assert any(set(o) != set(a.ids) for o in others)


@pytest.mark.parametrize("name", ["kmeans", "typiclust", "probcover", "activeft"])
def test_raw_features_work_and_budget_above_pool_is_clipped(name):
    pool = _pool(n=20, with_mmssl=False)
    sel = select(name, pool, 50, seed=0, features="raw", **FAST.get(name, {}))
    assert sorted(sel.ids) == sorted(pool.ids)
    assert sel.info["features"] == "raw"


def test_mm_strategies_need_a_shared_space():
    pool = _pool(with_mmssl=False)
    for name in ("mm-activeft", "mmcsal"):
        with pytest.raises(ConfigError, match="shared"):
            select(name, pool, 3, seed=0, features="raw")
    with pytest.raises(ConfigError, match="mmal pretrain"):
        select("activeft", pool, 3, seed=0, features="mmssl")


def test_labeled_items_are_excluded():
    pool = _pool()
    lab = np.zeros(len(pool), bool)
    lab[:30] = True
    for name in COLD_START_STRATEGIES:
        sel = select(name, pool, 5, labeled_mask=lab, seed=0, **FAST.get(name, {}))
        assert len(sel) == 5 and all(int(i[1:]) >= 30 for i in sel.ids)


def test_activeft_loss_decreases_paper_and_official():
    x = _unit(np.random.default_rng(1).normal(size=(200, 6))).astype(np.float32)
    for official in (False, True):
        out = parametric_selection([x], 10, np.random.default_rng(0), official=official, steps=300)
        loss = out["loss"]
        assert loss[-20:].mean() < loss[:20].mean() - 0.05
        assert loss[-1] < loss[0]


def test_activeft_paper_loss_value_at_step_zero():
    # step-0 loss = the METHODS F formula at the initial thetas (random rows), computed here
    x = _unit(np.random.default_rng(2).normal(size=(40, 3))).astype(np.float64)
    rng = np.random.default_rng(5)
    init = np.sort(np.random.default_rng(5).choice(40, size=4, replace=False))
    out = parametric_selection([x.astype(np.float32)], 4, rng, steps=1)
    np.testing.assert_array_equal(out["init"], init)
    th, tau = x[init], 0.07
    s = (x @ th.T).max(1) / tau
    tt = th @ th.T / tau
    div = np.mean([np.log(sum(np.exp(tt[j, k]) for k in range(4) if k != j)) for j in range(4)])
    assert out["loss"][0] == pytest.approx(-s.mean() + div, rel=1e-4)


def test_pick_is_each_theta_takes_its_most_similar_sample_not_yet_taken():
    x = _unit(np.random.default_rng(3).normal(size=(150, 5))).astype(np.float32)
    out = parametric_selection([x], 12, np.random.default_rng(0), steps=100)
    theta = out["theta"][0]
    taken, expect = set(), []
    for j in range(len(theta)):
        order = sorted(range(len(x)), key=lambda i: (-float(x[i] @ theta[j]), i))
        pick = next(i for i in order if i not in taken)
        taken.add(pick)
        expect.append(pick)
    np.testing.assert_array_equal(out["rows"], expect)


def test_greedy_pick_fallback_when_top_rows_are_taken():
    # all thetas equal: with top=2 most thetas must fall back to a full pass
    x = _unit(np.random.default_rng(4).normal(size=(30, 3))).astype(np.float32)
    th = np.repeat(x[:1], 6, axis=0)
    rows, _ = greedy_unique_pick([x], [th], top=2)
    expect = np.argsort(-(x @ x[0]), kind="stable")[:6]
    np.testing.assert_array_equal(rows, expect)


def test_mmcsal_printed_sign_lowers_and_corrected_raises_cross_modal_similarity():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    a = _unit(z @ rng.normal(size=(4, 8)) + 0.5 * rng.normal(size=(300, 8))).astype(np.float32)
    b = _unit(z @ rng.normal(size=(4, 8)) + 0.5 * rng.normal(size=(300, 8))).astype(np.float32)
    cross = {}
    for align in ("printed", "corrected"):
        out = parametric_selection([a, b], 10, np.random.default_rng(1), objective="mmcsal", align=align,
                                   lambda_align=2.0, steps=300, lr=1e-2)
        ta, tb = out["theta"]
        cross[align] = float(np.mean(ta @ tb.T))
    assert cross["corrected"] > cross["printed"] + 0.05


def test_kmeans_takes_one_item_per_well_separated_blob():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(5, 6))) * 10
    x = np.concatenate([c + 0.05 * rng.normal(size=(12, 6)) for c in centres])
    pool = cold_pool([f"i{i:03d}" for i in range(len(x))], {"x": x})
    sel = select("kmeans", pool, 5, seed=0, features="raw")
    blobs = {int(i[1:]) // 12 for i in sel.ids}
    assert blobs == set(range(5))


def _brute_typicality(x, k):
    n = len(x)
    out = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        out.append(1.0 / (np.mean(d[:k]) + 1e-5))
    return np.array(out)


def _brute_typiclust(x, free: dict, visits) -> list:
    """Each visit to cluster c takes its free member of highest brute-force typicality."""
    expect = []
    for c in visits:
        members = free[c]
        t = _brute_typicality(x[members], min(20, len(members) // 2))
        pick = members[int(np.argmax(t))]
        expect.append(pick)
        members.remove(pick)
    return expect


def test_typiclust_matches_brute_force_on_separated_clusters():
    rng = np.random.default_rng(7)
    sizes = [16, 14, 12, 10, 3]  # the last cluster is too small (<= 5) and is skipped
    dirs = _unit(rng.normal(size=(len(sizes), 5)))
    x = np.concatenate([_unit(d + 0.08 * rng.normal(size=(s, 5))) for d, s in zip(dirs, sizes)])
    start = np.cumsum([0] + sizes)
    pool = cold_pool([f"i{i:03d}" for i in range(len(x))], {"x": x})  # unit rows: features = x
    budget = 5  # visits the 4 kept clusters largest first, then the largest again
    sel = select("typiclust", pool, budget, seed=0, features="raw", max_clusters=5)
    free = {c: list(range(start[c], start[c + 1])) for c in range(4)}
    assert [int(i[1:]) for i in sel.ids] == _brute_typiclust(x, free, [0, 1, 2, 3, 0])


def _brute_probcover(x, delta, cand, budget):
    covered, picks = set(), []
    n = len(x)
    ball = [{j for j in range(n) if np.linalg.norm(x[i] - x[j]) < delta} for i in range(n)]
    for _ in range(budget):
        gains = [(len(ball[i] - covered), -i) for i in cand if i not in picks]
        g, negi = max(gains)
        if g == 0:
            break
        picks.append(-negi)
        covered |= ball[-negi]
    return picks


def test_probcover_matches_brute_force_greedy_coverage():
    rng = np.random.default_rng(3)
    x = _unit(rng.normal(size=(60, 3)))
    pool = cold_pool([f"i{i:03d}" for i in range(60)], {"x": x})
    sel = select("probcover", pool, 8, seed=0, features="raw", delta=0.6)
    assert sel.info["delta"] == 0.6 and sel.info["delta_rule"] == "given"
    expect = _brute_probcover(x, 0.6, list(range(60)), 8)
    assert [int(i[1:]) for i in sel.ids][:len(expect)] == expect
    np.testing.assert_array_equal(sel.score[:len(expect)],
                                  [len({j for j in range(60) if np.linalg.norm(x[p] - x[j]) < 0.6}
                                       - set().union(*[{j for j in range(60) if np.linalg.norm(x[q] - x[j]) < 0.6}
                                                       for q in expect[:k]])) for k, p in enumerate(expect)])


def test_probcover_fills_randomly_once_everything_is_covered():
    x = _unit(np.random.default_rng(0).normal(size=(20, 3)))
    pool = cold_pool([f"i{i:03d}" for i in range(20)], {"x": x})
    sel = select("probcover", pool, 6, seed=0, features="raw", delta=5.0)  # one ball covers all
    assert len(set(sel.ids)) == 6 and sel.info["n_random_fill"] == 5 and sel.info["coverage"] == 1.0


def test_probcover_graph_sample_keeps_labeled_items_and_covers_the_rest():
    rng = np.random.default_rng(2)
    axes = np.eye(3)
    sizes = [60, 20, 20]  # blob 0 is the largest, and its first 5 items are labeled
    x = np.concatenate([_unit(a + 0.01 * rng.normal(size=(m, 3))) for a, m in zip(axes, sizes)])
    blob = np.repeat(np.arange(3), sizes)
    pool = cold_pool([f"i{i:03d}" for i in range(len(x))], {"x": x})
    labeled = np.zeros(len(x), bool)
    labeled[:5] = True
    sel = select("probcover", pool, 2, seed=0, features="raw", delta=0.3, graph_max=40, labeled_mask=labeled)
    rows = [int(i[1:]) for i in sel.ids]
    assert sel.info["graph_items"] == 40 and sel.info["graph_sampled"] is True
    assert len(set(rows)) == 2 and not labeled[rows].any()
    # the labeled balls cover blob 0 in the sample, so one pick goes to each other blob
    # (without the labeled items, blob 0's ~20 sampled members would win the first pick)
    assert sorted(blob[rows]) == [1, 2]
    full = select("probcover", pool, 2, seed=0, features="raw", delta=0.3, graph_max=None, labeled_mask=labeled)
    assert full.info["graph_items"] == 100 and full.info["graph_sampled"] is False
    assert sorted(blob[[int(i[1:]) for i in full.ids]]) == [1, 2]


def test_purity_delta_matches_brute_force_search():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(15, 2)), rng.normal(size=(15, 2)) + 2.5])
    pseudo = np.array([0] * 15 + [1] * 15)
    pseudo[[3, 20]] = pseudo[[20, 3]]  # two impure points
    d = np.linalg.norm(x[:, None] - x[None], axis=2)

    def purity(delta):
        return np.mean([np.all(pseudo[d[i] < delta] == pseudo[i]) for i in range(len(x))])

    for alpha in (0.95, 0.8, 0.5):
        cands = np.unique(d)
        best = max(c for c in cands if purity(c) >= alpha)
        got, pur = purity_delta(x.astype(np.float32), pseudo, alpha)
        assert got == pytest.approx(best, rel=1e-5)
        assert pur == pytest.approx(purity(best))


def test_probcover_purity_rule_is_recorded():
    sel = select("probcover", _pool(), 6, seed=0)
    assert sel.info["delta_rule"] == "purity" and sel.info["purity"] >= 0.95 and sel.info["delta"] > 0


def test_cold_start_initial_rows_and_errors():
    pool = _pool()
    feats = {m: np.asarray(v) for m, v in pool.modality.items()}
    pre = {"embeddings": {m[len("mmssl:"):]: v for m, v in pool.extras.items()}}
    cand = np.arange(10, 90)
    for strat in COLD_START_STRATEGIES:
        rows = cold_start_initial(feats, cand, 6, strat, seed=2, pretrain=pre, n_classes=3)
        assert len(rows) == 6 and len(set(rows.tolist())) == 6 and np.isin(rows, cand).all()
        again = cold_start_initial(feats, cand, 6, strat, seed=2, pretrain=pre, n_classes=3)
        np.testing.assert_array_equal(rows, again)
    with pytest.raises(ConfigError, match="needs MMSSL"):
        cold_start_initial(feats, cand, 6, "mmcsal", seed=0, pretrain=None)
    with pytest.raises(ConfigError, match="not a cold-start strategy"):
        cold_start_initial(feats, cand, 6, "entropy", seed=0, pretrain=None)


def test_warm_start_strategy_on_unlabeled_workspace_names_cold_strategies():
    with pytest.raises(ConfigError) as e:
        check_cold_strategy("entropy")
    assert "activeft" in str(e.value) and "mmcsal" in str(e.value) and "entropy" in str(e.value)
    check_cold_strategy("mmcsal")
    check_cold_strategy("activeft:0.5,random:0.5")
    with pytest.raises(ConfigError, match="badge"):
        check_cold_strategy("random:0.5,badge:0.5")


# ---------------------------------------------------------------------------------------
# the scale paths give the same picks as the direct computations
# ---------------------------------------------------------------------------------------
def test_greedy_pick_over_many_blocks_with_ties_matches_brute_force():
    rng = np.random.default_rng(11)
    base = _unit(rng.normal(size=(40, 4))).astype(np.float32)
    x = np.concatenate([base, base[:15], base[5:25]])  # exact duplicates: tied similarities
    th = _unit(rng.normal(size=(25, 4))).astype(np.float32)
    sim = x @ th.T
    for top, block, sub in ((1, 7, 2048), (3, 7, 2048), (64, 7, 2048), (3, 16, 5), (1, 16, 1)):
        # 11 (5) blocks: the threshold path; sub < block: the block compared a few rows at a time
        rows, sims = greedy_unique_pick([x], [th], top=top, block=block, sub=sub)
        taken, expect = set(), []
        for j in range(len(th)):
            order = sorted(range(len(x)), key=lambda i: (-float(sim[i, j]), i))
            pick = next(i for i in order if i not in taken)
            taken.add(pick)
            expect.append(pick)
        np.testing.assert_array_equal(rows, expect)
        np.testing.assert_allclose(sims, sim[expect, np.arange(len(th))], rtol=1e-6)


def test_typiclust_neighbour_cache_matches_brute_force_over_repeated_visits():
    rng = np.random.default_rng(5)
    sizes = [40, 34, 28]
    dirs = _unit(rng.normal(size=(len(sizes), 6)))
    x = np.concatenate([_unit(d + 0.15 * rng.normal(size=(s, 6))) for d, s in zip(dirs, sizes)])
    x = np.concatenate([x, x[[3, 50]]])  # two exact duplicates (in clusters 0 and 1)
    n = len(x)
    pool = cold_pool([f"i{i:03d}" for i in range(n)], {"x": x})
    budget = 15  # 5 visits per cluster: members are removed between visits
    # cache_min=4 puts every cluster on the cached path; shortlist_extra=1 forces rebuilds
    sel = select("typiclust", pool, budget, seed=0, features="raw", max_clusters=3, cache_min=4,
                 shortlist_extra=1)
    direct = select("typiclust", pool, budget, seed=0, features="raw", max_clusters=3, cache_min=10**9)
    assert list(sel.ids) == list(direct.ids)
    np.testing.assert_allclose(sel.score, direct.score, rtol=1e-12)
    # and the direct path equals a brute force written here, given its k-means clusters
    from mmal.select.coldstart import concat_features, pool_features, _fit_kmeans

    feats, _ = pool_features(pool, "raw")
    xc = concat_features(feats)
    _, assign, _ = _fit_kmeans(xc, 3, np.random.default_rng(0), 20, 100000)
    free = {c: [i for i in range(n) if assign[i] == c] for c in range(3)}
    sizes_c = np.bincount(assign, minlength=3)
    order = list(np.argsort(-sizes_c, kind="stable"))
    visits = [order[v % 3] for v in range(budget)]
    assert [int(i[1:]) for i in sel.ids] == _brute_typiclust(xc, free, visits)


def test_concat_rows_equals_concat_features_bitwise():
    from mmal.select.coldstart import concat_features, concat_rows

    rng = np.random.default_rng(2)
    feats = {"b": rng.normal(size=(50, 3)).astype(np.float32), "a": rng.normal(size=(50, 5)).astype(np.float32)}
    rows = np.array([7, 3, 3, 49, 0])
    full = np.concatenate([_unit(feats[m].astype(np.float64)) for m in ("a", "b")], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(concat_rows(feats, chunk=2), full, atol=1e-6)
    np.testing.assert_array_equal(concat_rows(feats, chunk=2), concat_features(feats))
    np.testing.assert_array_equal(concat_rows(feats, rows, chunk=2), concat_features(feats)[rows])


def test_activeft_step_gradient_equals_the_dense_max_formulation():
    """One step's gradient (argmax under no_grad, then the chosen entries with autograd) equals
    torch's gradient of the printed loss with max over the full similarity matrix."""
    import torch

    rng = np.random.default_rng(4)
    x = _unit(rng.normal(size=(60, 5))).astype(np.float32)
    out = parametric_selection([x], 6, np.random.default_rng(0), steps=1, lr=1e-3)  # one Adam step
    init = out["init"]
    # reference: dense formulation, one Adam step written here
    t = torch.nn.Parameter(torch.from_numpy(x[init].copy()))
    opt = torch.optim.Adam([t], lr=1e-3)
    th = torch.nn.functional.normalize(t, dim=1)
    xt = torch.from_numpy(x)
    s = (xt @ th.T).max(dim=1).values
    tt = th @ th.T
    div = torch.logsumexp((tt / 0.07).masked_fill(torch.eye(6, dtype=torch.bool), -np.inf), dim=1).mean()
    loss = -(s / 0.07).mean() + div
    assert out["loss"][0] == pytest.approx(float(loss.detach()), rel=1e-5)
    opt.zero_grad()
    loss.backward()
    opt.step()
    ref = torch.nn.functional.normalize(t.detach(), dim=1).numpy()
    np.testing.assert_allclose(out["theta"][0], ref, atol=1e-6)


def test_paired_cosine_in_blocks_equals_direct_mean():
    from mmal.models.mmssl import paired_cosine

    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(37, 4)), rng.normal(size=(37, 4))
    direct = np.mean(np.sum(_unit(a) * _unit(b), axis=1))
    rows = np.array([1, 5, 9, 30])
    assert paired_cosine({"a": a, "b": b}, block=5) == pytest.approx(direct, rel=1e-12)
    assert paired_cosine({"a": a, "b": b}, rows, block=3) == pytest.approx(
        np.mean(np.sum(_unit(a[rows]) * _unit(b[rows]), axis=1)), rel=1e-12)


@pytest.mark.parametrize("n_mod", [2, 3])
def test_mm_activeft_first_loss_equals_the_printed_uni_plus_cross_term(n_mod):
    """002 eq. 4.9 written out pair by pair here; the strategy computes it with M + 1 products."""
    import torch

    rng = np.random.default_rng(6)
    blocks = [_unit(rng.normal(size=(80, 4))).astype(np.float32) for _ in range(n_mod)]
    out = parametric_selection(blocks, 5, np.random.default_rng(0), objective="mm-activeft", steps=1)
    th = [_unit(b[out["init"]].astype(np.float64)) for b in blocks]
    uni = sum(b @ t.T for b, t in zip(blocks, th)) / n_mod
    pairs = [(a, c) for a in range(n_mod) for c in range(n_mod) if a != c]
    cross = sum(blocks[a] @ th[c].T for a, c in pairs) / len(pairs)
    s = (uni + cross).max(axis=1)
    tt = sum(t @ t.T for t in th) / n_mod
    div = float(torch.logsumexp(torch.from_numpy(tt / 0.07).masked_fill(torch.eye(5, dtype=torch.bool), -np.inf),
                                dim=1).mean())
    assert out["loss"][0] == pytest.approx(-(s / 0.07).mean() + div, rel=1e-5)


def test_parametric_selection_is_bitwise_repeatable_with_two_threads():
    """The chosen-entry gradient is accumulated deterministically (index_select's backward),
    so two runs with the same seed give the same thetas bit for bit, threads or not."""
    import torch

    rng = np.random.default_rng(9)
    a = _unit(rng.normal(size=(20000, 16))).astype(np.float32)
    b = _unit(a + 0.5 * rng.normal(size=(20000, 16))).astype(np.float32)
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [parametric_selection([a, b], 200, np.random.default_rng(0), objective="mmcsal", steps=15,
                                     batch_size=None) for _ in range(3)]
    finally:
        torch.set_num_threads(prev)
    for r in runs[1:]:
        for t0, t1 in zip(runs[0]["theta"], r["theta"]):
            np.testing.assert_array_equal(t0, t1)


@pytest.mark.parametrize("objective,m", [("activeft", 1), ("mmcsal", 2), ("mmcsal", 3), ("mm-activeft", 2),
                                         ("mm-activeft", 3)])
def test_nearest_theta_in_chunks_is_the_argmax_of_the_distribution_similarity(objective, m):
    from mmal.select.activeft import _nearest_theta

    rng = np.random.default_rng(8)
    xs = [_unit(rng.normal(size=(53, 5))).astype(np.float32) for _ in range(m)]
    ts = [_unit(rng.normal(size=(9, 5))).astype(np.float32) for _ in range(m)]
    # eq. 4.7 (mean of the uni-modal cosines) and eq. 4.9 (uni + mean of the cross-modal ones), float64
    x64, t64 = [x.astype(np.float64) for x in xs], [t.astype(np.float64) for t in ts]
    sim = sum(x @ t.T for x, t in zip(x64, t64)) / m
    if objective == "mm-activeft":
        sim = sim + sum(x64[a] @ t64[c].T for a in range(m) for c in range(m) if a != c) / (m * (m - 1))
    for chunk in (1, 4, 53, 512):
        pos = _nearest_theta([torch.from_numpy(x) for x in xs], [torch.from_numpy(t) for t in ts], objective,
                             m * (m - 1), chunk=chunk).numpy()
        assert pos.shape == (53,)
        np.testing.assert_allclose(sim[np.arange(53), pos], sim.max(1), atol=1e-6)
