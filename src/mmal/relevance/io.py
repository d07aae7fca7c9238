"""Saving / loading relevance models and the one-call back-ends of ``mmal pretrain`` / fine-tuning.

A saved model is a folder with ``config.json`` (the :class:`RelevanceConfig` plus
metadata) and ``model.pt`` (the ``state_dict`` of the model and, after fine-tuning, of the
head). Writes go to temporary files renamed into place, so a crash leaves the old files.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch

from mmal.relevance.heads import RelevanceHead
from mmal.relevance.model import RelevanceConfig, RelevanceModel


def save_model(directory, model: RelevanceModel, head: RelevanceHead | None = None, meta: dict | None = None):
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict()}
    info = {"config": model.cfg.to_dict(), "meta": meta or {}}
    if head is not None:
        state["head"] = head.state_dict()
        info["head"] = {"kind": head.kind, "w": head.w}
    tmp = d / "model.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, d / "model.pt")
    tmp = d / "config.json.tmp"
    tmp.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmp, d / "config.json")
    return d


def load_model(directory) -> tuple[RelevanceModel, RelevanceHead | None, dict]:
    d = pathlib.Path(directory)
    info = json.loads((d / "config.json").read_text())
    model = RelevanceModel(RelevanceConfig(**info["config"]))
    state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    head = None
    if "head" in info:
        head = RelevanceHead(info["head"]["kind"], model.cfg.dim, w=info["head"]["w"])
        head.load_state_dict(state["head"])
    return model, head, info.get("meta", {})


def run_pretrain(items, out_dir, *, objectives: str = "itc,itm,mlm,pqvm", arch: str = "dual", epochs: int = 3,
                 seed: int = 0, n_frames: int = 3, **config) -> pathlib.Path:
    """Back-end of ``mmal pretrain``: prepare ``items``, pre-train, save under ``out_dir/pretrained``."""
    from mmal.relevance.features import prepare_relevance
    from mmal.relevance.pretrain import pretrain_relevance

    out = pathlib.Path(out_dir)
    data = prepare_relevance(items, cache_dir=out / "cache", n_frames=n_frames)
    res = pretrain_relevance(data, RelevanceConfig(arch=arch, **config), objectives=objectives, epochs=epochs, seed=seed)
    return save_model(out / "pretrained", res.model, meta={"objectives": list(res.objectives), "history": res.history,
                                                          "items": str(items), "seed": seed, "n_frames": n_frames})


def run_finetune(items, out_dir, *, head: str = "hsoftmax", epochs: int = 4, seed: int = 0, n_frames: int = 3,
                 pretrained=None, **config) -> pathlib.Path:
    """Back-end of relevance fine-tuning: fine-tune (from ``pretrained`` folder if given), save,
    and write ``metrics.json`` on the test split when it has labels."""
    from mmal.relevance.features import prepare_relevance
    from mmal.relevance.metrics import relevance_metrics
    from mmal.relevance.pretrain import finetune_relevance, score_relevance

    out = pathlib.Path(out_dir)
    data = prepare_relevance(items, cache_dir=out / "cache", n_frames=n_frames)
    model = load_model(pretrained)[0] if pretrained is not None else None
    res = finetune_relevance(data, model, config=RelevanceConfig(**config) if model is None else None, head=head,
                             epochs=epochs, seed=seed)
    path = save_model(out / "finetuned", res.model, res.head, meta={"history": res.history, "seed": seed})
    te = data.pairs("test")
    if len(te):
        s, _ = score_relevance(res.model, res.head, data, te)
        (out / "metrics.json").write_text(json.dumps(relevance_metrics(data.labels[te], s, data.query_ids[te]),
                                                     indent=1))
    return path
