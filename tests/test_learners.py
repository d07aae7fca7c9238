"""Learners: linear probe, late fusion, fusion; the shared contract and checkpoints."""

import math

import numpy as np
import pytest
import torch

from mmal.errors import ConfigError
from mmal.features.types import SequenceFeatures
from mmal.learners import make_learner


def _features(n=60, seed=0, audio=True, missing_text=()):
    """Text/image vectors with a class signal, audio frame sequences of varying length."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    ids = [f"i{i}" for i in range(n)]
    centres = rng.normal(size=(3, 8))
    text = [None if i in missing_text else (centres[y[i]] + 0.5 * rng.normal(size=8))[None] for i in range(n)]
    image = [(centres[y[i], ::-1] + 0.7 * rng.normal(size=8))[None] for i in range(n)]
    feats = {"text": SequenceFeatures.from_list(ids, text, 8), "image": SequenceFeatures.from_list(ids, image, 8)}
    if audio:
        aud = [None if i % 7 == 0 else rng.normal(size=(int(rng.integers(2, 9)), 6)) + y[i] for i in range(n)]
        feats["audio"] = SequenceFeatures.from_list(ids, aud, 6)
    return feats, y


def test_linear_matches_sklearn_on_normalised_blocks():
    from sklearn.linear_model import LogisticRegression

    feats, y = _features(audio=False, missing_text=(3, 10))
    tr = np.arange(0, 60, 2)
    L = make_learner("linear", seed=0, C=10.0)
    L.fit(feats, y, tr)
    # independent computation: normalise each modality, zero for a missing one, concatenate
    blocks = []
    for m in ("image", "text"):
        x = np.asarray(feats[m].pooled, np.float64)
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        x[~feats[m].present] = 0
        blocks.append(x)
    X = np.concatenate(blocks, 1)
    ref = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(X[tr], y[tr]).predict_proba(X)
    res = L.score(feats)
    np.testing.assert_allclose(res["probs"], ref, atol=1e-5)
    assert L.fused_blocks
    np.testing.assert_allclose(res["penultimate"], np.concatenate([res["modality"]["image"], res["modality"]["text"]], 1))


def test_linear_coalitions_drop_the_block_terms():
    feats, y = _features(audio=False)
    L = make_learner("linear", seed=0)
    L.fit(feats, y, np.arange(40))
    res = L.score(feats, coalitions=True)
    W, b = L.coef_, L.intercept_
    zt = res["modality"]["text"]  # blocks are [image | text]
    lg = zt @ W[:, 8:].T + b
    p = np.exp(lg - lg.max(1, keepdims=True))
    np.testing.assert_allclose(res["coalition_probs"]["text"], p / p.sum(1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(res["coalition_probs"][""], np.tile(np.exp(b - b.max()) / np.exp(b - b.max()).sum(), (60, 1)), atol=1e-6)


@pytest.mark.parametrize("fusion,query", [("avgpool", "vl"), ("vlmae", "learned"), ("vlmae", "vl"), ("none", "vl")])
def test_late_fusion_blocks_are_unimodal(fusion, query):
    """Changing one modality's input changes only its own z (and the logits only through it)."""
    feats, y = _features()
    L = make_learner("late-fusion", seed=0, model={"fusion": fusion, "vlmae_query": query}, train={"epochs": 5})
    L.fit(feats, y, np.arange(40))
    base = L.score(feats)
    changed = dict(feats)
    f = feats["image"]
    changed["image"] = SequenceFeatures(f.ids, np.asarray(f.pooled) * -1.5 + 0.3, f.offsets, np.asarray(f.seq) * -1.5 + 0.3, f.present)
    new = L.score(changed)
    others = [m for m in base["modality"] if m != "image"]
    for m in others:
        if m == "audio" and fusion == "vlmae" and query == "vl":
            continue  # eq. 7 anchors the audio attention on the vision-language block (documented)
        assert np.array_equal(base["modality"][m], new["modality"][m]), m
    assert not np.allclose(base["modality"]["image"], new["modality"]["image"])
    # logits are linear in the blocks: the change equals W_image (z' - z) (+ the audio block's change)
    W = L.net.fused.weight.detach().numpy().astype(np.float64)
    off = 0
    dl = np.zeros((60, 3))
    for m, d in L.net.dims.items():
        dl += (new["modality"][m].astype(np.float64) - base["modality"][m]) @ W[:, off:off + d].T
        off += d
    lb = np.log(base["probs"].astype(np.float64)); ln = np.log(new["probs"].astype(np.float64))
    np.testing.assert_allclose((ln - lb) - (ln - lb).mean(1, keepdims=True), dl - dl.mean(1, keepdims=True), atol=2e-4)


def test_vlmae_equals_eq7_computed_naively():
    """The packed, reordered VLMAE equals softmax((W_k h + b_k)·q / sqrt(d_A)) · (W_v h + b_v) per clip."""
    feats, y = _features()
    L = make_learner("late-fusion", seed=1, model={"fusion": "vlmae", "d_attn": 5, "vlmae_value": "projected"}, train={"epochs": 3})
    L.fit(feats, y, np.arange(40))
    res = L.score(feats)
    fp = L.net.frames["audio"]
    mu = fp.mu.numpy().astype(np.float64)
    Wq, bq = fp.q.weight.detach().numpy(), fp.q.bias.detach().numpy()
    Wk, bk = fp.k.weight.detach().numpy(), fp.k.bias.detach().numpy()
    Wv, bv = fp.v.weight.detach().numpy(), fp.v.bias.detach().numpy()
    anchor = np.concatenate([res["modality"]["image"], res["modality"]["text"]], 1).astype(np.float64)
    for i in range(60):
        h = np.asarray(feats["audio"].sequence(i), np.float64)
        if len(h) == 0:
            assert np.all(res["modality"]["audio"][i] == 0)
            continue
        h = h - mu
        h = h / np.linalg.norm(h, axis=1, keepdims=True)
        q = Wq @ anchor[i] + bq
        s = (h @ Wk.T + bk) @ q / math.sqrt(5)
        a = np.exp(s - s.max()); a /= a.sum()
        z = a @ (h @ Wv.T + bv)
        scale = L.net.config.head_scale  # the audio block's norm relative to the others
        np.testing.assert_allclose(res["modality"]["audio"][i], scale * z / np.linalg.norm(z), atol=1e-4)


def test_bmmal_with_unit_weights_equals_badge_on_a_late_fusion_pool():
    from mmal.loop.core import score_pool
    from mmal.select import select

    feats, y = _features(n=90)
    L = make_learner("late-fusion", seed=0, model={"fusion": "avgpool"}, train={"epochs": 20})
    L.fit(feats, y, np.arange(30))
    pool = score_pool(L, feats, np.array([f"i{i}" for i in range(90)]), labels=np.where(np.arange(90) < 30, y, -1), coalitions=True)
    assert pool.fused_blocks
    a = select("bmmal", pool, 12, seed=3, weights="ones")
    b = select("badge", pool, 12, seed=3)
    assert a.ids.tolist() == b.ids.tolist()


def test_same_seed_same_model_and_different_seed_differs():
    feats, y = _features()
    s = [make_learner("late-fusion", seed=k, model={"fusion": "vlmae"}, train={"epochs": 5}) for k in (4, 4, 5)]
    for L in s:
        L.fit(feats, y, np.arange(40))
    sd = [L.net.state_dict() for L in s]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert not all(torch.equal(sd[0][k], sd[2][k]) for k in sd[0])


@pytest.mark.parametrize("name,params", [("linear", {}), ("late-fusion", {"train": {"epochs": 3}}),
                                         ("fusion", {"model": {"d_model": 16, "n_heads": 2, "n_layers": 1}, "train": {"epochs": 2}})])
def test_checkpoint_round_trip(tmp_path, name, params):
    from mmal.loop.core import load_learner
    from mmal.train.checkpoint import save_learner

    feats, y = _features()
    L = make_learner(name, seed=0, **params)
    L.fit(feats, y, np.arange(40))
    save_learner(tmp_path / "m.pt", L, extra={"round": 1})
    L2, extra = load_learner(tmp_path / "m.pt")
    assert extra == {"round": 1} and L2.name == name
    np.testing.assert_allclose(L.score(feats)["probs"], L2.score(feats)["probs"], atol=1e-6)


@pytest.mark.parametrize("weight", [None, "balanced"])
def test_probe_c_path_with_warm_starts_reaches_each_cold_sklearn_solution(weight):
    from sklearn.linear_model import LogisticRegression

    from mmal.learners.linear import LinearProbe

    rng = np.random.default_rng(5)
    y = np.array([0] * 30 + [1] * 20 + [2] * 10)
    x = rng.normal(size=(60, 12)) + 1.5 * np.eye(3)[y] @ rng.normal(size=(3, 12))
    Cs = [0.1, 1.0, 10.0, 100.0]
    path = LinearProbe(4, 0, class_weight=weight).fit_path(x, y, 4, Cs, tol=1e-10)
    assert len(path) == len(Cs)
    sw = np.ones(len(y)) if weight is None else (len(y) / (3 * np.bincount(y)))[y]  # "balanced", written out

    def objective(C, w, b):  # scikit-learn's: C * sum of weighted log-losses + ||w||^2 / 2
        lg = x @ w.T + b
        lg = lg - lg.max(1, keepdims=True)
        return -C * (sw * (lg[np.arange(len(y)), y] - np.log(np.exp(lg).sum(1)))).sum() + 0.5 * (w ** 2).sum()

    for C, (coef, icpt) in zip(Cs, path):
        ref = LogisticRegression(C=C, class_weight=weight, tol=1e-10, max_iter=10000).fit(x, y)
        # the same optimum: equal objectives (relative 1e-9) and the same decisions on the rows
        assert objective(C, coef[:3], icpt[:3]) == pytest.approx(objective(C, ref.coef_, ref.intercept_), rel=1e-9)
        np.testing.assert_allclose(x @ coef[:3].T + icpt[:3], ref.decision_function(x), atol=1e-3)
        assert icpt[3] == -30.0 and not coef[3].any()  # class 3 has no label
    # the path really moves with C (a warm start that did not refit would repeat the first solution)
    assert np.abs(path[0][0]).sum() < 0.5 * np.abs(path[-1][0]).sum()


def test_unknown_learner_and_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="unknown learner 'svm'"):
        make_learner("svm")
    with pytest.raises(ConfigError, match="unknown model keys"):
        make_learner("late-fusion", model={"d_model": 8})
    with pytest.raises(ConfigError, match="unknown parameters"):
        make_learner("linear", foo=1)
    with pytest.raises(ConfigError, match="threads = 0"):
        make_learner("linear", threads=0)
    with pytest.raises(ConfigError, match="TrainConfig"):
        make_learner("late-fusion", train={"lr": -1})


def test_linear_has_no_mc_dropout():
    feats, y = _features()
    L = make_learner("linear")
    L.fit(feats, y, np.arange(40))
    with pytest.raises(ConfigError, match="BALD"):
        L.mc_probs(feats, 3, 0)



def test_learner_checkpoint_refuses_bad_files(tmp_path):
    from mmal.errors import WorkspaceError
    from mmal.loop.core import load_learner

    with pytest.raises(WorkspaceError, match="checkpoint not found; run `mmal train` again"):
        load_learner(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(WorkspaceError, match="not a readable checkpoint"):
        load_learner(tmp_path / "bad.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(WorkspaceError, match="mmal-learner/1"):
        load_learner(tmp_path / "other.pt")
