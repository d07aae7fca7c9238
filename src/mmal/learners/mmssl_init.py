"""Encoders initialised from an MMSSL pre-training (002 ch. 4; issue 10, Build 3).

The ``late-fusion`` learner's option ``init_encoders=FOLDER`` reads a stored MMSSL
pre-training (``mmal pretrain DIR`` writes ``DIR/pretrain/<name>/``: ``meta.json`` and
``heads.pt``, see :mod:`mmal.loop.pretrain`) and makes each vector modality's encoder the
MMSSL projection head of that modality, with its trained weights
(``LateFusionConfig.encoder = "mmssl"``). Head modalities (audio frames) keep their block:
the MMSSL audio head was trained on the clip's pooled vector, not on the frames VLMAE
attends over.

The thesis pre-trains and then selects; it does not say whether the classifier starts from
the pre-trained heads. Both choices are named parameters: ``init_encoders`` (``None`` =
off, the default) and ``freeze_encoders`` (``True``: the heads stay as pre-trained and only
the fused layer and VLMAE train; ``False``: they are fine-tuned with the rest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from mmal.errors import ConfigError

def load_mmssl_heads(folder) -> dict:
    """The projection heads of a stored MMSSL pre-training.

    Returns ``{"heads": {m: {"0.weight", "0.bias", "2.weight", "2.bias"}}, "hidden": int,
    "dim": int, "input_dims": {m: int}, "folder": str}``; the state-dict keys are those of
    ``ProjectionHead.net`` (the ``net.`` prefix removed). A missing or damaged store raises
    :class:`ConfigError` naming the file.
    """
    from mmal.loop.pretrain import PRETRAIN_FORMAT

    folder = Path(folder)
    meta_path, heads_path = folder / "meta.json", folder / "heads.pt"
    for p in (meta_path, heads_path):
        if not p.is_file():
            raise ConfigError(f"init_encoders: {p} not found; run `mmal pretrain DIR` and pass DIR/pretrain/<name>")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"init_encoders: {meta_path}: invalid JSON ({e})") from None
    if meta.get("format") != PRETRAIN_FORMAT:
        raise ConfigError(f"init_encoders: {meta_path}: format {meta.get('format')!r}, expected {PRETRAIN_FORMAT!r}")
    try:
        raw = torch.load(heads_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"init_encoders: {heads_path}: cannot be read ({type(e).__name__})") from None
    heads, shapes = {}, set()
    for m, sd in dict(raw).items():
        sd = {k[len("net."):] if k.startswith("net.") else k: v for k, v in dict(sd).items()}
        need = {"0.weight", "0.bias", "2.weight", "2.bias"}
        if set(sd) != need:
            raise ConfigError(f"init_encoders: {heads_path}: head '{m}' has keys {sorted(sd)}, expected {sorted(need)}")
        heads[m] = sd
        shapes.add((int(sd["0.weight"].shape[0]), int(sd["2.weight"].shape[0])))
    if len(shapes) != 1:
        raise ConfigError(f"init_encoders: {heads_path}: heads of different widths {sorted(shapes)}")
    hidden, dim = shapes.pop()
    return {"heads": heads, "hidden": hidden, "dim": dim,
            "input_dims": {m: int(sd["0.weight"].shape[1]) for m, sd in heads.items()}, "folder": str(folder)}


def mmssl_model_overrides(pre: dict, input_dims: Mapping[str, int], vector_modalities) -> dict:
    """``LateFusionConfig`` fields that make the vector encoders MMSSL heads of ``pre``'s widths.

    Every vector modality needs a head whose input width equals its feature width.
    """
    for m in vector_modalities:
        if m not in pre["heads"]:
            raise ConfigError(f"init_encoders: {pre['folder']} has no head for modality '{m}' "
                              f"(heads: {sorted(pre['heads'])})")
        if pre["input_dims"][m] != int(input_dims[m]):
            raise ConfigError(f"init_encoders: {pre['folder']}: the '{m}' head reads {pre['input_dims'][m]}-d features, "
                              f"but the features are {int(input_dims[m])}-d (other encoder?)")
    return {"encoder": "mmssl", "proj_hidden": pre["hidden"], "proj_dim": pre["dim"]}


@torch.no_grad()
def copy_mmssl_heads(net, pre: dict, freeze: bool) -> None:
    """Copy ``pre``'s heads into ``net.vec[m].proj``; ``freeze`` turns their gradients off."""
    for m, enc in net.vec.items():
        enc.proj.load_state_dict({k: v.to(enc.proj[0].weight.dtype) for k, v in pre["heads"][m].items()})
        for p in enc.proj.parameters():
            p.requires_grad_(not freeze)


__all__ = ["load_mmssl_heads", "mmssl_model_overrides", "copy_mmssl_heads"]
