"""late-fusion ``init_encoders``: encoders started from stored MMSSL heads, read by the workspace edge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmal.errors import ConfigError
from mmal.features.types import SequenceFeatures
from mmal.learners import make_learner


def _features(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    ids = [f"i{i}" for i in range(n)]
    centres = rng.normal(size=(3, 8))
    text = [(centres[y[i]] + 0.5 * rng.normal(size=8))[None] for i in range(n)]
    image = [(centres[y[i], ::-1] + 0.7 * rng.normal(size=10)[:8])[None] for i in range(n)]
    aud = [rng.normal(size=(int(rng.integers(2, 6)), 6)) + y[i] for i in range(n)]
    feats = {"text": SequenceFeatures.from_list(ids, text, 8), "image": SequenceFeatures.from_list(ids, image, 8),
             "audio": SequenceFeatures.from_list(ids, aud, 6)}
    return feats, y


def _store(tmp_path, feats, dims=None, hidden=12, dim=5):
    """A pre-training folder as `mmal pretrain` writes it (random head weights of the ProjectionHead layout)."""
    g = torch.Generator().manual_seed(1)
    heads = {}
    for m, f in feats.items():
        d = (dims or {}).get(m, f.dim)
        heads[m] = {"net.0.weight": torch.randn(hidden, d, generator=g), "net.0.bias": torch.randn(hidden, generator=g),
                    "net.2.weight": torch.randn(dim, hidden, generator=g), "net.2.bias": torch.randn(dim, generator=g)}
    folder = tmp_path / "pretrain" / "default"
    folder.mkdir(parents=True)
    torch.save(heads, folder / "heads.pt")
    (folder / "meta.json").write_text(json.dumps({"format": "mmal-mmssl/1", "modalities": sorted(feats)}))
    return folder, heads


def _head_numpy(sd, x):
    """normalise(W2 gelu(W1 (x / |x|) + b1) + b2), written out with numpy (exact erf GELU)."""
    from scipy.special import erf

    w1, b1, w2, b2 = (sd[k].double().numpy() for k in ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"))
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    h = n @ w1.T + b1
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    z = h @ w2.T + b2
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _with_heads(learner, folder):
    """What `mmal train` / `simulate` do: the loop reads the store, the learner gets the heads."""
    from mmal.loop.pretrain import load_mmssl_heads

    learner.init_from_pretraining(load_mmssl_heads(folder))
    return learner


def test_init_encoders_without_the_heads_handed_over_is_a_config_error(tmp_path):
    feats, y = _features()
    folder, _ = _store(tmp_path, feats)
    with pytest.raises(ConfigError, match="no MMSSL pre-training was handed over"):
        make_learner("late-fusion", init_encoders=str(folder), train={"epochs": 1}).fit(feats, y, np.arange(30))


def test_frozen_encoders_are_the_stored_heads(tmp_path):
    feats, y = _features()
    folder, heads = _store(tmp_path, feats)
    L = _with_heads(make_learner("late-fusion", seed=0, init_encoders=str(folder), train={"epochs": 5}), folder)
    L.fit(feats, y, np.arange(30))
    out = L.score(feats)
    for m in ("text", "image"):
        want = _head_numpy(heads[m], np.asarray(feats[m].pooled, np.float64))
        np.testing.assert_allclose(out["modality"][m], want, atol=1e-5)
    assert out["modality"]["audio"].shape[1] == 6  # the audio block keeps its frames (VLMAE)
    assert out["embedding"].shape[1] == 5 + 5 + 6


def test_finetuned_encoders_move_and_default_is_unchanged(tmp_path):
    feats, y = _features()
    folder, heads = _store(tmp_path, feats)
    L = _with_heads(make_learner("late-fusion", seed=0, init_encoders=str(folder), freeze_encoders=False,
                              train={"epochs": 5}), folder)
    L.fit(feats, y, np.arange(30))
    w = L.net.vec["text"].proj[0].weight.detach()
    assert not torch.allclose(w, heads["text"]["net.0.weight"])
    D = make_learner("late-fusion", seed=0, train={"epochs": 5})
    assert D.params["init_encoders"] is None
    D.fit(feats, y, np.arange(30))
    assert D.net.config.encoder == "identity" and D.score(feats)["modality"]["text"].shape[1] == 8


def test_checkpoint_round_trip_without_the_folder(tmp_path):
    from mmal.loop.core import load_learner
    from mmal.train.checkpoint import save_learner

    feats, y = _features()
    folder, _ = _store(tmp_path, feats)
    L = _with_heads(make_learner("late-fusion", seed=0, init_encoders=str(folder), train={"epochs": 3}), folder)
    L.fit(feats, y, np.arange(30))
    save_learner(tmp_path / "m.pt", L)
    import shutil

    shutil.rmtree(folder)  # the checkpoint carries the head weights itself
    L2, _ = load_learner(tmp_path / "m.pt")
    np.testing.assert_allclose(L.score(feats)["probs"], L2.score(feats)["probs"], atol=1e-6)


def test_bad_stores_are_config_errors(tmp_path):
    feats, y = _features()
    with pytest.raises(ConfigError, match="meta.json not found"):
        _with_heads(make_learner("late-fusion", init_encoders=str(tmp_path / "nope")), tmp_path / "nope")
    folder, _ = _store(tmp_path, feats, dims={"text": 7})
    with pytest.raises(ConfigError, match="'text' head reads 7-d features, but the features are 8-d"):
        _with_heads(make_learner("late-fusion", init_encoders=str(folder)), folder).fit(feats, y, np.arange(30))
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        _with_heads(make_learner("late-fusion", init_encoders=str(folder)), folder).fit(feats, y, np.arange(30))
