"""Single-stream multimodal classifier with audio fused by the head (000 §3.2)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from mmal.errors import ConfigError
from mmal.models.config import ModelConfig
from mmal.models.layers import MLP, AvgPoolAudioFusion, MultiwayBlock, VLMAEFusion, masked_mean, reduce_tokens

Batch = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


class MultimodalClassifier(nn.Module):
    """VLMo/BEiT-3-style single-stream transformer + fusion head.

    Backbone input: ``[CLS] + proj(image tokens) + proj(text tokens)`` (every backbone
    modality in name order, visual first), each token = ``Linear(LN(x)) + position_m +
    type_m``; padded and missing tokens are excluded as attention keys. ``H_cls`` is the
    final-LayerNorm state of [CLS]. Head modalities (audio) bypass the backbone and are
    fused by the head:

    - ``fusion="none"``: ``logits = MLP(H_cls)``;
    - ``fusion="avgpool"``: ``MLP(concat(H_cls, avg_pooling(H_A)))`` — implements 000 eq. 6;
    - ``fusion="vlmae"``: ``MLP(concat(softmax(k q / sqrt(d_A)) · v, H_cls))`` with
      ``q = W_q H_cls``, ``k = W_k H_A``, ``v = W_v H_A`` (masked to real frames) —
      implements 000 eq. 7 with the METHODS C fix.

    Parameters
    ----------
    config : ModelConfig

    Notes
    -----
    ``forward(batch)`` takes ``{modality: (x [B, T, d_m] float, mask [B, T] bool)}``
    (True = real token, real tokens first) as built by :func:`mmal.train.data.collate`; a
    modality missing from ``batch`` is treated as absent for every item. It returns a dict:

    - ``logits [B, C]`` of the fused head; ``cls [B, d_model]`` = H_cls;
    - ``penultimate [B, h]`` = input of the fused head's last linear layer;
    - ``modality {m: z_m}``: backbone modalities: masked mean of that modality's output
      tokens ``[B, d_model]``; head modalities: the audio vector used by the head
      (``avgpool``/``none``: mean of normalised frames ``[B, d_a]``; ``vlmae``: ``a · v``
      ``[B, d_A]``). Zeros (or the learned missing vector) where the item lacks ``m``;
    - ``present {m: [B] bool}``;
    - ``unimodal_logits {m: [B, C]}`` when ``heads == "fused+unimodal"``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        d = c.d_model
        self.backbone_modalities = c.backbone_modalities
        self.head_modalities = c.fused_head_modalities
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.type_embed = nn.Embedding(1 + len(self.backbone_modalities), d)
        self.in_norm = nn.ModuleDict(
            {m: (nn.LayerNorm(c.input_dims[m]) if c.input_norm else nn.Identity()) for m in c.modalities}
        )
        self.proj = nn.ModuleDict({m: nn.Linear(c.input_dims[m], d) for m in self.backbone_modalities})
        self.pos = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(c.token_limit(m), d) * 0.02) for m in self.backbone_modalities}
        )
        experts = ["cls", *self.backbone_modalities] if c.multiway else ["shared"]
        self.blocks = nn.ModuleList([MultiwayBlock(d, c.n_heads, c.dropout, experts, c.ffn_mult) for _ in range(c.n_layers)])
        self.final_norm = nn.LayerNorm(d)
        self.embed_drop = nn.Dropout(c.dropout)

        self.audio = nn.ModuleDict()
        for m in self.head_modalities:
            if c.fusion == "vlmae":
                self.audio[m] = VLMAEFusion(d, c.input_dims[m], c.d_attn, c.audio_missing)
            else:  # avgpool, and "none" (vector only used by the unimodal head / outputs)
                self.audio[m] = AvgPoolAudioFusion(c.input_dims[m], c.audio_missing)
        d_fused = d + (sum(self.audio[m].d_out for m in self.head_modalities) if c.fusion != "none" else 0)
        self.head = MLP(d_fused, c.mlp_hidden, c.n_classes, c.mlp_layers, c.dropout)
        self.unimodal = nn.ModuleDict()
        if c.heads == "fused+unimodal":
            for m in c.modalities:
                d_m = d if m in self.backbone_modalities else self.audio[m].d_out
                self.unimodal[m] = MLP(d_m, c.mlp_hidden, c.n_classes, c.unimodal_layers, c.dropout)

    # ------------------------------------------------------------------------------
    def _inputs(self, batch: Batch):
        c = self.config
        unknown = set(batch) - set(c.modalities)
        if unknown:
            raise ConfigError(f"batch has modalities {sorted(unknown)} the model was not built for; model has {c.modalities}")
        B = None
        for x, mask in batch.values():
            B = x.shape[0]
            break
        if B is None:
            raise ConfigError("empty batch: expected at least one modality")
        ref = next(iter(batch.values()))[0]
        out = {}
        for m in c.modalities:
            if m in batch:
                x, mask = batch[m]
                if x.dim() != 3 or x.shape[-1] != c.input_dims[m] or mask.shape != x.shape[:2]:
                    raise ConfigError(
                        f"modality '{m}': expected x [B, T, {c.input_dims[m]}] and mask [B, T], got {tuple(x.shape)} / {tuple(mask.shape)}"
                    )
                x, mask = x.to(ref.dtype), mask.to(torch.bool)
            else:
                x = torch.zeros(B, 1, c.input_dims[m], dtype=ref.dtype, device=ref.device)
                mask = torch.zeros(B, 1, dtype=torch.bool, device=ref.device)
            out[m] = reduce_tokens(x, mask, c.token_limit(m), c.token_reduction)
        return B, out

    def forward(self, batch: Batch) -> dict:
        """Classify a batch; see the class docstring for inputs and outputs."""
        c = self.config
        B, inputs = self._inputs(batch)
        dev = self.cls_token.device
        zero = torch.zeros((), device=dev)

        # --- backbone over [CLS] + backbone modality tokens --------------------------
        tokens = [self.cls_token.expand(B, 1, -1) + self.type_embed.weight[0]]
        pads = [torch.zeros(B, 1, dtype=torch.bool, device=dev)]
        segments = [("cls" if c.multiway else "shared", 0, 1)]
        start = 1
        for i, m in enumerate(self.backbone_modalities):
            x, mask = inputs[m]
            T = x.shape[1]
            h = self.proj[m](self.in_norm[m](x)) + self.pos[m][:T] + self.type_embed.weight[1 + i]  # [B, T, d_in] -> [B, T, d]
            h = torch.where(mask.unsqueeze(-1), h, zero)  # pads carry exact zeros (never NaN)
            tokens.append(h)
            pads.append(~mask)
            segments.append((m if c.multiway else "shared", start, start + T))
            start += T
        h = self.embed_drop(torch.cat(tokens, 1))  # [B, 1 + sum T_m, d]
        pad = torch.cat(pads, 1)
        for blk in self.blocks:
            h = blk(h, pad, segments)
        h = self.final_norm(h)
        h_cls = h[:, 0]  # [B, d]

        modality, present = {}, {}
        for m, (_, s, e) in zip(self.backbone_modalities, segments[1:]):
            mask = inputs[m][1]
            modality[m] = masked_mean(h[:, s:e], mask)  # [B, T_m, d] -> [B, d]
            present[m] = mask.any(1)

        # --- head modalities (audio) ------------------------------------------------
        fused = [h_cls]
        audio_vecs = []
        for m in self.head_modalities:
            x, mask = inputs[m]
            xa = torch.where(mask.unsqueeze(-1), self.in_norm[m](x), zero)  # [B, T, d_a]
            z = self.audio[m](h_cls, xa, mask)  # [B, d_a] or [B, d_A]
            modality[m] = z
            present[m] = mask.any(1)
            audio_vecs.append(z)
        if c.fusion == "vlmae":
            fused = audio_vecs + fused  # eq. 7: concat(attn · H_A, H_cls)
        elif c.fusion == "avgpool":
            fused = fused + audio_vecs  # eq. 6: concat(H_cls, avg_pooling(H_A))
        logits, pen = self.head(torch.cat(fused, 1))  # [B, d_fused] -> [B, C]

        out = {"logits": logits, "cls": h_cls, "penultimate": pen, "modality": modality, "present": present}
        if len(self.unimodal):
            out["unimodal_logits"] = {m: self.unimodal[m](modality[m])[0] for m in self.unimodal}
        return out
