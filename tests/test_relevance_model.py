"""Relevance model: PQVM / ITM hard negatives, pre-training and fine-tuning on a tiny hand-made set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmal.errors import ConfigError
from mmal.features.hcmrm import RelevanceData, Segment
from mmal.models.hcmrm import RelevanceConfig
from mmal.models.hcmrm_pretrain import parse_objectives, sample_hard_negatives, score_relevance, text_batch
from mmal.train.hcmrm import finetune_hcmrm, pretrain_hcmrm


def pretrain_relevance(d, cfg, *, objectives, epochs, batch_size=32, seed=0):
    return pretrain_hcmrm(d, cfg, objectives=objectives, train={"epochs": epochs, "batch_size": batch_size}, seed=seed)


def finetune_relevance(d, model, *, config, head, epochs, batch_size):
    return finetune_hcmrm(d, d.labels, d.pairs("train"), model, config=config, head=head,
                          train={"epochs": epochs, "batch_size": batch_size})


def test_pqvm_negatives_are_never_the_positive():
    g = torch.Generator().manual_seed(0)
    B = 6
    # similarity almost all on the diagonal: the sampler must still never return i
    S = torch.full((B, B), 1e-9) + torch.eye(B) * 1e9
    for _ in range(300):
        x = sample_hard_negatives(torch.softmax(S, 1), g)
        assert (x != torch.arange(B)).all()
    # rows whose only other weight is forbidden fall back to uniform over j != i
    forbid = torch.zeros(B, B, dtype=torch.bool)
    forbid[0, 1:] = True
    forbid[0, 5] = False
    for _ in range(100):
        x = sample_hard_negatives(torch.ones(B, B), g, forbid)
        assert int(x[0]) == 5 and (x != torch.arange(B)).all()
    with pytest.raises(ConfigError):
        sample_hard_negatives(torch.ones(1, 1), g)


def test_hard_negatives_follow_the_similarity():
    g = torch.Generator().manual_seed(1)
    S = torch.tensor([[0.0, 0.9, 0.1], [0.5, 0.0, 0.5], [0.2, 0.8, 0.0]])
    draws = torch.stack([sample_hard_negatives(S, g) for _ in range(4000)])
    assert abs(float((draws[:, 0] == 1).float().mean()) - 0.9) < 0.03
    assert abs(float((draws[:, 2] == 1).float().mean()) - 0.8) < 0.03


def test_objectives_parse():
    assert parse_objectives("itc, itm,pqvm") == ("itc", "itm", "pqvm")
    with pytest.raises(ConfigError):
        parse_objectives("itc,foo")


def _tiny_data(seed=0, n_videos=12, n_pairs=48, dim_text=16, dim_vis=24):
    rng = np.random.default_rng(seed)
    vocab = 50

    def seg(n_words):
        ids = torch.from_numpy(rng.integers(5, vocab, n_words))
        return Segment(ids, torch.arange(n_words), torch.randn(n_words, dim_text))

    vtext = [seg(int(rng.integers(2, 6))) for _ in range(n_videos)]
    kws = [[f"w{int(i)}" for i in s.ids] for s in vtext]
    labels = rng.integers(0, 4, n_pairs)
    splits = np.array(["train"] * (n_pairs // 2) + ["test"] * (n_pairs - n_pairs // 2), dtype=object)
    tp = rng.normal(size=(n_videos, dim_text)).astype(np.float32)
    tp /= np.linalg.norm(tp, axis=1, keepdims=True)
    return RelevanceData(
        video_ids=[f"v{i}" for i in range(n_videos)], keywords=kws, video_text=vtext,
        visual=rng.normal(size=(n_videos, 4, dim_vis)).astype(np.float32),
        visual_pooled=rng.normal(size=(n_videos, dim_vis)).astype(np.float32), text_pooled=tp,
        queries=[f"q{i % 5}" for i in range(n_pairs)], query_text=[seg(2) for _ in range(n_pairs)],
        video_index=rng.integers(0, n_videos, n_pairs), labels=labels, splits=splits,
        query_ids=np.array([f"q{i % 5}" for i in range(n_pairs)], dtype=object),
        cls_vec=torch.randn(dim_text), sep_vec=torch.randn(dim_text), vocab_size=vocab)


def _cfg(arch):
    return RelevanceConfig(arch=arch, dim=16, n_heads=2, embed_dim=8, in_text=16, in_visual=24, max_len=16)


def test_text_batch_layout():
    d = _tiny_data()
    q, t = d.query_text[0], d.video_text[0]
    st, seg, pad, labels, masked = text_batch([(q, t), (None, t)], d.cls_vec, d.sep_vec, 16, [{0}, set()])
    n = 1 + len(q.ids) + 1 + len(t.ids) + 1
    assert not pad[0, :n].any() and pad[0, n:].all()
    torch.testing.assert_close(st[0, 0], d.cls_vec)
    torch.testing.assert_close(st[0, 1 : 1 + len(q.ids)], q.states)
    torch.testing.assert_close(st[0, 1 + len(q.ids)], d.sep_vec)
    assert seg[0, : 2 + len(q.ids)].eq(0).all() and seg[0, 2 + len(q.ids) : n].eq(1).all()
    # word 0 of T is masked: its ids are the MLM targets, nothing else is
    first = 2 + len(q.ids)
    assert int(labels[0, first]) == int(t.ids[0]) and bool(masked[0, first])
    assert int((labels[0] != -100).sum()) == int((t.words == 0).sum())
    assert (labels[1] == -100).all()


@pytest.mark.parametrize("arch,objs", [("dual", "itc,itm,mlm,pqvm"), ("single", "mlm,pqvm"), ("text", "pqvm")])
def test_pretrain_then_finetune_every_head(arch, objs):
    d = _tiny_data()
    pr = pretrain_relevance(d, _cfg(arch), objectives=objs, epochs=2, batch_size=6, seed=0)
    assert set(pr.history[0]) == set(parse_objectives(objs))
    assert all(np.isfinite(v) for h in pr.history for v in h.values())
    te = d.pairs("test")
    for head in ("hsoftmax", "bce", "mse", "ordinal"):
        ft = finetune_relevance(d, None, config=_cfg(arch), head=head, epochs=1, batch_size=8)
        s, p = score_relevance(ft.model, ft.head, d, te)
        assert s.shape == (len(te),) and np.isfinite(s).all()
        if head in ("hsoftmax", "ordinal"):
            np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
            np.testing.assert_allclose(s, p @ np.arange(4), atol=1e-5)  # eq. 9


def test_itc_itm_need_the_dual_stream():
    with pytest.raises(ConfigError, match="dual"):
        pretrain_relevance(_tiny_data(), _cfg("single"), objectives="itc,mlm", epochs=1)


def test_student_learns_the_teacher_scores():
    from scipy.stats import spearmanr

    from mmal.models.hcmrm_student import Student, student_scores
    from mmal.train.hcmrm import distill_student

    d = _tiny_data(n_pairs=200)
    segs = d.query_text
    vids = d.video_index
    # a teacher that depends on the video's visual embedding and the query's first wordpiece
    teacher = d.visual_pooled[vids, 0] + 0.1 * np.array([int(s.ids[0]) % 3 for s in segs])
    torch.manual_seed(0)
    before, _ = student_scores(Student(torch.randn(50, 8), 24, 128), d, segs, vids)  # untrained
    res = distill_student(d, segs, vids, teacher, train={"epochs": 60, "batch_size": 64, "lr": 1e-2},
                          word_emb=torch.randn(50, 8))
    after, pps = student_scores(res.model, d, segs, vids)
    assert res.history[-1] < 0.25 * res.history[0]
    assert spearmanr(after, teacher).statistic > 0.9 > spearmanr(before, teacher).statistic
    assert pps > 0


def test_hcmrm_learner_checkpoint_round_trip(tmp_path):
    from mmal.learners.relevance import HCMRMLearner
    from mmal.loop.core import load_learner
    from mmal.train.checkpoint import save_learner

    d = _tiny_data()
    cfg = {k: v for k, v in _cfg("dual").to_dict().items() if k != "vocab_size"}
    learner = HCMRMLearner(seed=0, head="ordinal", config=cfg, train={"epochs": 1, "batch_size": 8})
    learner.fit(d, d.labels, d.pairs("train"))
    te = d.pairs("test")
    r1 = learner.score(d, te)
    save_learner(tmp_path / "m.pt", learner, extra={"x": 1})
    again, extra = load_learner(tmp_path / "m.pt")
    r2 = again.score(d, te)
    np.testing.assert_allclose(r1["scores"], r2["scores"], atol=1e-6)
    np.testing.assert_allclose(r1["probs"], r2["probs"], atol=1e-6)
    assert extra == {"x": 1} and again.head.kind == "ordinal"


@pytest.mark.parametrize("head", ["hsoftmax", "ordinal", "bce", "mse"])
def test_hcmrm_with_cosine_start_ranks_exactly_as_the_cosine_before_fine_tuning(head):
    """003's model started from the untrained cosine: a zero residual on a·cos, so the fresh
    model orders the pairs exactly as cos(q, t) computed here from the frozen vectors."""
    from mmal.features.hcmrm import query_vectors
    from mmal.models.hcmrm import RelevanceModel
    from mmal.models.hcmrm_pretrain import score_pairs
    from mmal.models.hsoftmax import RelevanceHead

    d = _tiny_data()
    idx = np.arange(len(d.labels))
    q = query_vectors(d)[idx].astype(np.float64)
    t = d.text_pooled[d.video_index[idx]].astype(np.float64)
    cos = (q * t).sum(1) / np.linalg.norm(t, axis=1)
    torch.manual_seed(0)
    model = RelevanceModel(_cfg("dual"))
    rhead = RelevanceHead(head, model.cfg.dim, prior_scale=4.0)
    scores, _ = score_pairs(model, rhead, d, [d.query_text[i] for i in idx], d.video_index[idx], prior=cos - cos.mean())
    # the same order: every pair with a larger cosine (beyond float32 resolution) scores strictly higher
    gap = cos[:, None] - cos[None, :]
    assert np.all(scores[:, None] - scores[None, :] > 0, where=gap > 1e-6)
    # the plain head of 003 does not (a random start)
    plain, _ = score_pairs(model, RelevanceHead(head, model.cfg.dim), d, [d.query_text[i] for i in idx], d.video_index[idx])
    assert not np.array_equal(np.argsort(plain, kind="stable"), np.argsort(cos, kind="stable"))


def test_hcmrm_learner_starts_from_the_cosine_and_keeps_it_through_a_checkpoint(tmp_path):
    from scipy.stats import spearmanr

    from mmal.features.hcmrm import pair_cosine
    from mmal.learners.relevance import HCMRMLearner
    from mmal.loop.core import load_learner
    from mmal.train.checkpoint import save_learner

    d = _tiny_data()
    cfg = {k: v for k, v in _cfg("dual").to_dict().items() if k != "vocab_size"}
    # a learning rate too small to move anything: the fitted model is the start
    learner = HCMRMLearner(seed=0, config=cfg, train={"epochs": 1, "batch_size": 8, "lr": 1e-12})
    learner.fit(d, d.labels, d.pairs("train"))
    idx = np.arange(len(d.labels))
    s = learner.score(d, idx)["scores"]
    cos = pair_cosine(d, idx)
    gap = cos[:, None] - cos[None, :]
    assert np.all(s[:, None] - s[None, :] > 0, where=gap > 1e-5)  # strictly the cosine's order
    assert spearmanr(s, cos).statistic > 0.999
    save_learner(tmp_path / "m.pt", learner)
    again, _ = load_learner(tmp_path / "m.pt")
    np.testing.assert_allclose(again.score(d, idx)["scores"], s, atol=1e-6)
