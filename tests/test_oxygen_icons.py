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
