import numpy as np
import pytest
import torch

from mmal.errors import ConfigError
from mmal.features.types import SequenceFeatures
from mmal.models import ModelConfig, MultimodalClassifier, VLMAEFusion, reduce_tokens
from mmal.train.data import collate

DIMS = {"text": 12, "image": 20, "audio": 8}


def small(**kw):
    base = dict(input_dims=DIMS, n_classes=3, d_model=16, n_heads=2, mlp_hidden=16, d_attn=8, max_tokens={"text": 6, "image": 10})
    base.update(kw)
    return ModelConfig(**base)


def feats(n=10, seed=0, absent_audio=(), dims=DIMS):
    rng = np.random.default_rng(seed)
    out = {}
    for m, d in dims.items():
        seqs = []
        for i in range(n):
            if m == "audio" and i in absent_audio:
                seqs.append(None)
            else:
                seqs.append(rng.normal(size=(int(rng.integers(1, 15)), d)).astype(np.float32))
        out[m] = SequenceFeatures.from_list([f"x{i}" for i in range(n)], seqs, d)
    return out


def test_vlmae_ignores_padded_frame_values():
    torch.manual_seed(0)
    f = VLMAEFusion(d_cls=16, d_audio=8, d_attn=8)
    h_cls = torch.randn(3, 16)
    x = torch.randn(3, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [0] * 7], dtype=torch.bool)
    a = f(h_cls, x, mask)
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    x2[1, 5] = float("nan")
    b = f(h_cls, x2, mask)
    assert torch.equal(a, b)
    assert torch.equal(a[2], torch.zeros(8))  # no audio -> zeros, not NaN
    att = f.last_attention
    assert torch.allclose(att.sum(1), torch.tensor([1.0, 1.0, 0.0]))
    assert (att[1, 3:] == 0).all()


def test_vlmae_matches_eq7_by_hand():
    torch.manual_seed(1)
    f = VLMAEFusion(d_cls=4, d_audio=5, d_attn=3)
    h_cls, x = torch.randn(1, 4), torch.randn(1, 6, 5)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    q = h_cls[0] @ f.q.weight.T + f.q.bias
    k = x[0, :4] @ f.k.weight.T + f.k.bias
    v = x[0, :4] @ f.v.weight.T + f.v.bias
    a = torch.softmax(k @ q / 3**0.5, 0)
    assert torch.allclose(f(h_cls, x, mask)[0], a @ v, atol=1e-6)


@pytest.mark.parametrize("fusion", ["none", "avgpool", "vlmae"])
def test_classifier_output_invariant_to_padding(fusion):
    torch.manual_seed(0)
    model = MultimodalClassifier(small(fusion=fusion, heads="fused+unimodal")).eval()
    fs = feats(6, absent_audio=(2,))
    batch = collate(fs, np.arange(6))
    out = model(batch)
    noisy = {m: (torch.where(mk.unsqueeze(-1), x, torch.randn_like(x) * 50), mk) for m, (x, mk) in batch.items()}
    out2 = model(noisy)
    assert torch.allclose(out["logits"], out2["logits"], atol=1e-5)
    # a batch padded longer (item 0 alone vs in the batch) gives the same logits
    alone = model(collate(fs, [0]))
    assert torch.allclose(alone["logits"][0], out["logits"][0], atol=1e-5)


@pytest.mark.parametrize("fusion", ["none", "avgpool", "vlmae"])
@pytest.mark.parametrize("missing", ["zeros", "learned"])
def test_heads_finite_and_shapes(fusion, missing):
    torch.manual_seed(0)
    cfg = small(fusion=fusion, heads="fused+unimodal", audio_missing=missing)
    model = MultimodalClassifier(cfg).eval()
    fs = feats(5, absent_audio=(0, 3))
    out = model(collate(fs, np.arange(5)))
    assert out["logits"].shape == (5, 3) and out["cls"].shape == (5, 16)
    assert out["penultimate"].shape == (5, 16)
    assert out["modality"]["audio"].shape == (5, 8)  # d_a = d_attn = 8 here; see next test
    assert set(out["unimodal_logits"]) == {"audio", "image", "text"}
    for lg in [out["logits"], *out["unimodal_logits"].values()]:
        p = torch.softmax(lg, -1)
        assert torch.isfinite(p).all() and torch.allclose(p.sum(1), torch.ones(5))
    assert out["present"]["audio"].tolist() == [False, True, True, False, True]
    if missing == "zeros" and fusion != "none":
        assert (out["modality"]["audio"][[0, 3]] == 0).all()


def test_audio_dim_is_d_attn_for_vlmae():
    cfg = small(fusion="vlmae", d_attn=5, heads="fused+unimodal")
    out = MultimodalClassifier(cfg).eval()(collate(feats(3), [0, 1, 2]))
    assert out["modality"]["audio"].shape == (3, 5)


def test_audio_changes_vlmae_logits_but_not_none():
    torch.manual_seed(0)
    fs = feats(4)
    batch = collate(fs, np.arange(4))
    other = dict(batch)
    x, mk = batch["audio"]
    other["audio"] = (x + torch.randn_like(x), mk)
    for fusion, changes in [("none", False), ("avgpool", True), ("vlmae", True)]:
        model = MultimodalClassifier(small(fusion=fusion)).eval()
        same = torch.allclose(model(batch)["logits"], model(other)["logits"])
        assert same != changes


def test_text_only_and_missing_modality_key():
    cfg = ModelConfig(input_dims={"text": 12}, n_classes=2, d_model=16, n_heads=2, mlp_hidden=8, fusion="vlmae")
    model = MultimodalClassifier(cfg).eval()
    fs = feats(4, dims={"text": 12})
    out = model(collate(fs, np.arange(4)))
    assert out["logits"].shape == (4, 2) and set(out["modality"]) == {"text"}
    # full model given only text: image/audio treated as absent
    full = MultimodalClassifier(small()).eval()
    out = full(collate(fs, np.arange(4)))
    assert torch.isfinite(out["logits"]).all()
    assert not out["present"]["image"].any()


def test_token_reduction_limits_tokens():
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(2, 1, 1)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 4:] = False
    y, m = reduce_tokens(x, mask, 4, "pool")
    assert y[0, :, 0].tolist() == [1.0, 3.5, 6.0, 8.5]  # bins {0,1,2},{3,4},{5,6,7},{8,9}
    assert y[1, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and m.all()
    y, m = reduce_tokens(x, mask, 5, "stride")
    assert y[0, :, 0].tolist() == [0, 2, 4, 6, 8] and m[1].tolist() == [True] * 4 + [False]
    model = MultimodalClassifier(small(max_tokens={"text": 3, "image": 4})).eval()
    out = model(collate(feats(3), [0, 1, 2]))  # sequences up to 14 tokens, pos tables of 3/4
    assert torch.isfinite(out["logits"]).all()


def test_config_validation():
    with pytest.raises(ConfigError, match="fusion"):
        small(fusion="concat")
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        small(d_model=15)
    with pytest.raises(ConfigError, match="input_dims is empty"):
        ModelConfig(input_dims={})
    assert ModelConfig.from_dict(small().to_dict()) == small()
    with pytest.raises(ConfigError, match="dimension|expected x"):
        MultimodalClassifier(small())({"text": (torch.zeros(1, 2, 5), torch.ones(1, 2, dtype=torch.bool))})
