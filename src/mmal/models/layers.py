"""Building blocks: token reduction, multiway transformer block, MLP, audio fusions.

Masks follow one convention everywhere: ``mask [B, T] bool``, True = real token, and real
tokens form a prefix of each row (what :func:`mmal.train.data.collate` produces).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens; zeros for rows without any. ``[B, T, d], [B, T] -> [B, d]``."""
    m = mask.unsqueeze(-1)  # [B, T, 1]
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1)  # [B, d]
    return total / m.sum(1).to(x.dtype).clamp(min=1.0)


def reduce_tokens(x: torch.Tensor, mask: torch.Tensor, max_tokens: int | None, how: str = "pool"):
    """Reduce each row to at most ``max_tokens`` real tokens.

    Parameters
    ----------
    x : [B, T, d]; mask : [B, T] bool, prefix of real tokens.
    max_tokens : M; ``None`` or ``T <= M`` returns the input unchanged.
    how : ``"pool"`` = mean of contiguous bins (token j of a row with L > M real tokens goes
        to bin floor(j*M/L), so every bin is non-empty); ``"stride"`` = keep tokens floor(k*L/M).
        Rows with L <= M keep their tokens unchanged.

    Returns
    -------
    x' [B, M, d], mask' [B, M]
    """
    B, T, d = x.shape
    if max_tokens is None or T <= max_tokens:
        return x, mask
    M = int(max_tokens)
    L = mask.sum(1)  # [B]
    if how == "stride":
        k = torch.arange(M, device=x.device)  # [M]
        idx = torch.where(L[:, None] > M, (k[None, :] * L[:, None]) // M, k[None, :].expand(B, M))  # [B, M]
        out = torch.gather(x, 1, idx.unsqueeze(-1).expand(B, M, d))
        new_mask = k[None, :] < torch.clamp(L, max=M)[:, None]
        return torch.where(new_mask.unsqueeze(-1), out, torch.zeros((), dtype=x.dtype)), new_mask
    j = torch.arange(T, device=x.device)  # [T]
    bins = torch.where(L[:, None] > M, (j[None, :] * M) // L.clamp(min=1)[:, None], j[None, :].expand(B, T))  # [B, T]
    bins = torch.where(mask, bins, torch.full_like(bins, M))  # pads -> dump bin M
    sums = torch.zeros(B, M + 1, d, dtype=x.dtype, device=x.device)
    sums.scatter_add_(1, bins.unsqueeze(-1).expand(B, T, d), x)  # [B, M+1, d]
    counts = torch.zeros(B, M + 1, dtype=x.dtype, device=x.device)
    counts.scatter_add_(1, bins, mask.to(x.dtype))  # [B, M+1]
    sums, counts = sums[:, :M], counts[:, :M]
    return sums / counts.clamp(min=1.0).unsqueeze(-1), counts > 0


class MultiwayBlock(nn.Module):
    """Pre-LN transformer block with shared self-attention and per-type feed-forward experts.

    VLMo / BEiT-3 "multiway" design: all tokens attend jointly; each token type (``cls``,
    ``image``, ``text``, ...) has its own LayerNorm + FFN. Token types occupy contiguous
    segments of the sequence, so each expert runs only on its own slice.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, experts: list[str], ffn_mult: int = 4):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ln_ffn = nn.ModuleDict({e: nn.LayerNorm(d_model) for e in experts})
        self.ffn = nn.ModuleDict(
            {
                e: nn.Sequential(
                    nn.Linear(d_model, ffn_mult * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * d_model, d_model)
                )
                for e in experts
            }
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, pad: torch.Tensor, segments: list[tuple[str, int, int]]) -> torch.Tensor:
        """``h [B, T, d]``, ``pad [B, T]`` (True = ignore as key), segments ``(expert, start, end)``."""
        a = self.ln_attn(h)
        a, _ = self.attn(a, a, a, key_padding_mask=pad, need_weights=False)
        h = h + self.drop(a)
        parts = [h[:, s:e] + self.drop(self.ffn[name](self.ln_ffn[name](h[:, s:e]))) for name, s, e in segments]
        return torch.cat(parts, dim=1)


class MLP(nn.Module):
    """``n_layers`` linear layers with GELU + dropout between them.

    ``forward`` returns ``(logits [B, C], penultimate [B, h])`` where ``penultimate`` is the
    input of the last linear layer (the input itself when ``n_layers == 1``).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int = 3, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(n_layers - 1):
            layers += [nn.Linear(d, d_hidden), nn.GELU(), nn.Dropout(dropout)]
            d = d_hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(d, d_out)
        self.d_penultimate = d

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return self.out(h), h


class AvgPoolAudioFusion(nn.Module):
    """Late-fusion audio vector of 000 eq. 6: ``avg_pooling(H_A)`` over real frames.

    ``H_A [B, T, d_a], mask [B, T] -> [B, d_a]``; rows without audio get zeros or a learned
    ``missing`` vector (``audio_missing``).
    """

    def __init__(self, d_audio: int, audio_missing: str = "zeros"):
        super().__init__()
        self.d_out = d_audio
        self.missing = nn.Parameter(torch.zeros(d_audio)) if audio_missing == "learned" else None

    def forward(self, h_cls: torch.Tensor, h_a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = masked_mean(h_a, mask)  # [B, T, d_a] -> [B, d_a]
        if self.missing is not None:
            has = mask.any(1, keepdim=True)
            z = torch.where(has, z, self.missing.expand_as(z))
        return z


class VLMAEFusion(nn.Module):
    """Audio attention anchored on the VL [CLS] state: 000 eq. 7 with the METHODS C fix.

    ``q = W_q H_cls [B, d_A]``, ``k = W_k H_A``, ``v = W_v H_A`` ``[B, T, d_A]``;
    ``a = softmax(k q / sqrt(d_A))`` over the item's *real* frames only; output ``a · v``
    ``[B, d_A]``. The classifier concatenates it with ``H_cls`` before the MLP (eq. 7).
    Rows without any real frame output zeros (or the learned ``missing`` vector), never NaN,
    and padded frames' values cannot influence the output (their weight is exactly 0).
    """

    def __init__(self, d_cls: int, d_audio: int, d_attn: int = 128, audio_missing: str = "zeros"):
        super().__init__()
        self.q = nn.Linear(d_cls, d_attn)
        self.k = nn.Linear(d_audio, d_attn)
        self.v = nn.Linear(d_audio, d_attn)
        self.d_out = d_attn
        self.scale = 1.0 / math.sqrt(d_attn)
        self.missing = nn.Parameter(torch.zeros(d_attn)) if audio_missing == "learned" else None
        self.last_attention: torch.Tensor | None = None

    def forward(self, h_cls: torch.Tensor, h_a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.q(h_cls)  # [B, d] -> [B, d_A]
        k, v = self.k(h_a), self.v(h_a)  # [B, T, d_a] -> [B, T, d_A]
        s = torch.einsum("btd,bd->bt", k, q) * self.scale  # [B, T]
        s = s.masked_fill(~mask, float("-inf"))
        has = mask.any(1, keepdim=True)  # [B, 1]
        s = torch.where(has, s, torch.zeros_like(s))  # all-masked rows: avoid softmax(-inf) = NaN
        a = torch.softmax(s, dim=1) * mask.to(s.dtype)  # [B, T]; exact zeros on pads
        self.last_attention = a.detach()
        out = torch.einsum("bt,btd->bd", a, torch.where(mask.unsqueeze(-1), v, torch.zeros((), dtype=v.dtype)))  # [B, d_A]
        fill = self.missing.expand_as(out) if self.missing is not None else torch.zeros_like(out)
        return torch.where(has, out, fill)
