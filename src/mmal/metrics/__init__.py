"""Evaluation metrics (000 §4.3, METHODS D/F)."""

from mmal.metrics.core import (
    beta_variance,
    compute,
    expected_label,
    modality_cosines,
    modality_gap,
    multiclass_loss,
    operating_points,
    recall_at_precision_points,
)

__all__ = [
    "compute",
    "multiclass_loss",
    "expected_label",
    "beta_variance",
    "operating_points",
    "recall_at_precision_points",
    "modality_gap",
    "modality_cosines",
]
