"""002 ch. 5: d(y_t) (eq. 5.1), weights (eq. 5.3-5.5), forward diffusion, losses, filter, loop, CLI."""

import math

import numpy as np
import pytest
import torch
from scenes_support import fake_features, fake_stamps

from mmal.cli import main
from mmal.data.datasets import build
from mmal.errors import ConfigError
from mmal.loop.captioning import (CaptionTrainConfig, dependence_analysis, dependence_of, evaluate_captioner,
                                  evaluate_language_prior, filter_training_pairs, generate, load_scenes,
                                  train_captioner)
from mmal.models.captioner import Captioner, CaptionerConfig, decode
from mmal.models.token_reweighting import (caption_nll, dependence_groups, q_moments, q_sample, selective_eos_nll,
                                           token_weights, vcd_schedule, visual_dependence)
from mmal.select.visual_dependence_filter import filter_by_visual_dependence, sequence_dependence

TINY = dict(vocab_size=11, feat_dim=8, n_patches=4, d_model=16, n_layers=1, n_heads=2, ff_dim=32, dropout=0.3, max_len=9)


def _tiny_batch(seed=0, B=3, L=6):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, 4, 8, generator=g)
    noisy = 0.3 * feats + torch.randn(B, 4, 8, generator=g)
    tgt = torch.randint(4, 11, (B, L), generator=g)
    inp = torch.cat([torch.ones(B, 1, dtype=torch.long), tgt[:, :-1]], 1)
    return feats, noisy, inp, tgt


# ----------------------------------------------------------------------------- eq. 5.1
def test_visual_dependence_equals_two_forward_passes():
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(**TINY))
    model.train()  # dependence_of must switch to eval (dropout off) and back
    feats, noisy, inp, tgt = _tiny_batch()
    d = dependence_of(model, feats, noisy, inp, tgt)
    assert model.training
    model.eval()
    with torch.no_grad():
        for b in range(feats.shape[0]):
            clean = torch.softmax(model(feats[b:b + 1], inp[b:b + 1])[0], -1)  # forward pass 1, [L, V]
            dirty = torch.softmax(model(noisy[b:b + 1], inp[b:b + 1])[0], -1)  # forward pass 2
            for t in range(inp.shape[1]):
                pc, pn = float(clean[t, tgt[b, t]]), float(dirty[t, tgt[b, t]])
                assert float(d[b, t]) == pytest.approx((pc - pn) / max(pc, pn), rel=1e-5, abs=1e-6)
    assert (d.abs() <= 1).all()


def test_groups_and_zero_probabilities():
    d = torch.tensor([-0.9, -0.25, -0.1, 0.0, 0.24, 0.25, 1.0])
    assert dependence_groups(d).tolist() == [-1, -1, 0, 0, 0, 1, 1]
    assert visual_dependence(torch.zeros(2), torch.zeros(2)).tolist() == [0.0, 0.0]
    assert visual_dependence(torch.tensor([0.2]), torch.tensor([0.8])).item() == pytest.approx(-0.75)


# ----------------------------------------------------------------------------- eq. 5.3-5.5
def _random_weights_case(seed):
    g = torch.Generator().manual_seed(seed)
    B, L = 6, 10
    lengths = torch.tensor([1, 2, 5, 7, 10, 10])
    mask = torch.arange(L)[None] < lengths[:, None]
    eos = torch.arange(L)[None] == (lengths - 1)[:, None]
    d = torch.rand(B, L, generator=g) * 2 - 1
    d[1, 0] = -1.0  # strongly image-negative token beside EOS: EOS would drop under 1
    return d, mask, eos, lengths


@pytest.mark.parametrize("kind", ["w-neg", "w-pos"])
@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0, 8.0])
def test_weights_sum_to_T_and_eos_at_least_one(kind, tau):
    d, mask, eos, lengths = _random_weights_case(1)
    w = token_weights(d, mask, eos, kind=kind, tau=tau)
    assert torch.allclose(w.sum(1), lengths.float(), atol=1e-5)  # eq. 5.5 keeps the magnitude: sum = T
    assert (w[eos] >= 1 - 1e-6).all()  # EOS floor
    assert (w[~mask] == 0).all() and (w[mask] > 0).all()


def test_weights_match_eq_5_5_by_hand():
    # w-neg, tau = 1: d = [-0.5, 0.5, 0(EOS)] -> w = [0.5, 0, 0]; T = 3
    d = torch.tensor([[-0.5, 0.5, 0.0]])
    mask, eos = torch.ones(1, 3, dtype=torch.bool), torch.tensor([[False, False, True]])
    raw = 3 * torch.softmax(torch.tensor([0.5, 0.0, 0.0]), 0)  # [1.356, 0.822, 0.822]
    clip = token_weights(d, mask, eos, kind="w-neg", tau=1.0, eos_floor_mode="clip")[0]
    assert clip.tolist() == pytest.approx([raw[0].item(), raw[1].item(), 1.0])
    ren = token_weights(d, mask, eos, kind="w-neg", tau=1.0)[0]
    scale = 2.0 / (raw[0] + raw[1]).item()  # the other tokens share T - 1
    assert ren.tolist() == pytest.approx([raw[0].item() * scale, raw[1].item() * scale, 1.0])
    # w-pos on the same d: w = [0, 0.5, 0]; EOS weight 0.822 -> 1 as well
    pos = token_weights(d, mask, eos, kind="w-pos", tau=1.0, eos_floor_mode="clip")[0]
    assert pos.tolist() == pytest.approx([raw[1].item(), raw[0].item(), 1.0])
    # tau = 0 is the vanilla loss: all weights 1
    assert token_weights(d, mask, eos, tau=0.0).tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(ConfigError, match="kind"):
        token_weights(d, mask, eos, kind="w-mid")


def test_caption_nll_and_selective_eos():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, generator=g)
    tgt = torch.tensor([[4, 5, 2, 0], [3, 4, 5, 2]])
    mask = (tgt != 0).float()
    lp = torch.log_softmax(logits, -1)
    by_hand = np.mean([-(lp[0, 0, 4] + lp[0, 1, 5] + lp[0, 2, 2]).item() / 3,
                       -(lp[1, 0, 3] + lp[1, 1, 4] + lp[1, 2, 5] + lp[1, 3, 2]).item() / 4])
    assert caption_nll(logits, tgt, mask).item() == pytest.approx(by_hand, rel=1e-6)
    assert caption_nll(logits, tgt, mask, torch.ones(2, 4)).item() == pytest.approx(by_hand, rel=1e-6)
    # selective EOS: non-EOS targets use a softmax without the EOS logit (id 2)
    keep = [i for i in range(6) if i != 2]
    lq = torch.log_softmax(logits[..., keep], -1)
    col = {i: k for k, i in enumerate(keep)}
    eos_hand = np.mean([-(lq[0, 0, col[4]] + lq[0, 1, col[5]] + lp[0, 2, 2]).item() / 3,
                        -(lq[1, 0, col[3]] + lq[1, 1, col[4]] + lq[1, 2, col[5]] + lp[1, 3, 2]).item() / 4])
    assert selective_eos_nll(logits, tgt, mask, eos_id=2).item() == pytest.approx(eos_hand, rel=1e-6)


# ----------------------------------------------------------------------------- forward diffusion
def test_schedule_is_vcds():
    s = vcd_schedule()
    beta = s["beta"]
    assert len(beta) == 1000 and bool((beta[1:] > beta[:-1]).all())
    assert beta[0].item() == pytest.approx(1 / (1 + math.exp(6)) * (5e-3 - 1e-5) + 1e-5, rel=1e-9)
    assert s["alpha_bar"][999].item() == pytest.approx(float(torch.prod(1 - beta)), rel=1e-9)


@pytest.mark.parametrize("t", [500, 900, 999])
def test_noised_constant_image_matches_closed_form(t):
    n = 400_000
    c = 0.6
    x0 = torch.full((n,), c, dtype=torch.float64)
    xt = q_sample(x0, t, generator=torch.Generator().manual_seed(t))
    mean_scale, var = q_moments(t)
    # 5-sigma tolerances from the sample size: SE(mean) = sqrt(var / n), SE(var) ~ var * sqrt(2 / (n - 1))
    assert abs(xt.mean().item() - mean_scale * c) < 5 * math.sqrt(var / n)
    assert abs(xt.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1))
    eps = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(q_sample(x0[:5], t, eps), mean_scale * x0[:5] + math.sqrt(var) * eps)


# ----------------------------------------------------------------------------- filter
def test_filter_rules():
    scores = np.array([3.0, -1.0, 2.0, 0.5, 9.0, -4.0, 1.0, 7.0, 0.0, 5.0])
    assert filter_by_visual_dependence(scores, "lowest", 0.2).tolist() == [0, 2, 3, 4, 6, 7, 8, 9]
    assert filter_by_visual_dependence(scores, "highest", 0.2).tolist() == [0, 1, 2, 3, 5, 6, 8, 9]
    r = filter_by_visual_dependence(scores, "random", 0.3, rng=np.random.default_rng(0))
    assert len(r) == 7 and len(set(r.tolist())) == 7
    assert np.array_equal(r, filter_by_visual_dependence(scores, "random", 0.3, rng=np.random.default_rng(0)))
    assert sequence_dependence(np.array([[0.5, -1.0, 2.0]]), np.array([[1, 1, 0]])).tolist() == [-0.5]
    with pytest.raises(ConfigError, match="non-finite"):
        filter_by_visual_dependence(np.array([1.0, np.nan]), "lowest", 0.5)


# ----------------------------------------------------------------------------- loop on a fake scene set
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cap")
    build("tuxpaint-scenes", root / "data", n=48, seed=1, stamps_dir=fake_stamps(root / "stamps"), progress=False)
    s = load_scenes(root / "data")
    fake_features(s)
    return s


SMALL = dict(epochs=3, batch_size=16, d_model=16, n_layers=1, n_heads=2, ff_dim=32)


def test_training_is_seeded_and_reweighting_starts_late(scenes):
    cfg = CaptionTrainConfig(loss="w-neg", **SMALL)
    m1, h1 = train_captioner(scenes, cfg, seed=5)
    m2, _ = train_captioner(scenes, cfg, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert h1["reweight_start_step"] == math.ceil(0.5 * h1["total_steps"])
    m3, _ = train_captioner(scenes, CaptionTrainConfig(loss="eos", **SMALL), seed=5, train_idx=np.arange(20))
    m = evaluate_captioner(m3, scenes)
    assert set(m) >= {"chair_s", "chair_i", "recall", "length", "captions"}
    ids = generate(m1, scenes, method="vcd")
    assert len(ids) == len(scenes.index("test"))
    a = dependence_analysis(m1, scenes, ids)
    assert set(a["objects_by_group"]) == {"negative", "invariant", "positive"}
    keep, sc = filter_training_pairs(m1, scenes, "highest", 0.25)
    assert len(keep) == 27 and sc[np.setdiff1d(np.arange(36), keep)].min() >= sc[keep].max()
    prior = evaluate_language_prior(scenes)
    assert 0 <= prior["recall"] <= 1 and prior["caption"].count(" and ") >= 1


def test_decode_vcd_needs_noisy_and_plausibility():
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(**TINY))
    feats, noisy, _, _ = _tiny_batch()
    with pytest.raises(ConfigError, match="noisy_feats"):
        decode(model, feats, bos=1, eos=2, method="vcd")
    same = decode(model, feats, bos=1, eos=2, method="vcd", noisy_feats=feats)  # v* = v: VCD = greedy
    assert torch.equal(same, decode(model, feats, bos=1, eos=2))


# ----------------------------------------------------------------------------- CLI
def _one_error_line(capsys, rc, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "Traceback" not in err[0]
    for n in needles:
        assert n in err[0], err[0]


def test_cli_bad_inputs(tmp_path, scenes, capsys):
    missing = tmp_path / "nope"
    _one_error_line(capsys, main(["caption", "train", str(missing), "--out", str(tmp_path / "m.pt")]), str(missing))
    _one_error_line(capsys, main(["caption", "train", str(scenes.dir), "--out", str(tmp_path / "m.pt"),
                                  "--loss", "focal"]), "loss", "'focal'", "mle, eos, w-pos, w-neg")
    _one_error_line(capsys, main(["caption", "eval", str(scenes.dir), "--model", str(tmp_path / "none.pt")]),
                    str(tmp_path / "none.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    _one_error_line(capsys, main(["caption", "eval", str(scenes.dir), "--model", str(bad)]), str(bad))
    _one_error_line(capsys, main(["caption", "filter", str(scenes.dir), "--model", str(bad), "--out",
                                  str(tmp_path / "k.txt"), "--rule", "middle"]), "--rule", "'middle'")
    _one_error_line(capsys, main(["caption", "train", str(scenes.dir), "--out", str(tmp_path / "m.pt"),
                                  "--keep", str(tmp_path / "keep.txt")]), str(tmp_path / "keep.txt"))


def test_cli_train_eval_filter(tmp_path, scenes, capsys):
    import json

    model = tmp_path / "m.pt"
    assert main(["caption", "train", str(scenes.dir), "--out", str(model), "--loss", "w-pos", "--epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == "w-pos"
    assert main(["caption", "eval", str(scenes.dir), "--model", str(model), "--decode", "vcd"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["chair_s"] <= 1
    keep = tmp_path / "keep.txt"
    assert main(["caption", "filter", str(scenes.dir), "--model", str(model), "--out", str(keep), "--rule",
                 "lowest", "--fraction", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["kept"] == len(keep.read_text().split()) == 29
    assert main(["caption", "train", str(scenes.dir), "--out", str(model), "--keep", str(keep), "--epochs", "1"]) == 0


def _stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_one_progress_bar_per_long_step(tmp_path, scenes, capsys, monkeypatch):
    import json

    monkeypatch.setenv("MMAL_PROGRESS", "1")  # stderr is captured: not a terminal, as in a log file or CI
    monkeypatch.setenv("COLUMNS", "200")
    epochs, n_train, n_test = 3, len(scenes.index("train")), len(scenes.index("test"))
    steps = epochs * -(-n_train // CaptionTrainConfig().batch_size)  # epochs x batches of the default size
    model = tmp_path / "m.pt"
    assert main(["caption", "train", str(scenes.dir), "--out", str(model), "--epochs", str(epochs)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["total_steps"] == steps  # stdout stays the JSON result
    (bar,) = [line for line in out.err.splitlines() if line.strip()]  # one bar, not a line per epoch
    assert f"caption mle epoch {epochs}/{epochs}" in bar and f"{steps}/{steps}" in bar and "loss" not in bar
    main(["caption", "eval", str(scenes.dir), "--model", str(model), "--decode", "vcd"])
    (bar,) = _stderr_lines(capsys)
    assert "decode vcd test" in bar and f"{n_test}/{n_test}" in bar
    main(["caption", "filter", str(scenes.dir), "--model", str(model), "--out", str(tmp_path / "k.txt")])
    (bar,) = _stderr_lines(capsys)
    assert "score train pairs" in bar and f"{n_train}/{n_train}" in bar
    for cmd in (["train", str(scenes.dir), "--out", str(model), "--epochs", "1"],
                ["eval", str(scenes.dir), "--model", str(model)],
                ["filter", str(scenes.dir), "--model", str(model), "--out", str(tmp_path / "k.txt")]):
        assert main(["caption", *cmd, "--quiet"]) == 0
        assert _stderr_lines(capsys) == []
        monkeypatch.setenv("MMAL_PROGRESS", "0")
        assert main(["caption", *cmd]) == 0
        assert _stderr_lines(capsys) == []
        monkeypatch.setenv("MMAL_PROGRESS", "1")
