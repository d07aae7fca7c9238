"""Configuration of the multimodal fusion classifier (HF-config style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from mmal.errors import ConfigError

FUSIONS = ("none", "avgpool", "vlmae")
HEADS = ("fused", "fused+unimodal")
TOKEN_REDUCTIONS = ("pool", "stride")
AUDIO_MISSING = ("zeros", "learned")


def _default_max_tokens() -> dict[str, int]:
    return {"text": 64, "image": 160, "audio": 128}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`~mmal.models.MultimodalClassifier`.

    Parameters
    ----------
    input_dims : dict[str, int]
        Feature dimension per modality name, e.g. ``{"text": 384, "image": 1280, "audio": 384}``.
        Any non-empty subset of modalities is allowed (text-only works).
    n_classes : int
        Number of classes C (>= 2).
    d_model : int
        Width of the single-stream backbone (default 192).
    n_layers, n_heads : int
        Transformer depth (2) and attention heads (4); ``d_model % n_heads == 0``.
    dropout : float
        Dropout in the backbone and the MLP heads (0.1).
    ffn_mult : int
        Hidden width of each feed-forward expert = ``ffn_mult * d_model`` (4).
    multiway : bool
        VLMo/BEiT-3 multiway blocks: shared self-attention, one feed-forward expert per
        token type ([CLS] and each backbone modality). ``False`` = one shared FFN (plain ViLT).
    max_tokens : dict[str, int]
        Maximum tokens per modality (text 64, image 160, audio 128: Whisper gives ~50
        frames/s, so clips over ~2.6 s are pooled to 128 frames, which bounds the VLMAE
        cost of long clips; a choice the paper leaves open). Longer
        sequences are reduced by ``token_reduction``. Head modalities (audio) are only
        reduced when they appear here.
    default_max_tokens : int
        Token limit of backbone modalities missing from ``max_tokens`` (160).
    token_reduction : {"pool", "stride"}
        How a too-long sequence of L real tokens is reduced to M: ``"pool"`` averages the
        L tokens in M contiguous bins (token j -> bin floor(j*M/L)); ``"stride"`` keeps
        tokens floor(k*L/M), k < M. The paper does not say (it uses J frames x patches).
    head_modalities : tuple[str, ...]
        Modalities kept out of the backbone and fused by the head (``("audio",)``, 000 §3.2).
    fusion : {"none", "avgpool", "vlmae"}
        How head modalities enter the fused head: ``none`` = MLP(H_cls); ``avgpool`` =
        000 eq. 6; ``vlmae`` = 000 eq. 7 with the METHODS C projections.
    d_attn : int
        Attention width d_A of VLMAE (128).
    audio_missing : {"zeros", "learned"}
        Fused-head input for an item that lacks the head modality: zeros, or a learned
        vector ("missing" embedding). Never NaN.
    input_norm : bool
        LayerNorm each modality's raw input features before projection/pooling (True);
        cached encoder outputs have very different scales (Whisper vs MiniLM).
    heads : {"fused", "fused+unimodal"}
        ``fused+unimodal`` adds one small head per modality on z_m (BMMAL, 002 ch. 3).
    mlp_hidden : int
        Hidden width of the fused MLP head (256).
    mlp_layers : int
        Linear layers of the fused MLP head (3).
    unimodal_layers : int
        Linear layers of each unimodal head (2).
    """

    input_dims: dict[str, int]
    n_classes: int = 2
    d_model: int = 192
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    ffn_mult: int = 4
    multiway: bool = True
    max_tokens: dict[str, int] = field(default_factory=_default_max_tokens)
    default_max_tokens: int = 160
    token_reduction: str = "pool"
    head_modalities: tuple[str, ...] = ("audio",)
    fusion: str = "vlmae"
    d_attn: int = 128
    audio_missing: str = "zeros"
    input_norm: bool = True
    heads: str = "fused"
    mlp_hidden: int = 256
    mlp_layers: int = 3
    unimodal_layers: int = 2

    def __post_init__(self):
        self.input_dims = {str(k): int(v) for k, v in dict(self.input_dims).items()}
        self.max_tokens = {str(k): int(v) for k, v in dict(self.max_tokens).items()}
        self.head_modalities = tuple(self.head_modalities)
        if not self.input_dims:
            raise ConfigError("ModelConfig.input_dims is empty: expected at least one modality, e.g. {'text': 384}")
        for m, d in self.input_dims.items():
            if d <= 0:
                raise ConfigError(f"ModelConfig.input_dims['{m}'] = {d}: expected a positive feature dimension")
            if "+" in m or "." in m or not m:
                raise ConfigError(f"modality name '{m}': expected a non-empty name without '+' or '.'")
        checks = [
            (self.fusion in FUSIONS, f"fusion = '{self.fusion}': expected one of {FUSIONS}"),
            (self.heads in HEADS, f"heads = '{self.heads}': expected one of {HEADS}"),
            (self.token_reduction in TOKEN_REDUCTIONS, f"token_reduction = '{self.token_reduction}': expected one of {TOKEN_REDUCTIONS}"),
            (self.audio_missing in AUDIO_MISSING, f"audio_missing = '{self.audio_missing}': expected one of {AUDIO_MISSING}"),
            (self.n_classes >= 2, f"n_classes = {self.n_classes}: expected >= 2"),
            (self.d_model > 0 and self.n_heads > 0 and self.d_model % self.n_heads == 0,
             f"d_model = {self.d_model} must be a positive multiple of n_heads = {self.n_heads}"),
            (self.n_layers >= 0, f"n_layers = {self.n_layers}: expected >= 0"),
            (0.0 <= self.dropout < 1.0, f"dropout = {self.dropout}: expected 0 <= dropout < 1"),
            (self.mlp_layers >= 1 and self.unimodal_layers >= 1, "mlp_layers and unimodal_layers must be >= 1"),
            (self.d_attn > 0 and self.mlp_hidden > 0, "d_attn and mlp_hidden must be positive"),
            (all(v > 0 for v in self.max_tokens.values()) and self.default_max_tokens > 0, "max_tokens must be positive"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError("ModelConfig." + msg)

    # --- derived ---------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        """All modalities, sorted by name."""
        return sorted(self.input_dims)

    @property
    def backbone_modalities(self) -> list[str]:
        """Modalities that enter the transformer, sorted ("image" before "text": visual first)."""
        return [m for m in self.modalities if m not in self.head_modalities]

    @property
    def fused_head_modalities(self) -> list[str]:
        """Modalities fused by the head (present in ``input_dims`` and ``head_modalities``)."""
        return [m for m in self.modalities if m in self.head_modalities]

    def token_limit(self, m: str) -> int | None:
        """Max tokens for modality ``m`` (``None`` = unlimited head modality)."""
        if m in self.max_tokens:
            return self.max_tokens[m]
        return None if m in self.head_modalities else self.default_max_tokens

    # --- (de)serialisation ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_modalities"] = list(self.head_modalities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"ModelConfig: unknown fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**dict(d))

    @classmethod
    def from_features(cls, features: Mapping[str, Any], n_classes: int, **kwargs) -> "ModelConfig":
        """Infer ``input_dims`` from a ``{modality: SequenceFeatures}`` mapping."""
        return cls(input_dims={m: int(f.dim) for m, f in features.items()}, n_classes=n_classes, **kwargs)
