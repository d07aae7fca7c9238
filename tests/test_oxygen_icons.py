"""The Oxygen icons dataset (Debian oxygen-icon-theme) and rare-positive binary variants."""

import pathlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmal.data.datasets import build
from mmal.data.datasets.oxygen_icons import ICONS_DIR

pytestmark = pytest.mark.skipif(not ICONS_DIR.is_dir(), reason="oxygen-icon-theme not installed (make setup installs it)")


@pytest.fixture(scope="module")
def icons(tmp_path_factory):
    out = tmp_path_factory.mktemp("oxy")
    return build("oxygen-icons", out, n=60, seed=0, progress=False)


def test_items_name_the_icon_and_its_context(icons):
    from PIL import Image

    t = pq.read_table(icons).to_pylist()
    assert len(t) == 60 and len({r["id"] for r in t}) == 60
    names = sorted({r["label_name"] for r in t})
    for r in t:
        ctx, name = r["id"].split(".", 1)
        src = pathlib.Path(r["source"])
        # the label is the theme folder the PNG sits in, the text its file name with spaces
        assert src.parent.name == ctx == r["label_name"] and src.stem == name
        assert r["text"] == name.replace("_", " ").replace("-", " ")
        with Image.open(icons.parent / r["image"]) as im:
            assert im.mode == "RGB" and im.size == (128, 128)
    # the (label, name) pairs are one-to-one, and labels follow the contexts' name order
    pairs = {(r["label"], r["label_name"]) for r in t}
    assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})
    by_name = sorted(pairs, key=lambda p: p[1])
    assert [p[0] for p in by_name] == sorted(p[0] for p in pairs) and len(names) >= 5
    # every split is drawn
    assert {r["split"] for r in t} == {"train", "pool", "test"}


def test_a_workspace_accepts_it(icons, tmp_path):
    from conftest import run_cli

    r = run_cli("init", tmp_path / "ws", "--items", icons)
    assert r.returncode == 0, r.stderr


def test_rare_positive_variant_counts_and_paths(icons, tmp_path):
    from mmal.data.datasets.rare_positive import rare_positive_variant

    src = pq.read_table(icons).to_pylist()
    ctx = max({r["label_name"] for r in src}, key=lambda c: sum(r["label_name"] == c for r in src))
    out = rare_positive_variant(icons, tmp_path / "bin", positive=ctx, pos_rate=0.1, seed=3)
    t = pq.read_table(out).to_pylist()
    n_rest = sum(r["label_name"] != ctx for r in src)
    n_pos = sum(r["label_name"] == ctx for r in src)
    want_pos = min(n_pos, int(round(0.1 / 0.9 * n_rest)))
    assert sum(r["label"] for r in t) == want_pos and len(t) == n_rest + want_pos
    by_id = {r["id"]: r for r in src}
    for r in t:
        s = by_id[r["id"]]
        assert r["label"] == int(s["label_name"] == ctx) and r["split"] == s["split"]
        assert r["label_name"] == (ctx if r["label"] else f"not {ctx}")
        assert (out.parent / r["image"]).resolve() == (icons.parent / s["image"]).resolve()
    from mmal.errors import ConfigError

    with pytest.raises(ConfigError, match="no item of the positive class"):
        rare_positive_variant(icons, tmp_path / "bad", positive="nonexistent-context")
    with pytest.raises(ConfigError, match="pos_rate"):
        rare_positive_variant(icons, tmp_path / "bad", positive=ctx, pos_rate=0.7)


def _level_here(source, query, anchor_text, anchor_ctx, ctx, text, family_ctx):
    """The relevance rule of docs/datasets.md, written out for one pair."""
    fam = text.split()[0]
    if source == "name":
        words = text.split()
        if words[: len(query.split())] == query.split():
            return 3
        return 2 if fam == anchor_text.split()[0] else (1 if ctx == anchor_ctx else 0)
    if source == "family":
        return 2 if fam == query else (1 if ctx == family_ctx else 0)
    return 1 if ctx == query else 0


def test_relevance_pairs_follow_the_level_rule_and_split_by_query(tmp_path):
    from collections import Counter

    path = build("oxygen-icons-relevance", tmp_path / "rel", n_icons=80, seed=1, progress=False)
    rows = pq.read_table(path).to_pylist()
    icons = {r["video_id"]: (r["context"], r["text"]) for r in rows}
    by_query = {}
    for r in rows:
        by_query.setdefault(r["query_id"], []).append(r)
    # one query per text and one split per query
    texts = [rs[0]["query"] for rs in by_query.values()]
    assert len(texts) == len(set(texts))
    assert all(len({r["split"] for r in rs}) == 1 for rs in by_query.values())
    assert {r["split"] for r in rows} == {"train", "pool", "test"}
    chosen_icons = {v: c for v, c in icons.items()}
    for rs in by_query.values():
        q, source = rs[0]["query"], rs[0]["query_source"]
        if source == "name":  # the anchor: an icon whose text gives the query (all its words, or all but the last)
            anchors = [(c, t) for c, t in chosen_icons.values()
                       if (" ".join(t.split()[:-1]) if len(t.split()) >= 3 else t) == q]
            assert anchors, q
            anchor_ctx, anchor_text = anchors[0]
        else:
            anchor_ctx, anchor_text = (q, None) if source == "context" else (None, q)
        fam_ctx = None
        if source == "family":
            fam_ctx = Counter(c for c, t in chosen_icons.values() if t.split()[0] == q).most_common(1)[0][0]
        for r in rs:
            ctx, text = icons[r["video_id"]]
            want = _level_here(source, q, anchor_text or "", anchor_ctx, ctx, text, fam_ctx)
            assert r["label"] == want, (q, source, text)
        # every level-3 icon of a name query is a candidate
        if source == "name":
            threes = {v for v, (c, t) in chosen_icons.items() if t.split()[: len(q.split())] == q.split()}
            assert threes <= {r["video_id"] for r in rs}
    assert {r["label"] for r in rows} == {0, 1, 2, 3}
