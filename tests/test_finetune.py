"""End-to-end fine-tuning of the towers: mmal.train.finetune
and ``mmal train --finetune-towers`` / ``mmal score`` with the tuned towers."""

import json
import tomllib

import numpy as np
import pytest
import tomli_w
import torch

from conftest import run_cli, write_items
from mmal import encoders
from mmal.encoders.base import Encoder
from mmal.errors import ConfigError
from mmal.models import ModelConfig
from mmal.train import TrainConfig, encode_with_towers, fit, fit_end_to_end, score
from mmal.train.finetune import load_towers, towers_state

SMALL = dict(d_model=32, n_layers=1, n_heads=2, mlp_hidden=32, fusion="none")
ANIMALS = ["cat", "dog", "horse", "cow"]
FOODS = ["apple", "bread", "cheese", "soup"]


def _toy_text():
    texts = [f"a photo of a {w}" for w in ANIMALS] + [f"a plate of {w}" for w in FOODS]
    y = np.array([0] * 4 + [1] * 4)
    return texts, y


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_fit_points_to_fit_end_to_end():
    from mmal.features.types import SequenceFeatures

    f = SequenceFeatures.from_list(["a", "b"], [np.ones((2, 4), np.float32), np.zeros((1, 4), np.float32)], 4)
    with pytest.raises(ConfigError, match="fit_end_to_end"):
        fit({"text": f}, np.array([0, 1]), [0, 1], None, None, TrainConfig(finetune_towers=True), progress=False)


def test_text_tower_trains_cached_encoder_untouched():
    enc = encoders.load("text:minilm")
    before = _state(enc.module)
    texts, y = _toy_text()
    frozen_p, frozen_s = enc.encode(texts)
    mc = ModelConfig(input_dims={"text": enc.dim}, n_classes=2, **SMALL)
    model, towers, hist = fit_end_to_end(
        {"text": texts}, y, np.arange(8), None, encoders={"text": enc}, model_config=mc,
        train_config=TrainConfig(epochs=5, batch_size=4, lr=3e-3, seed=1), tower_lr=1e-4, progress=False)
    losses = [r["train_loss"] for r in hist["epochs"]]
    assert len(losses) == 5 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert hist["train_config"]["finetune_towers"] is True
    # the per-process cached encoder is unchanged, bit for bit; its outputs too
    assert _max_diff(before, _state(enc.module)) == 0.0
    p2, s2 = enc.encode(texts)
    assert np.array_equal(p2, frozen_p) and all(np.array_equal(a, b) for a, b in zip(s2, frozen_s))
    # the tuned copy moved, and is a different object
    assert towers["text"] is not enc.module and _max_diff(before, _state(towers["text"])) > 0
    assert not towers["text"].training and not model.training
    # re-encoding with the tuned tower: same shapes as the cache, different numbers
    feats = encode_with_towers({"text": texts}, {"text": enc}, towers)
    f = feats["text"]
    assert f.dim == enc.dim and f.present.all()
    assert [f.sequence(i).shape for i in range(8)] == [s.shape for s in frozen_s]
    assert not np.allclose(f.pooled, frozen_p, atol=1e-6)
    res = score(model, feats, progress=False)
    assert res["probs"].shape == (8, 2) and np.allclose(res["probs"].sum(1), 1, atol=1e-5)
    # the tuned tower survives the plain (weights_only) record round trip
    encs2, towers2 = load_towers(towers_state(towers, {"text": enc}))
    assert _max_diff(_state(towers["text"]), _state(towers2["text"])) == 0.0


def test_image_tower_eval_mode_keeps_batchnorm_stats(media_dir):
    enc = encoders.load("image:efficientnet-lite0", input_size=64, resize="squash")
    before = _state(enc.module)
    paths = [str(media_dir / "a.png"), str(media_dir / "b.png")] * 2
    y = np.array([0, 1, 0, 1])
    # one image absent: it must be masked, not break the batch
    inputs = {"image": paths + [None]}
    labels = np.append(y, 0)
    mc = ModelConfig(input_dims={"image": enc.dim}, n_classes=2, **SMALL)
    model, towers, hist = fit_end_to_end(
        inputs, labels, np.arange(5), None, encoders={"image": enc}, model_config=mc,
        train_config=TrainConfig(epochs=2, batch_size=5, lr=1e-3), tower_lr=1e-3, progress=False)
    assert np.isfinite([r["train_loss"] for r in hist["epochs"]]).all()
    after = _state(towers["image"])
    bn_stats = [k for k in before if k.endswith("running_mean") or k.endswith("running_var")]
    weights = [k for k in before if k.endswith(".weight") and "_bn" not in k]
    assert bn_stats and all(torch.equal(before[k], after[k]) for k in bn_stats)  # tower_mode="eval"
    assert max(float((before[k] - after[k]).abs().max()) for k in weights) > 0  # but the weights trained
    assert _max_diff(before, _state(enc.module)) == 0.0
    feats = encode_with_towers(inputs, {"image": enc}, towers)["image"]
    assert feats.present.tolist() == [True] * 4 + [False] and feats.sequence(0).shape == (4, enc.dim)


class _NoTorch(Encoder):
    name, modality, dim = "text:fake", "text", 4


def test_tower_without_torch_module_is_refused():
    with pytest.raises(ConfigError, match="text:fake"):
        fit_end_to_end({"text": ["a", "b"]}, [0, 1], [0, 1], encoders={"text": _NoTorch()}, progress=False)
    with pytest.raises(ConfigError, match="tower_mode"):
        fit_end_to_end({"text": ["a", "b"]}, [0, 1], [0, 1], encoders={"text": _NoTorch()}, tower_mode="frozen", progress=False)


def test_cli_train_finetune_towers_then_score(tmp_path):
    words = {0: ANIMALS, 1: FOODS}
    rows = []
    for k in range(16):
        c = k % 2
        split = "test" if k >= 12 else "train"
        rows.append({"id": f"t{k:02d}", "label": c, "split": split, "text": f"a picture of a {words[c][k % 4]} number {k}"})
    items = write_items(tmp_path / "src", rows)
    ws = tmp_path / "ws"
    r = run_cli("init", ws, "--items", items)
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((ws / "mmal.toml").read_text())
    cfg.setdefault("train", {}).update({"epochs": 2, "patience": 2, "batch_size": 8})
    cfg["model"] = {"learner": "fusion", "fusion": "none", "d_model": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 32}
    (ws / "mmal.toml").write_text(tomli_w.dumps(cfg))
    # no `mmal encode`: end-to-end training reads the raw items, not the feature cache
    r = run_cli("train", ws, "--finetune-towers", "--seed", "0")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["finetune_towers"] is True and info["n_labeled"] == 12
    assert (ws / "rounds/0/towers.pt").is_file()
    from mmal.loop.core import load_learner

    learner, extra = load_learner(ws / "rounds/0/model.pt")
    assert learner.name == "fusion" and extra["towers_file"] == "towers.pt" and extra["finetune_towers"] is True
    r = run_cli("score", ws)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["tuned_towers"] is True
    from mmal.workspace.pool_io import load_pool

    pool = load_pool(ws / "rounds/0/pool")
    assert pool.probs.shape == (16, 2) and np.allclose(np.asarray(pool.probs).sum(1), 1, atol=1e-5)
