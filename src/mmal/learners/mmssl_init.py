"""Encoders initialised from an MMSSL pre-training (002 ch. 4).

The ``late-fusion`` learner's option ``init_encoders=FOLDER`` names a stored MMSSL
pre-training (``mmal pretrain DIR`` writes ``DIR/pretrain/<name>/``: ``meta.json`` and
``heads.pt``); the workspace edge reads it (:func:`mmal.loop.pretrain.load_mmssl_heads`)
and hands it to the learner, which makes each vector modality's encoder the MMSSL
projection head of that modality, with its trained weights
(``LateFusionConfig.encoder = "mmssl"``). Head modalities (audio frames) keep their block:
the MMSSL audio head was trained on the clip's pooled vector, not on the frames VLMAE
attends over.

The thesis pre-trains and then selects; it does not say whether the classifier starts from
the pre-trained heads. Both choices are named parameters: ``init_encoders`` (``None`` =
off, the default) and ``freeze_encoders`` (``True``: the heads stay as pre-trained and only
the fused layer and VLMAE train; ``False``: they are fine-tuned with the rest).
"""

from __future__ import annotations

from typing import Mapping

import torch

from mmal.errors import ConfigError

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


__all__ = ["mmssl_model_overrides", "copy_mmssl_heads"]
