"""A small image captioner over frozen patch features (002 ch. 5 stand-in for an LVLM).

The frozen image tower's patch grid (EfficientNet-Lite0, ``[P, 1280]``) is projected to
``d_model`` and read by a causal transformer decoder over a word vocabulary through
cross-attention. Greedy decoding; visual contrastive decoding (VCD) as an inference
baseline (002 §5.4.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mmal.errors import ConfigError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocab:
    """Word vocabulary: the specials (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3), then
    the sorted words of the training captions (whitespace tokenisation, lower case)."""

    def __init__(self, words):
        self.itos = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad, self.bos, self.eos, self.unk = 0, 1, 2, 3

    @classmethod
    def from_captions(cls, captions) -> "Vocab":
        return cls(w for c in captions for w in c.lower().split())

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str) -> list[int]:
        """Caption -> ids of its words, then EOS (no BOS)."""
        return [self.stoi.get(w, self.unk) for w in caption.lower().split()] + [self.eos]

    def decode(self, ids) -> list[str]:
        """Ids -> words, stopping at the first EOS (specials dropped)."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return out


@dataclass
class CaptionerConfig:
    """Size of :class:`Captioner` (defaults: 2 layers, d = 128, trainable on one CPU core)."""

    vocab_size: int
    feat_dim: int = 1280
    n_patches: int = 16
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    ff_dim: int = 256
    dropout: float = 0.1
    max_len: int = 40

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ConfigError(f"CaptionerConfig: d_model = {self.d_model} must be divisible by n_heads = {self.n_heads}")
        if min(self.vocab_size, self.feat_dim, self.n_patches, self.n_layers, self.max_len) < 1:
            raise ConfigError("CaptionerConfig: vocab_size, feat_dim, n_patches, n_layers, max_len must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


class Captioner(nn.Module):
    """Patch features ``[B, P, F]`` + input tokens ``[B, L]`` -> next-token logits ``[B, L, V]``.

    Image side: LayerNorm -> Linear(F, d) + a learned embedding per patch position.
    Text side: token + learned position embeddings, ``n_layers`` pre-norm
    ``nn.TransformerDecoderLayer`` (causal self-attention, cross-attention to the patches),
    final LayerNorm, linear output head.
    """

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.cfg = cfg
        self.img_norm = nn.LayerNorm(cfg.feat_dim)
        self.img_proj = nn.Linear(cfg.feat_dim, cfg.d_model)
        self.patch_pos = nn.Parameter(torch.zeros(1, cfg.n_patches, cfg.d_model))
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_len + 1, cfg.d_model))
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.n_heads, cfg.ff_dim, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.n_layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        nn.init.normal_(self.patch_pos, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def memory(self, feats: torch.Tensor) -> torch.Tensor:
        """Patch features ``[B, P, F]`` -> decoder memory ``[B, P, d]``."""
        if feats.dim() != 3 or feats.shape[1:] != (self.cfg.n_patches, self.cfg.feat_dim):
            raise ConfigError(f"features have shape {tuple(feats.shape)}, expected [B, {self.cfg.n_patches}, "
                              f"{self.cfg.feat_dim}]")
        return self.img_proj(self.img_norm(feats.float())) + self.patch_pos

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        if L > self.cfg.max_len + 1:
            raise ConfigError(f"token sequence of length {L} exceeds max_len + 1 = {self.cfg.max_len + 1}")
        x = self.tok(tokens) + self.pos[:, :L]  # [B, L, d]
        causal = torch.triu(torch.full((L, L), float("-inf")), diagonal=1)
        h = self.decoder(x, self.memory(feats), tgt_mask=causal)
        return self.head(self.norm(h))  # -> [B, L, V]


@torch.no_grad()
def decode(model: Captioner, feats: torch.Tensor, *, bos: int, eos: int, max_len: int | None = None,
           method: str = "greedy", noisy_feats: torch.Tensor | None = None, vcd_alpha: float = 1.0,
           vcd_beta: float = 0.1) -> torch.Tensor:
    """Decode captions for ``feats`` ``[B, P, F]``; returns ids ``[B, <= max_len]`` (EOS-padded).

    ``method="greedy"``: argmax of ``p(y_t | y<t, v)`` at every step.
    ``method="vcd"`` (VCD, Leng et al. 2024): argmax of
    ``(1 + alpha) * logit(y | v) - alpha * logit(y | v*)`` over the tokens that pass the
    adaptive plausibility constraint ``p(y | v) >= beta * max_y p(y | v)``; ``v*`` =
    ``noisy_feats`` (features of the noised image). Defaults ``alpha = 1``, ``beta = 0.1``
    (VCD's); greedy instead of VCD's sampling, as the thesis decodes greedily.
    """
    if method not in ("greedy", "vcd"):
        raise ConfigError(f"decode method = {method!r}: expected 'greedy' or 'vcd'")
    if method == "vcd" and noisy_feats is None:
        raise ConfigError("decode method 'vcd' needs noisy_feats (features of the noised images)")
    was = model.training
    model.eval()
    max_len = model.cfg.max_len if max_len is None else int(max_len)
    B = feats.shape[0]
    ys = torch.full((B, 1), bos, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        logit = model(feats, ys)[:, -1]  # [B, V]
        if method == "vcd":
            logit_n = model(noisy_feats, ys)[:, -1]
            cd = (1 + vcd_alpha) * logit - vcd_alpha * logit_n
            cutoff = torch.log(torch.tensor(vcd_beta)) + logit.max(-1, keepdim=True).values
            logit = cd.masked_fill(logit < cutoff, float("-inf"))
        nxt = logit.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        ys = torch.cat([ys, nxt[:, None]], 1)
        done |= nxt == eos
        if bool(done.all()):
            break
    model.train(was)
    return ys[:, 1:]


__all__ = ["Vocab", "CaptionerConfig", "Captioner", "decode", "SPECIALS"]
