import numpy as np
import pytest
import torch

from mmal.errors import ConfigError, WorkspaceError
from mmal.features.types import SequenceFeatures
from mmal.models import ModelConfig
from mmal.train import TrainConfig, collate, fit, load_checkpoint, predict_proba, save_checkpoint, score

N = 60
DIMS = {"text": 12, "image": 16, "audio": 8}


def make_data(seed=0, n=N, dims=DIMS, audio_missing_frac=0.3, audio_only_signal=False):
    """Synthetic class-separable features; item i lacks audio with prob audio_missing_frac."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    feats = {}
    for m, d in dims.items():
        protos = rng.normal(size=(3, d)) * 2
        seqs = []
        for i in range(n):
            if m == "audio" and rng.random() < audio_missing_frac:
                seqs.append(None)
                continue
            T = int(rng.integers(2, 9))
            signal = protos[y[i]] if (m == "audio" or not audio_only_signal) else 0
            seqs.append((rng.normal(size=(T, d)) + signal).astype(np.float32))
        feats[m] = SequenceFeatures.from_list([f"i{i}" for i in range(n)], seqs, d)
    return feats, y


def mcfg(feats, **kw):
    base = dict(d_model=16, n_heads=2, mlp_hidden=16, d_attn=8, n_layers=1)
    base.update(kw)
    return ModelConfig.from_features(feats, 3, **base)


TC = TrainConfig(epochs=4, batch_size=16, threads=1)
TR, VA = np.arange(40), np.arange(40, 60)


def test_collate_shapes_and_masks():
    feats, _ = make_data()
    b = collate(feats, [0, 1, 2], drop=("image",))
    for m, (x, mask) in b.items():
        L = [len(feats[m].sequence(i)) if feats[m].present[i] and m != "image" else 0 for i in (0, 1, 2)]
        assert x.shape == (3, max(1, max(L)), DIMS[m]) and x.dtype == torch.float32
        if m == "image":
            assert not mask.any()
        else:
            assert mask.sum(1).tolist() == L
            assert torch.equal(x[0, : L[0]], torch.from_numpy(feats[m].sequence(0)))


@pytest.mark.parametrize("fusion", ["none", "avgpool", "vlmae"])
def test_fit_and_score_with_missing_audio(fusion):
    feats, y = make_data()
    assert not feats["audio"].present.all()
    model, hist = fit(feats, y, TR, VA, mcfg(feats, fusion=fusion, heads="fused+unimodal"), TC, progress=False)
    s = score(model, feats, progress=False, coalitions=True)
    for p in [s["probs"], *s["unimodal_probs"].values(), *s["coalition_probs"].values()]:
        assert p.shape == (N, 3) and np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert s["embedding"].shape == (N, 16) and s["penultimate"].shape == (N, 16)
    assert set(s["coalition_probs"]) == {"", "audio", "image", "text", "audio+image", "audio+text", "image+text", "audio+image+text"}
    np.testing.assert_allclose(s["coalition_probs"]["audio+image+text"], s["probs"], atol=1e-6)
    assert np.array_equal(s["present"]["audio"], feats["audio"].present)
    assert len(hist["epochs"]) >= 1 and np.isfinite(hist["epochs"][-1]["train_loss"])


def test_coalition_equals_input_without_that_modality():
    feats, y = make_data()
    model, _ = fit(feats, y, TR, VA, mcfg(feats, fusion="vlmae"), TC, progress=False)
    s = score(model, feats, coalitions=[("text",), ("image", "text")], progress=False)
    only_text = score(model, {"text": feats["text"]}, progress=False)["probs"]
    np.testing.assert_allclose(s["coalition_probs"]["text"], only_text, atol=1e-6)
    no_audio = score(model, {"text": feats["text"], "image": feats["image"]}, progress=False)["probs"]
    np.testing.assert_allclose(s["coalition_probs"]["image+text"], no_audio, atol=1e-6)
    assert not np.allclose(s["coalition_probs"]["text"], s["probs"])


def test_learns_separable_data():
    feats, y = make_data(seed=3, n=120)
    cfg = TrainConfig(epochs=15, batch_size=16, threads=1, patience=None)
    model, hist = fit(feats, y, np.arange(80), np.arange(80, 120), mcfg(feats, fusion="avgpool"), cfg, progress=False)
    acc = (predict_proba(model, feats, np.arange(80, 120)).argmax(1) == y[80:]).mean()
    assert acc >= 0.8
    assert hist["epochs"][-1]["train_loss"] < hist["epochs"][0]["train_loss"]


def test_vlmae_uses_audio_signal():
    """Only the audio carries the label: VLMAE must learn it, fusion 'none' cannot."""
    feats, y = make_data(seed=4, n=120, audio_missing_frac=0.0, audio_only_signal=True)
    cfg = TrainConfig(epochs=15, batch_size=16, threads=1, patience=None)
    accs = {}
    for fusion in ("none", "vlmae"):
        model, _ = fit(feats, y, np.arange(80), None, mcfg(feats, fusion=fusion), cfg, progress=False)
        accs[fusion] = (predict_proba(model, feats, np.arange(80, 120)).argmax(1) == y[80:]).mean()
    assert accs["vlmae"] >= 0.8 and accs["none"] < 0.6


def test_same_seed_same_model_different_seed_differs():
    feats, y = make_data()
    torch.manual_seed(123)
    a, _ = fit(feats, y, TR, VA, mcfg(feats, heads="fused+unimodal"), TC, progress=False)
    torch.rand(5)  # global RNG state must not matter
    b, _ = fit(feats, y, TR, VA, mcfg(feats, heads="fused+unimodal"), TC, progress=False)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    np.testing.assert_array_equal(predict_proba(a, feats), predict_proba(b, feats))
    c, _ = fit(feats, y, TR, VA, mcfg(feats, heads="fused+unimodal"), TrainConfig(epochs=4, batch_size=16, seed=1), progress=False)
    assert not np.array_equal(predict_proba(a, feats), predict_proba(c, feats))


def test_text_only():
    feats, y = make_data(dims={"text": 12})
    model, _ = fit(feats, y, TR, VA, None, TC, progress=False)
    assert model.config.input_dims == {"text": 12} and model.config.n_classes == 3
    s = score(model, feats, coalitions=True, progress=False)
    assert s["probs"].shape == (N, 3) and set(s["coalition_probs"]) == {"", "text"}
    assert set(s["modality"]) == {"text"} and s["unimodal_probs"] == {}


def test_early_stopping_restores_best():
    feats, y = make_data()
    y_noise = (y + np.random.default_rng(99).integers(1, 3, N)) % 3  # val labels always wrong -> val loss rises
    y2 = y.copy()
    y2[VA] = y_noise[VA]
    cfg = TrainConfig(epochs=30, batch_size=16, patience=2, lr=3e-3, threads=1)
    model, hist = fit(feats, y2, TR, VA, mcfg(feats), cfg, progress=False)
    losses = [e["val_loss"] for e in hist["epochs"]]
    assert hist["stopped_early"] and len(losses) < 30
    best = hist["best_epoch"]
    assert losses[best] == min(losses) and len(losses) == best + 1 + 2
    p = np.clip(predict_proba(model, feats, VA)[np.arange(len(VA)), y2[VA]], 1e-12, None)
    assert -np.log(p).mean() == pytest.approx(losses[best], rel=1e-5)


def test_unimodal_loss_weighting_is_mean_over_heads():
    from mmal.train.loop import _loss

    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2, 1])
    out = {
        "logits": torch.randn(4, 3),
        "unimodal_logits": {"text": torch.randn(4, 3), "audio": torch.randn(4, 3)},
        "present": {"text": torch.ones(4, dtype=torch.bool), "audio": torch.tensor([True, False, True, True])},
    }
    ce = torch.nn.functional.cross_entropy
    expect = (ce(out["logits"], y) + ce(out["unimodal_logits"]["text"], y) + ce(out["unimodal_logits"]["audio"][[0, 2, 3]], y[[0, 2, 3]])) / 3
    assert torch.allclose(_loss(out, y, TrainConfig(), None), expect)
    w = _loss(out, y, TrainConfig(unimodal_weight=0.0), None)
    assert torch.allclose(w, ce(out["logits"], y))


def test_checkpoint_round_trip(tmp_path):
    feats, y = make_data()
    mc = mcfg(feats, fusion="vlmae", heads="fused+unimodal")
    model, _ = fit(feats, y, TR, VA, mc, TC, progress=False)
    path = save_checkpoint(tmp_path / "r1" / "model.pt", model, mc, TC, extra={"round": 1})
    m2, mc2, tc2, extra = load_checkpoint(path)
    assert mc2 == mc and tc2 == TC and extra == {"round": 1}
    a, b = score(model, feats, progress=False), score(m2, feats, progress=False)
    np.testing.assert_array_equal(a["probs"], b["probs"])
    np.testing.assert_array_equal(a["unimodal_probs"]["audio"], b["unimodal_probs"]["audio"])
    with pytest.raises(WorkspaceError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(WorkspaceError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_input_errors():
    feats, y = make_data()
    with pytest.raises(ConfigError, match="finetune_towers"):
        fit(feats, y, TR, VA, None, TrainConfig(finetune_towers=True), progress=False)
    with pytest.raises(ConfigError, match="one label per item"):
        fit(feats, y[:10], TR, VA, None, TC, progress=False)
    with pytest.raises(ConfigError, match="n_classes"):
        fit(feats, y + 5, TR, VA, mcfg(feats), TC, progress=False)
    bad = dict(feats)
    bad["image"] = feats["image"].take(np.arange(10))
    with pytest.raises(ConfigError, match="aligned"):
        fit(bad, y, TR, VA, None, TC, progress=False)
    with pytest.raises(ConfigError, match="dimension"):
        fit(feats, y, TR, VA, ModelConfig(input_dims={"text": 5, "image": 16, "audio": 8}, n_classes=3), TC, progress=False)
    yf = y.astype(float)
    yf[0] = np.nan  # unlabeled item inside train_idx
    with pytest.raises(ConfigError, match="integers >= 0"):
        fit(feats, yf, TR, VA, None, TC, progress=False)
    with pytest.raises(ConfigError, match="monitor"):
        TrainConfig(monitor="f1")
