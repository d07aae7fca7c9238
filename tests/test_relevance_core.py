"""Relevance core: hierarchical softmax (003 eq. 7-10), ordinal head, keywords (Alg. 1),
metrics, relevance items validation. Every expected value is computed here by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmal.errors import ItemsError
from mmal.data.keywords import extract_keywords
from mmal.data.relevance import validate_relevance_table
from mmal.metrics.relevance import ndcg_at_k, relevance_metrics
from mmal.models.hsoftmax import (
    RelevanceHead,
    hsoftmax_loss,
    hsoftmax_probs,
    ordered_thresholds,
    ordinal_nll,
    ordinal_probs,
)


def _logit(p):
    return math.log(p / (1 - p))


def test_hsoftmax_probs_match_eq_7_9_on_hand_values():
    z = torch.tensor([[_logit(0.8), _logit(0.3), _logit(0.6)]], dtype=torch.float64)
    p = hsoftmax_probs(z)[0].numpy()
    # eq. 8 by hand: p0=(1-.8)(1-.3), p1=(1-.8)(.3), p2=.8(1-.6), p3=.8*.6
    np.testing.assert_allclose(p, [0.14, 0.06, 0.32, 0.48], atol=1e-12)
    head = RelevanceHead("hsoftmax", 2)
    assert float(head.score(z)) == pytest.approx(0.06 + 2 * 0.32 + 3 * 0.48, abs=1e-12)  # eq. 9 = 2.14


def test_hsoftmax_probs_sum_to_one():
    z = torch.randn(64, 3, dtype=torch.float64) * 5
    np.testing.assert_allclose(hsoftmax_probs(z).sum(-1).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_hsoftmax_loss_equals_naive_formula(w):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64) * 2
    y = torch.arange(40) % 4
    s = 1 / (1 + np.exp(-z.numpy()))
    naive = []
    for (pp, pl, pe), l in zip(s, y.tolist()):
        p = [(1 - pp) * (1 - pl), (1 - pp) * pl, pp * (1 - pe), pp * pe]
        r = p[1] + 2 * p[2] + 3 * p[3]
        naive.append(-math.log(p[l]) + w * (r - l) ** 2)
    assert float(hsoftmax_loss(z, y, w)) == pytest.approx(np.mean(naive), rel=1e-10)


def test_hsoftmax_loss_finite_for_extreme_logits():
    z = torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4], [-1e4, -1e4, 1e4]],
                     dtype=torch.float32, requires_grad=True)
    y = torch.tensor([0, 3, 3, 1])  # every label on the wrong side of its path
    loss = hsoftmax_loss(z, y, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 1e3
    assert torch.isfinite(z.grad).all()


def test_ordinal_probs_and_nll_match_hand_values():
    theta = ordered_thresholds(torch.tensor([-1.0, 0.5, 0.2], dtype=torch.float64))
    th = [-1.0, -1.0 + math.log1p(math.exp(0.5)), -1.0 + math.log1p(math.exp(0.5)) + math.log1p(math.exp(0.2))]
    np.testing.assert_allclose(theta.numpy(), th, atol=1e-12)
    s = torch.tensor([0.3, -2.0, 4.0, 1.0], dtype=torch.float64)
    p = ordinal_probs(s, theta).numpy()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for b, sb in enumerate(s.tolist()):
        cdf = [0.0] + [sig(t - sb) for t in th] + [1.0]
        np.testing.assert_allclose(p[b], np.diff(cdf), atol=1e-12)
    y = torch.tensor([0, 1, 2, 3])
    np.testing.assert_allclose(ordinal_nll(s, theta, y).numpy(), -np.log(p[np.arange(4), y.numpy()]), rtol=1e-9)
    assert torch.isfinite(ordinal_nll(torch.tensor([1e4, -1e4]), theta.float(), torch.tensor([0, 3]))).all()


def test_keywords_equal_hand_tfidf_on_three_documents():
    docs = [
        {"title": "red apple red", "asr": "apple pie"},
        {"title": "green apple", "asr": "pie"},
        {"title": "blue boat", "asr": None},
    ]
    got = extract_keywords(docs, ["title", "asr"], [1.0, 0.5], k=3)

    def idf(n, df):  # scikit-learn smooth idf
        return math.log((1 + n) / (1 + df)) + 1

    # title field over 3 docs: df(red)=1, df(apple)=2, df(green)=1, df(blue)=1, df(boat)=1
    red, apple = 2 * idf(3, 1), 1 * idf(3, 2)
    norm = math.hypot(red, apple)
    t_red, t_apple = red / norm, apple / norm
    # asr field over 3 docs (empty third): df(apple)=1, df(pie)=2
    a_apple, a_pie = idf(3, 1), idf(3, 2)
    norm = math.hypot(a_apple, a_pie)
    d0 = {"red": t_red, "apple": t_apple + 0.5 * a_apple / norm, "pie": 0.5 * a_pie / norm}
    assert got[0] == sorted(d0, key=d0.get, reverse=True)
    assert got[0] == ["red", "apple", "pie"]  # 0.935 > 0.355 + 0.398 > 0.303
    # doc 1: title green (idf 1.69) vs apple (1.29), l2-normalised; asr pie alone -> 1.0 * 0.5
    g, a = idf(3, 1), idf(3, 2)
    d1 = {"green": g / math.hypot(g, a), "apple": a / math.hypot(g, a), "pie": 0.5}
    assert got[1] == sorted(d1, key=d1.get, reverse=True)
    assert got[2] == ["blue", "boat"]  # equal weights: first-seen order kept
    assert extract_keywords(docs, ["title", "asr"], [1.0, 0.5], k=1)[0] == ["red"]


def test_keywords_entity_boost_changes_order():
    docs = [{"t": "the boat met Paris"}, {"t": "the boat"}]
    plain = extract_keywords(docs, ["t"], k=4)[0]
    boosted = extract_keywords(docs, ["t"], k=4, entity_boost=3.0)[0]
    assert plain[:2] == ["met", "paris"] and boosted[0] == "paris"


def test_ndcg_and_metrics_against_hand_computation():
    lv, sc = [3, 0, 2, 1], [0.1, 0.9, 0.8, 0.2]
    # ranking by score: 0(lv0), 2(lv2), 3(lv1), 0(lv3)
    dcg = 0 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4) + 7 / math.log2(5)
    idcg = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4) + 0
    assert ndcg_at_k(lv, sc, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(lv, sc, 1) == pytest.approx(0.0)
    m = relevance_metrics(lv, sc, query_ids=["q"] * 4)
    # AUC: positives {3:0.1, 2:0.8}, negatives {0:0.9, 1:0.2}: pairs won = (0.8>0.2) = 1 of 4
    assert m["auc"] == pytest.approx(0.25)
    ranks_s, ranks_y = [1, 4, 3, 2], [4, 1, 3, 2]
    rho = np.corrcoef(ranks_s, ranks_y)[0, 1]
    assert m["spearman"] == pytest.approx(rho)
    assert m["pearson"] == pytest.approx(np.corrcoef(lv, sc)[0, 1])


def _table(**cols):
    import pyarrow as pa

    return pa.table(cols)


def test_relevance_validation_names_file_row_column():
    with pytest.raises(ItemsError) as e:
        validate_relevance_table(_table(id=["a", "b"], query=["cat", "dog"], label=[3, 4]), "f.csv")
    assert str(e.value).startswith("f.csv, row 2, column 'label': ") and "0..3" in str(e.value)
    with pytest.raises(ItemsError) as e:
        validate_relevance_table(_table(id=["a", "b", "c"], query=["cat", None, "x"], label=[0, 1, 2]), "f.csv")
    assert str(e.value).startswith("f.csv, row 2, column 'query': query is missing")
    with pytest.raises(ItemsError) as e:
        validate_relevance_table(_table(id=["a"], query=["  "], label=[0]), "f.csv")
    assert "row 1, column 'query'" in str(e.value)
    with pytest.raises(ItemsError, match="need a 'query' column"):
        validate_relevance_table(_table(id=["a"], label=[0]), "f.csv")
    validate_relevance_table(_table(id=["a", "b"], query=["q", "r"], label=[3, None]), "f.csv")


@pytest.mark.parametrize("bad,where", [("a,cat,4,t\n", "row 1, column 'label'"), (",x,1,t\n", "row 1, column 'id'"),
                                       ("a,,2,t\n", "row 1, column 'query'")])
def test_relevance_items_file_cli_exit_2_one_line(tmp_path, bad, where):
    """The task's rules (query, levels) and the generic ones (ids) at `mmal init`: one line, exit 2."""
    from conftest import run_cli

    f = tmp_path / "items.csv"
    f.write_text("id,query,label,text\n" + bad)
    res = run_cli("init", tmp_path / "ws", "--items", f)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(f) in lines[0] and where in lines[0] and "Traceback" not in res.stderr


@pytest.mark.parametrize("bad,what", [({"label": 4}, "label"), ({"query": None}, "query")])
def test_init_task_relevance_refuses_bad_rows(tmp_path, bad, what):
    """`mmal init --task relevance` with a level 4 or a missing query: exit 2, one line
    naming the file, the row and the column; no workspace is created."""
    import json

    from conftest import run_cli

    rows = [{"id": f"p{i}", "query": "a cat", "text": f"stamp {i}", "label": i % 4, "split": "train"} for i in range(6)]
    rows[3].update(bad)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_cli("init", tmp_path / "ws", "--items", items, "--task", "relevance")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "row 4" in lines[0] and what in lines[0] and "items.jsonl" in lines[0]
    assert not (tmp_path / "ws").exists()
