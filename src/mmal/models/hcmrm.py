"""ALBEF-style relevance models (003 §3.2, Fig. 2; METHODS.md G) sized for a CPU.

Three architectures share the same inputs, so Table 1 of 003 can be reproduced in kind:

- ``dual`` (HCMRM / ALBEF): a text encoder over ``[CLS] Q [SEP] T``, an image encoder over
  the J frames' patch tokens, and a fusion encoder whose layers do self-attention over the
  text, **cross-attention to the image tokens**, then a feed-forward block;
- ``single`` (BERT-VL analog): the text tokens and the projected visual tokens are
  concatenated into one sequence and run through self-attention layers;
- ``text`` (BERT analog): the same layers without any visual input.

Text input. The text tower is the frozen MiniLM (``text:minilm``); its states of every text
segment are computed once (:class:`TextStates`) and a trainable projection (384 -> ``dim``)
plus trainable transformer layers sit on top (the "frozen + trainable layers on CPU" option
of METHODS G). ``text_states="contextual"`` uses MiniLM's last hidden states (default);
``"static"`` uses only its embedding layer (word + position embeddings, no context).

Image input. The frozen EfficientNet-Lite0 tower's final feature map of each of the J frames
is average-pooled to a ``grid x grid`` patch grid, giving ``J * grid^2`` tokens of 1280-d
(cached once); a trainable projection, a frame/patch position embedding, a learned
``[CLS]`` and ``n_image_layers`` transformer layers form the image encoder.

Differences from ALBEF, all forced by size: no momentum distillation and no queue (ITC is
in-batch); widths are ``dim`` (default 128) instead of 768; the fusion layers are fresh,
not copies of BERT's top layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmal.errors import ConfigError

ARCHS = ("dual", "single", "text")
SEG_Q, SEG_T = 0, 1


@dataclass
class RelevanceConfig:
    """Sizes and choices of :class:`RelevanceModel` (every open choice is a field)."""

    arch: str = "dual"
    dim: int = 128
    n_heads: int = 4
    n_text_layers: int = 1
    n_image_layers: int = 1
    n_fusion_layers: int = 2
    embed_dim: int = 64  # ITC projection width (ALBEF: 256)
    temp: float = 0.07  # initial ITC temperature (ALBEF: 0.07, learnable, clamped to [1e-3, 0.5])
    dropout: float = 0.1
    max_len: int = 64  # text tokens incl. [CLS]/[SEP]
    max_visual: int = 64
    in_text: int = 384
    in_visual: int = 1280
    vocab_size: int = 30522

    def check(self) -> "RelevanceConfig":
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown relevance architecture {self.arch!r}; expected one of {', '.join(ARCHS)}")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _layer(cfg: RelevanceConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(cfg.dim, cfg.n_heads, 4 * cfg.dim, cfg.dropout, activation="gelu",
                                      batch_first=True, norm_first=True)


class FusionLayer(nn.Module):
    """Self-attention over text, cross-attention to image tokens, feed-forward (pre-LN, ALBEF order)."""

    def __init__(self, cfg: RelevanceConfig):
        super().__init__()
        d = cfg.dim
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, pad, img, img_pad):
        h = self.n1(x)
        x = x + self.drop(self.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)[0])
        h = self.n2(x)
        x = x + self.drop(self.cross_attn(h, img, img, key_padding_mask=img_pad, need_weights=False)[0])
        return x + self.drop(self.ff(self.n3(x)))


class RelevanceModel(nn.Module):
    """Text encoder + image encoder + fusion encoder + pre-training heads (see module docstring).

    Inputs are already-assembled batches (:func:`mmal.relevance.pretrain.text_batch`):
    ``text = (states [B, L, in_text], segment [B, L], pad [B, L] bool)`` and
    ``visual = (tokens [B, N, in_visual], pad [B, N] bool)``.
    """

    def __init__(self, cfg: RelevanceConfig):
        super().__init__()
        self.cfg = cfg = cfg.check()
        d = cfg.dim
        self.text_proj = nn.Linear(cfg.in_text, d)
        self.seg_emb = nn.Embedding(2, d)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.text_norm = nn.LayerNorm(d)
        self.text_layers = nn.ModuleList(_layer(cfg) for _ in range(cfg.n_text_layers))
        self.mask_vec = nn.Parameter(torch.zeros(cfg.in_text))  # word-level MLM [MASK] in the input space
        if cfg.arch != "text":
            self.vis_proj = nn.Linear(cfg.in_visual, d)
            self.vis_pos = nn.Embedding(cfg.max_visual + 1, d)
            self.vis_cls = nn.Parameter(torch.zeros(1, 1, d))
            self.vis_norm = nn.LayerNorm(d)
            self.image_layers = nn.ModuleList(_layer(cfg) for _ in range(cfg.n_image_layers if cfg.arch == "dual" else 0))
        if cfg.arch == "dual":
            self.fusion = nn.ModuleList(FusionLayer(cfg) for _ in range(cfg.n_fusion_layers))
        else:
            self.fusion = nn.ModuleList(_layer(cfg) for _ in range(cfg.n_fusion_layers))
        self.out_norm = nn.LayerNorm(d)
        self.text_feat = nn.Linear(d, cfg.embed_dim)
        self.image_feat = nn.Linear(d, cfg.embed_dim) if cfg.arch != "text" else None
        self.log_temp = nn.Parameter(torch.tensor(float(cfg.temp)).log())
        self.itm_head = nn.Linear(d, 2)
        self.pqvm_head = nn.Linear(d, 2)
        self.mlm_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, cfg.vocab_size))

    # ---- encoders -----------------------------------------------------------------------------
    def encode_text(self, states, segment, pad):
        """Unimodal text encoder -> ``[B, L, dim]`` (position 0 is ``[CLS]``)."""
        L = states.shape[1]
        pos = torch.arange(L, device=states.device).clamp(max=self.cfg.max_len - 1)
        x = self.text_norm(self.text_proj(states) + self.seg_emb(segment) + self.pos_emb(pos)[None])
        for layer in self.text_layers:
            x = layer(x, src_key_padding_mask=pad)
        return x

    def encode_image(self, tokens, pad):
        """Image encoder -> ``([B, 1 + N, dim], pad [B, 1 + N])``; position 0 is the image ``[CLS]``."""
        B, N, _ = tokens.shape
        pos = torch.arange(1, N + 1, device=tokens.device).clamp(max=self.cfg.max_visual)
        x = self.vis_proj(tokens) + self.vis_pos(pos)[None]
        cls = self.vis_cls.expand(B, 1, -1) + self.vis_pos.weight[0]
        x = self.vis_norm(torch.cat([cls, x], 1))
        pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=pad.device), pad], 1)
        for layer in self.image_layers:
            x = layer(x, src_key_padding_mask=pad)
        return x, pad

    def fuse(self, t, t_pad, img=None, img_pad=None):
        """Fusion encoder over encoded text (and image) -> ``[B, L(+N), dim]``; ``[:, 0]`` = joint [CLS]."""
        if self.cfg.arch == "dual":
            x = t
            for layer in self.fusion:
                x = layer(x, t_pad, img, img_pad)
        elif self.cfg.arch == "single":
            x, pad = torch.cat([t, img], 1), torch.cat([t_pad, img_pad], 1)
            for layer in self.fusion:
                x = layer(x, src_key_padding_mask=pad)
        else:
            x = t
            for layer in self.fusion:
                x = layer(x, src_key_padding_mask=t_pad)
        return self.out_norm(x)

    def joint(self, text, visual):
        """``[CLS]`` of the fusion encoder for (text, visual) batches -> ``[B, dim]``."""
        states, seg, pad = text
        t = self.encode_text(states, seg, pad)
        img = img_pad = None
        if self.cfg.arch != "text":
            img, img_pad = self.encode_image(*visual)
        return self.fuse(t, pad, img, img_pad)[:, 0]

    def contrastive_features(self, t, img):
        """ITC features: L2-normalised projections of the text and image ``[CLS]`` -> ``[B, e]`` each."""
        return F.normalize(self.text_feat(t[:, 0]), dim=-1), F.normalize(self.image_feat(img[:, 0]), dim=-1)

    @property
    def temp(self) -> torch.Tensor:
        return self.log_temp.exp().clamp(1e-3, 0.5)
