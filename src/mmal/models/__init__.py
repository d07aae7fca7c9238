"""Fusion models trained on cached tower outputs (see docs/models.md)."""

from mmal.models.classifier import MultimodalClassifier
from mmal.models.config import ModelConfig
from mmal.models.layers import MLP, AvgPoolAudioFusion, MultiwayBlock, VLMAEFusion, masked_mean, reduce_tokens

__all__ = [
    "ModelConfig",
    "MultimodalClassifier",
    "MLP",
    "AvgPoolAudioFusion",
    "VLMAEFusion",
    "MultiwayBlock",
    "masked_mean",
    "reduce_tokens",
]
