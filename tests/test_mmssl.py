"""MMSSL (002 eq. 4.1-4.5): concentration by hand, loss pieces, training, gap metrics, workspace store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmal.errors import ConfigError
from mmal.cluster import assign_to_centres, kmeans, kmeans_sampled
from mmal.models.mmssl import (
    MMSSLConfig,
    cross_modal_infonce,
    embed,
    modality_gap,
    paired_cosine,
    prototype_concentration,
    prototype_loss,
)
from mmal.train.mmssl import train_mmssl


def test_concentration_matches_hand_computation():
    # 3 clusters: c0 has 2 points at distances 0.2, 0.4; c1 has 3 points at 0.1, 0.1, 0.4;
    # c2 has 1 point (gets the max phi of the others)
    dist = np.array([0.2, 0.4, 0.1, 0.1, 0.4, 0.3])
    assign = np.array([0, 0, 1, 1, 1, 2])
    phi0 = 0.3 / math.log(2 + 10)
    phi1 = 0.2 / math.log(3 + 10)
    raw = np.array([phi0, phi1, max(phi0, phi1)])
    lo, hi = np.percentile(raw, 10), np.percentile(raw, 90)  # numpy's linear interpolation
    clipped = np.clip(raw, lo, hi)
    expected = 0.07 * clipped / clipped.mean()
    got = prototype_concentration(dist, assign, 3, alpha=10, tau=0.07, clip_percentiles=(10, 90))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got.mean() == pytest.approx(0.07)
    # by hand: phi0 = 0.120730, phi1 = 0.077974 -> 10th pct = 0.086525, 90th = 0.120730
    assert raw[0] == pytest.approx(0.12073, abs=1e-5) and raw[1] == pytest.approx(0.077974, abs=1e-5)


def test_concentration_without_clipping_is_plain_rescale():
    dist = np.array([1.0, 1.0, 2.0, 2.0])
    assign = np.array([0, 0, 1, 1])
    got = prototype_concentration(dist, assign, 2, clip_percentiles=(0, 100), tau=0.5)
    # both clusters have 2 points: phi = mean / log 12, ratio 1 : 2, mean rescaled to 0.5
    np.testing.assert_allclose(got, [1 / 3, 2 / 3])


def test_concentration_treats_a_zero_spread_cluster_like_a_single_point():
    # c0: 3 identical points (distance 0, e.g. duplicated titles); c1: 2 points at 0.2, 0.4;
    # c2: 2 points at 0.1, 0.3. c0 gives no spread estimate -> max phi of the others (as a singleton).
    dist = np.array([0.0, 0.0, 0.0, 0.2, 0.4, 0.1, 0.3])
    assign = np.array([0, 0, 0, 1, 1, 2, 2])
    phi1 = 0.3 / math.log(2 + 10)
    phi2 = 0.2 / math.log(2 + 10)
    raw = np.array([max(phi1, phi2), phi1, phi2])
    expected = 0.07 * raw / raw.mean()
    got = prototype_concentration(dist, assign, 3, alpha=10, tau=0.07, clip_percentiles=(0, 100))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert (got > 0).all()


def test_training_stays_finite_with_many_duplicate_rows():
    # one modality takes only 6 distinct values over 200 items (as synthetic-video's titles):
    # several prototypes then sit on exact duplicates; without the zero-spread rule phi = 0 there
    rng = np.random.default_rng(0)
    n = 200
    z = rng.normal(size=(n, 4))
    groups = rng.integers(0, 6, size=n)
    feats = {"t": rng.normal(size=(6, 8))[groups], "v": z @ rng.normal(size=(4, 9)) + 0.1 * rng.normal(size=(n, 9))}
    res = train_mmssl(feats, MMSSLConfig(dim=8, hidden=16, epochs=12, warmup_epochs=2, batch_size=64,
                                         n_prototypes=20, seed=0))
    assert all(math.isfinite(h["loss"]) for h in res.history)
    assert all(np.isfinite(e).all() for e in res.embeddings.values())


def test_infonce_matches_formula():
    g = torch.Generator().manual_seed(0)
    za = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    zb = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    tau = 0.07
    s = (za @ zb.T).double().numpy() / tau
    l1 = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(5)])
    l2 = -np.mean([s[i, i] - np.log(np.exp(s[:, i]).sum()) for i in range(5)])
    assert cross_modal_infonce(za, zb, tau).item() == pytest.approx(0.5 * l1 + 0.5 * l2, rel=1e-5)


def test_prototype_loss_divides_each_prototype_logit_by_its_phi():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    protos = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    phi = torch.tensor([0.1, 0.2])
    assign = torch.tensor([0, 1])
    logits = np.array([[1.0 / 0.1, 0.6 / 0.2], [0.0 / 0.1, 0.8 / 0.2]])
    expected = -np.mean([logits[i, assign[i]] - np.log(np.exp(logits[i]).sum()) for i in range(2)])
    assert prototype_loss(z, assign, protos, phi).item() == pytest.approx(expected, rel=1e-5)


def test_modality_gap_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 6)) + 1.0
    b = rng.normal(size=(30, 6))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    got = modality_gap({"a": a, "b": b})
    assert got["S_uni"]["a"] == pytest.approx(np.mean(an @ an.T))
    assert got["S_cross"]["a|b"] == pytest.approx(np.mean(an @ bn.T))
    assert got["gap"]["a|b"] == pytest.approx(np.linalg.norm(an.mean(0) - bn.mean(0)))
    assert paired_cosine({"a": a, "b": b}) == pytest.approx(np.mean(np.sum(an * bn, axis=1)))


def _paired_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5))  # shared latent
    return {"x": z @ rng.normal(size=(5, 12)) + 0.1 * rng.normal(size=(n, 12)),
            "y": np.tanh(z @ rng.normal(size=(5, 9))) + 0.1 * rng.normal(size=(n, 9)),
            "w": z @ rng.normal(size=(5, 7)) + 0.1 * rng.normal(size=(n, 7))}


def test_training_reduces_loss_and_aligns_pairs():
    feats = _paired_data()
    cfg = MMSSLConfig(dim=16, hidden=32, epochs=25, warmup_epochs=5, batch_size=32, seed=0)
    res = train_mmssl(feats, cfg)
    assert res.history[-1]["cross"] < res.history[0]["cross"] * 0.7
    assert res.history[-1]["uni"] > 0 and not res.history[0]["prototypes"] and res.history[-1]["prototypes"]
    for m, e in res.embeddings.items():
        assert e.shape == (120, 16)
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # own pair much more similar than a random other item
    e = res.embeddings
    own = np.mean(np.sum(e["x"] * e["y"], 1))
    other = np.mean(np.sum(e["x"] * np.roll(e["y"], 7, axis=0), 1))
    assert own > other + 0.3
    assert set(res.metrics["gap"]) == {"w|x", "w|y", "x|y"}
    # deterministic by seed
    again = train_mmssl(feats, cfg)
    np.testing.assert_array_equal(again.embeddings["x"], res.embeddings["x"])


def test_assignment_step_is_the_nearest_centre():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(203, 5)).astype(np.float32)
    c = rng.normal(size=(7, 5)).astype(np.float32)
    d = ((x.astype(np.float64)[:, None, :] - c.astype(np.float64)[None]) ** 2).sum(2)  # [N, k], direct
    for kw in ({"block": 16}, {"max_block_elements": 50}):  # 13 blocks; 7 rows x 7 centres per block
        assign, d2 = assign_to_centres(x, c, **kw)
        np.testing.assert_allclose(d[np.arange(203), assign], d.min(1), atol=1e-5)
        np.testing.assert_allclose(d2, d.min(1), atol=1e-5)


def test_kmeans_sampled_fits_on_a_sample_and_assigns_every_row():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 6)) * 6
    x = (np.repeat(centres, 50, axis=0) + rng.normal(size=(200, 6))).astype(np.float32)
    cen, assign, d2 = kmeans_sampled(x, 4, iters=10, seed=3, fit_sample=60)
    assert cen.shape == (4, 6) and assign.shape == (200,) and d2.shape == (200,)
    d = ((x.astype(np.float64)[:, None, :] - cen.astype(np.float64)[None]) ** 2).sum(2)
    np.testing.assert_allclose(d[np.arange(200), assign], d.min(1), atol=1e-4)  # every row: its nearest centre
    # well separated blobs: the sample's centres still split the 4 blobs exactly
    blob = np.repeat(np.arange(4), 50)
    assert all(len(set(assign[blob == b])) == 1 for b in range(4)) and len(set(assign)) == 4
    # a sample at least as large as the pool is plain k-means on all rows
    full = kmeans_sampled(x, 4, iters=10, seed=3, fit_sample=200)
    ref = kmeans(x, 4, iters=10, seed=3)
    for a, b in zip(full, ref):
        np.testing.assert_array_equal(a, b)


def test_training_with_a_kmeans_sample_stays_finite():
    cfg = MMSSLConfig(dim=8, hidden=16, epochs=3, warmup_epochs=1, batch_size=16, kmeans_fit_sample=40,
                      n_prototypes=6)
    res = train_mmssl(_paired_data(90), cfg)
    assert res.history[-1]["prototypes"] and all(math.isfinite(h["loss"]) for h in res.history)


def test_embed_normalises_block_by_block_like_the_whole_array():
    res = train_mmssl(_paired_data(50), MMSSLConfig(dim=8, hidden=16, epochs=1, batch_size=16, prototypes=False))
    feats = {m: 3.0 * x for m, x in _paired_data(50).items()}  # not unit rows
    out = embed(res.heads, feats, block=7)
    for m, x in feats.items():
        unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        with torch.no_grad():
            ref = res.heads[m](torch.from_numpy(unit)).numpy()
        np.testing.assert_allclose(out[m], ref, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(out[m], axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ConfigError, match="non-finite"):
        embed(res.heads, {**feats, "x": np.where(np.arange(50)[:, None] == 44, np.nan, feats["x"])}, block=7)


def test_without_prototypes_has_no_uni_term():
    res = train_mmssl(_paired_data(60), MMSSLConfig(dim=8, hidden=16, epochs=3, batch_size=16, prototypes=False))
    assert all(h["uni"] == 0 and not h["prototypes"] for h in res.history)


def test_bad_input_is_a_config_error():
    with pytest.raises(ConfigError, match="at least two modalities"):
        train_mmssl({"x": np.ones((10, 3))})
    with pytest.raises(ConfigError, match="has 9 rows"):
        train_mmssl({"x": np.ones((10, 3)), "y": np.ones((9, 3))})
    with pytest.raises(ConfigError, match="non-finite"):
        train_mmssl({"x": np.full((10, 3), np.nan), "y": np.ones((10, 3))})


@pytest.mark.slow
def test_pretrain_workspace_stores_embeddings_and_feeds_cold_selection(tmp_path):
    """init -> encode (text + image) -> pretrain -> cold pool -> mmcsal; nothing stored on errors."""
    from PIL import Image

    from conftest import write_items
    from mmal.errors import WorkspaceError
    from mmal.engine import encode_workspace
    from mmal.loop.pretrain import (
        cold_select_workspace,
        cold_workspace_pool,
        load_pretrain,
        pretrain_workspace,
        workspace_has_labels,
    )
    from mmal.select import select
    from mmal.workspace.workspace import init_workspace

    rows = []
    for k in range(16):
        p = tmp_path / f"img{k}.png"
        Image.new("RGB", (32, 32), (40 + 12 * k, 200 - 10 * k, (k * 37) % 255)).save(p)
        rows.append({"id": f"m{k:02d}", "label": None, "split": "test" if k % 4 == 0 else "pool",
                     "text": f"a drawing number {k} of a {['cat', 'car', 'tree'][k % 3]}", "image": str(p)})
    ws = tmp_path / "ws"
    init_workspace(ws, write_items(tmp_path / "src", rows))
    encode_workspace(ws, progress=False)
    meta = pretrain_workspace(ws, epochs=4, warmup_epochs=1, dim=8, hidden=16, batch_size=8)
    folder = ws / "pretrain" / "default"
    assert meta["n_items"] == 16 and meta["n_train"] == 12 and meta["modalities"] == ["image", "text"]
    for m in ("image", "text"):
        e = np.load(folder / f"embedding.{m}.npy")
        assert e.shape == (16, 8)
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert set(meta["metrics"]) >= {"gap", "S_uni", "S_cross"}
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(WorkspaceError, match="--force"):
        pretrain_workspace(ws, epochs=1)
    with pytest.raises(ConfigError, match="unknown MMSSL parameter"):
        pretrain_workspace(ws, name="other", epoch=1)
    assert sorted(p.name for p in folder.iterdir()) == before and not (ws / "pretrain" / "other").exists()
    assert load_pretrain(ws)["embeddings"]["text"].shape == (16, 8)
    pool = cold_workspace_pool(ws)
    assert set(pool.extras) == {"mmssl:image", "mmssl:text"}
    sel = select("mmcsal", pool, 3, seed=0, steps=20)
    assert len(sel) == 3 and sel.info["features"] == "mmssl" and "cross_cosine_selected" in sel.info
    assert not any(int(i[1:]) % 4 == 0 for i in sel.ids)
    assert not workspace_has_labels(ws)
    with pytest.raises(ConfigError, match="cold-start strategy: activeft, coreset, kmeans, mm-activeft, mmcsal, probcover, random, typiclust$"):
        cold_select_workspace(ws, "entropy", 3)
    assert not (ws / "rounds" / "1").exists()
    out = cold_select_workspace(ws, "kmeans", 3, seed=0)
    assert out["round"] == 1 and out["n_selected"] == 3 and out["info"]["features"] == "mmssl"
    assert (ws / "rounds" / "1" / "selection.parquet").exists()
