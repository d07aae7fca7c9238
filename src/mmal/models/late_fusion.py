"""Late-fusion classifier: one encoder per modality, one linear layer over their concatenation.

This is the model family of thesis 002 ch. 3 (eq. 3.12: the fused classifier is a linear
layer over ``concat(z_1, ..., z_M)``), with audio fused as in 000 §3.2:

- text / image (and any other *vector* modality): ``z_m = E_m(x_m)`` from the frozen
  tower's pooled output of that modality alone. ``E_m`` centres the input on the pool mean
  and L2-normalises it (the "CL2N" normalisation of few-shot probes); ``encoder="mlp"``
  adds a residual MLP whose last layer starts at zero, so training starts from the
  normalised features; ``encoder="mmssl"`` is the MMSSL projection head of 002 ch. 4
  (``z_m = normalise(W_2 GELU(W_1 normalise(x_m)))``, ``proj_dim`` wide; :mod:`mmal.models.mmssl`),
  whose weights the learner copies from a pre-training (``init_encoders``);
- audio (a *head* modality) reaches the head as Whisper frames ``H_A [T, d_a]``:
  ``fusion="avgpool"`` implements 000 eq. 6 (``z_A = avg_pooling(H_A)``, normalised);
  ``fusion="vlmae"`` implements 000 eq. 7 with the METHODS C projections:
  ``z_A = normalise(softmax(k q / sqrt(d_A)) · v)`` over the clip's real frames,
  ``k = W_k H_A``, ``v = H_A`` (``vlmae_value="identity"``, as printed in eq. 7) or
  ``v = W_v H_A`` (``"projected"``); ``W_q`` starts at zero, so training starts from
  uniform attention (= the avg-pool block) and learns where to look; the query is ``q = W_q concat(z_text, z_image)`` — the
  vision-language anchor of eq. 7 (``vlmae_query="vl"``) — or a learned vector that makes
  ``z_A`` a function of the audio alone (``vlmae_query="learned"``);
  ``fusion="none"`` drops audio;
- fused logits ``= W concat(z_m for m in sorted modalities) + b`` (one linear layer).

Because the last layer is linear over the blocks, ``logits = Σ_m W_m z_m + b``: the
gradient-embedding blocks of BADGE/BMMAL (002 eq. 3.12-3.14) are exactly ``(p - e_ŷ) ⊗ z_m``,
and "zeroing a modality feature" (BMMAL's coalition value, METHODS E) is dropping its term.
With ``heads="fused+unimodal"`` each modality also gets a linear head on its own ``z_m``.

A missing modality gives ``z_m = 0`` (the pool mean after centring).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mmal.errors import ConfigError

LF_FUSIONS = ("none", "avgpool", "vlmae")
LF_ENCODERS = ("identity", "mlp", "mmssl")
LF_HEADS = ("fused", "fused+unimodal")
VLMAE_QUERIES = ("vl", "learned")
VLMAE_VALUES = ("projected", "identity")


@dataclass
class LateFusionConfig:
    """Everything needed to rebuild a :class:`LateFusionClassifier`.

    Parameters
    ----------
    input_dims : ``{modality: feature dim}`` of the frozen towers.
    n_classes : C (>= 2).
    head_modalities : modalities given to the head as frame sequences (``("audio",)``).
    fusion : ``"none"`` | ``"avgpool"`` (000 eq. 6, default) | ``"vlmae"`` (000 eq. 7) for head
        modalities. Avg-pool is the default because it is at or above the linear probe at every
        budget on both bench datasets and VLMAE is not (Tux Paint, 400 labels: VLMAE 0.6 points
        below the probe; bench/learner.py, docs/learners.md), at a third of the fit time.
    encoder : per-modality encoder of vector modalities: ``"identity"`` (centre + L2
        normalise), ``"mlp"`` (that plus a zero-initialised residual MLP) or ``"mmssl"``
        (the MMSSL projection head's shape, ``proj_hidden`` -> ``proj_dim``, output
        L2-normalised; no centring, as MMSSL trains on plainly normalised features).
    proj_hidden, proj_dim : hidden and output width of the ``"mmssl"`` encoder (512, 128:
        :class:`mmal.models.mmssl.MMSSLConfig`'s defaults).
    d_hidden : hidden width of the residual MLP (256).
    dropout : dropout on the blocks before the fused layer during training (0.0).
    d_attn : VLMAE attention width d_A (128).
    vlmae_query : ``"vl"`` (eq. 7's vision-language anchor) or ``"learned"``.
    vlmae_value : ``"identity"`` (default: ``v = H_A`` as printed in eq. 7, d_a wide) or
        ``"projected"`` (METHODS C: ``v = W_v H_A``, d_A wide). The query and key are always
        learnable projections (METHODS C). Measured on Tux Paint (bench/learner.py history,
        2 seeds): the projected value gave 0.62 test accuracy at 200 labels where the
        identity value keeps the head's input in the frames' own space; with ≤ 400 labels
        the extra 384 x d_A value matrix lets the head memorise through the audio block.
    audio_max_frames : frames per clip the head attends over; longer clips are averaged
        into this many contiguous bins. ``None`` (default) keeps every real Whisper frame
        (≤ 1,500 per 30 s clip); a number bounds memory for long clips on small machines
        (it coarsens the attention: each weight then covers several 20 ms frames).
    heads : ``"fused"`` or ``"fused+unimodal"`` (a linear head per modality on ``z_m``).
    center : centre every input on its pool mean before normalising (True); False keeps the
        raw direction (what the plain ``linear`` probe does).
    head_scale : norm of the head modalities' (audio) unit blocks relative to the others'
        (0.25). Below 1 the fused layer needs larger weights to use audio, so the probe's L2
        penalty, weight decay and the finite training budget lean on the vision-language
        blocks first. The ``late-fusion`` learner chooses it per fit by cross-validation on the
        labeled items (``head_scale_grid``); this default applies when it cannot (too few
        labels per class) or when the grid is empty. 0.25 was the best fixed value on Tux Paint
        (at 1.0 the audio block cost 2-3 points there); synthetic-video wants 1.0.
    """

    input_dims: dict[str, int]
    n_classes: int = 2
    head_modalities: tuple[str, ...] = ("audio",)
    fusion: str = "avgpool"
    encoder: str = "identity"
    d_hidden: int = 256
    dropout: float = 0.0
    d_attn: int = 128
    vlmae_query: str = "vl"
    vlmae_value: str = "identity"
    audio_max_frames: int | None = None
    heads: str = "fused"
    center: bool = True
    head_scale: float = 0.25
    proj_hidden: int = 512
    proj_dim: int = 128

    def __post_init__(self):
        self.input_dims = {str(k): int(v) for k, v in dict(self.input_dims).items()}
        self.head_modalities = tuple(self.head_modalities)
        checks = [
            (bool(self.input_dims), "input_dims is empty: expected at least one modality"),
            (all(d > 0 for d in self.input_dims.values()), "input_dims must be positive"),
            (self.n_classes >= 2, f"n_classes = {self.n_classes}: expected >= 2"),
            (self.fusion in LF_FUSIONS, f"fusion = '{self.fusion}': expected one of {LF_FUSIONS}"),
            (self.encoder in LF_ENCODERS, f"encoder = '{self.encoder}': expected one of {LF_ENCODERS}"),
            (self.heads in LF_HEADS, f"heads = '{self.heads}': expected one of {LF_HEADS}"),
            (self.vlmae_query in VLMAE_QUERIES, f"vlmae_query = '{self.vlmae_query}': expected one of {VLMAE_QUERIES}"),
            (self.vlmae_value in VLMAE_VALUES, f"vlmae_value = '{self.vlmae_value}': expected one of {VLMAE_VALUES}"),
            (0.0 <= self.dropout < 1.0, f"dropout = {self.dropout}: expected 0 <= dropout < 1"),
            (self.d_attn > 0 and self.d_hidden > 0, "d_attn and d_hidden must be positive"),
            (self.proj_hidden > 0 and self.proj_dim > 0, "proj_hidden and proj_dim must be positive"),
            (self.audio_max_frames is None or self.audio_max_frames >= 1, "audio_max_frames must be >= 1 or None"),
            (self.head_scale > 0, f"head_scale = {self.head_scale}: expected > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError("LateFusionConfig." + msg)
        if not self.block_modalities:
            raise ConfigError(f"LateFusionConfig: no modality left for the head (modalities {self.modalities}, fusion 'none')")

    @property
    def modalities(self) -> list[str]:
        return sorted(self.input_dims)

    @property
    def vector_modalities(self) -> list[str]:
        """Modalities encoded from their pooled vector (sorted)."""
        return [m for m in self.modalities if m not in self.head_modalities]

    @property
    def frame_modalities(self) -> list[str]:
        """Head modalities fused from frames (empty with ``fusion="none"``)."""
        return [] if self.fusion == "none" else [m for m in self.modalities if m in self.head_modalities]

    @property
    def block_modalities(self) -> list[str]:
        """Modalities with a block in the fused layer, in concatenation order (sorted)."""
        return sorted(self.vector_modalities + self.frame_modalities)

    def block_dim(self, m: str) -> int:
        if m in self.vector_modalities:
            return self.proj_dim if self.encoder == "mmssl" else self.input_dims[m]
        return self.d_attn if (self.fusion == "vlmae" and self.vlmae_value == "projected") else self.input_dims[m]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_modalities"] = list(self.head_modalities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LateFusionConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"LateFusionConfig: unknown fields {sorted(unknown)}; expected a subset of {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(d))


def _centre_normalise(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``(x - μ) / ||x - μ||`` along the last axis (zero rows stay zero)."""
    c = x - mu
    return c / c.norm(dim=-1, keepdim=True).clamp(min=1e-8)


class VectorEncoder(nn.Module):
    """``z = n + MLP(n)`` with ``n = centre_normalise(x)``; identity when ``mlp`` is False.

    With ``proj = (hidden, dim)``: the MMSSL projection head instead,
    ``z = normalise(proj(x / ||x||))`` ``[B, d] -> [B, dim]`` (``proj`` has the layout of
    :class:`mmal.models.mmssl.ProjectionHead`'s ``net``, so its state dict loads as is).
    """

    def __init__(self, d: int, mlp: bool, d_hidden: int, proj: tuple[int, int] | None = None):
        super().__init__()
        self.register_buffer("mu", torch.zeros(d))
        self.mlp = None
        self.proj = None
        if proj is not None:
            self.proj = nn.Sequential(nn.Linear(d, proj[0]), nn.GELU(), nn.Linear(proj[0], proj[1]))
        elif mlp:
            self.mlp = nn.Sequential(nn.Linear(d, d_hidden), nn.GELU(), nn.Linear(d_hidden, d))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, d] -> [B, d] (or [B, dim])
        if self.proj is not None:
            n = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            return F.normalize(self.proj(n), dim=-1)
        n = _centre_normalise(x, self.mu)
        return n if self.mlp is None else n + self.mlp(n)


def unit_frames(frames: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Centre each frame on the pool mean and L2-normalise it: ``[F, d] -> [F, d]``."""
    return _centre_normalise(frames, mu)


#: rows per length bucket of padded frames (clips sorted by length, so padding stays small)
BUCKET_ROWS = 32


def bucket_frames(frames: torch.Tensor, lens, bucket_rows: int = BUCKET_ROWS) -> list:
    """Packed frames ``[F, d]`` of rows with lengths ``lens [n]`` -> length buckets.

    Rows are sorted by length and cut into groups of ``bucket_rows``; each group is padded
    to its own longest clip: ``[(rows [b] long, H [b, T, d], mask [b, T] bool), ...]``.
    Rows without frames are left out. Attention then runs as batched matrix products
    (:class:`FramePooling`), about 3x faster than gathers over packed frames on CPU.
    """
    import numpy as np

    lens = np.asarray(lens, np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)])
    order = [int(r) for r in np.argsort(lens, kind="stable") if lens[r] > 0]
    out = []
    for c in range(0, len(order), bucket_rows):
        rows = order[c : c + bucket_rows]
        T = int(lens[rows].max())
        H = frames.new_zeros(len(rows), T, frames.shape[1])
        M = torch.zeros(len(rows), T, dtype=torch.bool)
        for j, r in enumerate(rows):
            H[j, : lens[r]] = frames[starts[r] : starts[r + 1]]
            M[j, : lens[r]] = True
        out.append((torch.tensor(rows, dtype=torch.long), H, M))
    return out


class FramePooling(nn.Module):
    """Audio block from frames: avg-pool (000 eq. 6) or VLMAE attention (000 eq. 7 + METHODS C).

    Frames come as length buckets (:func:`bucket_frames`) of unit frames (already passed
    through :func:`unit_frames` with this module's ``mu``); rows without audio get zeros.
    """

    def __init__(self, d_audio: int, d_anchor: int, cfg: LateFusionConfig):
        super().__init__()
        self.kind = cfg.fusion
        self.register_buffer("mu", torch.zeros(d_audio))
        self.last_attention: list | None = None
        self.v = None
        if self.kind == "vlmae":
            d_a = cfg.d_attn
            self.scale = 1.0 / math.sqrt(d_a)
            self.query = cfg.vlmae_query
            if self.query == "vl" and d_anchor > 0:
                self.q = nn.Linear(d_anchor, d_a)
                nn.init.zeros_(self.q.weight)  # start from uniform attention (the avg-pool block)
                nn.init.zeros_(self.q.bias)
            else:
                self.query = "learned"
                self.q_vec = nn.Parameter(torch.zeros(d_a))
            self.k = nn.Linear(d_audio, d_a)
            self.v = nn.Linear(d_audio, d_a) if cfg.vlmae_value == "projected" else None

    def forward(self, buckets: list, n: int, anchor: torch.Tensor | None) -> torch.Tensor:
        """``buckets`` of unit frames, batch size ``n``, ``anchor [n, d]`` -> ``z [n, d_out]``.

        VLMAE is computed in an equivalent, cheaper order: with ``q = W_q anchor + b_q`` the
        score of frame t is ``q · (W_k h_t + b_k) / sqrt(d_A)``; ``q · b_k`` is the same for
        every frame of a clip and cancels in the softmax, so ``s_t = (W_kᵀ q) · h_t``
        (O(T d_a) instead of O(T d_a d_A)); and ``Σ_t a_t (W_v h_t + b_v) = W_v (Σ_t a_t h_t) + b_v``
        because a clip's weights sum to 1. The output is L2-normalised like the other blocks.
        """
        d = self.mu.shape[0]
        d_out = d if self.v is None else self.v.out_features
        if self.kind == "vlmae":
            q = self.q(anchor) if self.query == "vl" else self.q_vec.expand(n, -1)  # [n, d_A]
            u_all = q @ self.k.weight  # [n, d_A] x [d_A, d_a] -> [n, d_a]
        parts, rows_all, att = [], [], []
        for rows, H, M in buckets:
            if self.kind == "avgpool":
                hbar = H.sum(1) / M.sum(1, keepdim=True)  # padding rows are exact zeros
            else:
                u = u_all.index_select(0, rows)  # [b, d_a]
                sc = torch.bmm(H, u.unsqueeze(-1)).squeeze(-1) * self.scale  # [b, T]
                a = torch.softmax(sc.masked_fill(~M, float("-inf")), dim=1)  # [b, T], zeros on padding
                att.append(a.detach())
                hbar = torch.bmm(a.unsqueeze(1), H).squeeze(1)  # [b, d_a]
            parts.append(hbar if self.v is None else self.v(hbar))
            rows_all.append(rows)
        self.last_attention = att
        z = torch.zeros(n, d_out, dtype=self.mu.dtype)
        if parts:
            z = z.index_copy(0, torch.cat(rows_all), torch.cat(parts))
        z = z / z.norm(dim=-1, keepdim=True).clamp(min=1e-8)  # same scale as the other blocks; zero rows stay 0
        return z


class LateFusionClassifier(nn.Module):
    """Per-modality encoders -> ``concat(z_m)`` -> one linear layer (see the module docstring).

    ``forward(batch)`` takes ``{m: (x, present)}`` for vector modalities (``x [B, d_m]``,
    ``present [B]`` bool) and ``{m: (frames [F, d_m], seg [F], present [B], buckets)}`` for
    head modalities (packed unit frames and their length buckets, see :class:`FramePooling`;
    ``buckets=None`` builds them), as built by :func:`mmal.learners.late_fusion.late_fusion_batch`. It
    returns ``logits [B, C]``, ``modality {m: z_m [B, D_m]}``, ``present {m: [B]}``,
    ``fused_input [B, ΣD_m]`` (the concatenation the last layer reads) and, with unimodal
    heads, ``unimodal_logits {m: [B, C]}``.
    """

    def __init__(self, config: LateFusionConfig):
        super().__init__()
        c = self.config = config
        proj = (c.proj_hidden, c.proj_dim) if c.encoder == "mmssl" else None
        self.vec = nn.ModuleDict({m: VectorEncoder(c.input_dims[m], c.encoder == "mlp", c.d_hidden, proj)
                                  for m in c.vector_modalities})
        d_anchor = sum(c.block_dim(m) for m in c.vector_modalities)
        self.frames = nn.ModuleDict({m: FramePooling(c.input_dims[m], d_anchor, c) for m in c.frame_modalities})
        self.dims = {m: c.block_dim(m) for m in c.block_modalities}
        self.drop = nn.Dropout(c.dropout)
        self.fused = nn.Linear(sum(self.dims.values()), c.n_classes)
        self.unimodal = nn.ModuleDict()
        if c.heads == "fused+unimodal":
            self.unimodal = nn.ModuleDict({m: nn.Linear(self.dims[m], c.n_classes) for m in c.block_modalities})

    def set_statistics(self, means: Mapping[str, torch.Tensor]) -> None:
        """Set the centring means (pool statistics) per modality."""
        for m, mu in means.items():
            target = self.vec[m] if m in self.vec else self.frames[m] if m in self.frames else None
            if target is not None:
                target.mu.copy_(torch.as_tensor(mu, dtype=target.mu.dtype))

    def blocks(self, batch) -> tuple[dict, dict]:
        """``({m: z_m [B, D_m]}, {m: present [B]})`` for every block modality."""
        z, present = {}, {}
        for m in self.config.vector_modalities:
            x, has = batch[m]
            zm = self.vec[m](x)
            z[m] = torch.where(has.unsqueeze(-1), zm, torch.zeros_like(zm))
            present[m] = has
        anchor = torch.cat([z[m] for m in self.config.vector_modalities], 1) if self.config.vector_modalities else None
        for m in self.config.frame_modalities:
            frames, seg, has, buckets = batch[m]
            if buckets is None:
                buckets = bucket_frames(frames, torch.bincount(seg, minlength=len(has)).numpy())
            z[m] = self.frames[m](buckets, len(has), anchor) * self.config.head_scale
            present[m] = has
        return z, present

    def head(self, z: Mapping[str, torch.Tensor], drop: bool = False, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused logits from blocks ``z`` (a missing key = a zeroed block, as BMMAL's coalition
        value zeroes a modality feature); returns ``(logits [B, C], concat [B, ΣD_m])``.
        ``n`` = batch size, needed only when ``z`` is empty."""
        B = n if n is not None else next(iter(z.values())).shape[0]
        w = self.fused.weight
        parts = [z[m] if m in z else torch.zeros(B, d, dtype=w.dtype, device=w.device) for m, d in self.dims.items()]
        cat = torch.cat(parts, 1)  # [B, ΣD_m]
        return self.fused(self.drop(cat) if drop else cat), cat

    def forward(self, batch) -> dict:
        z, present = self.blocks(batch)
        logits, cat = self.head(z, drop=self.training)
        out = {"logits": logits, "modality": z, "present": present, "fused_input": cat}
        if len(self.unimodal):
            out["unimodal_logits"] = {m: self.unimodal[m](self.drop(z[m]) if self.training else z[m]) for m in self.unimodal}
        return out


def late_fusion_loss(out: dict, y: torch.Tensor, weight: torch.Tensor | None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Fused CE, averaged with the unimodal heads' CE when present: ``(CE + Σ_m CE_m) / (1 + M)`` (METHODS E)."""
    ce = F.cross_entropy(out["logits"], y, weight=weight, label_smoothing=label_smoothing)
    uni = out.get("unimodal_logits") or {}
    if not uni:
        return ce
    terms = []
    for m, lg in uni.items():
        has = out["present"][m]
        terms.append(F.cross_entropy(lg[has], y[has], weight=weight, label_smoothing=label_smoothing) if has.any() else lg.sum() * 0.0)
    return (ce + sum(terms)) / (1 + len(uni))


__all__ = ["LateFusionConfig", "LateFusionClassifier", "late_fusion_loss", "LF_FUSIONS"]
