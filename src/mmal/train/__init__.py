"""Training, prediction and scoring loops over cached features (see docs/models.md)."""

from mmal.train.checkpoint import load_checkpoint, save_checkpoint
from mmal.train.config import TrainConfig
from mmal.train.data import check_features, collate
from mmal.train.loop import fit, predict_proba, score

__all__ = ["TrainConfig", "fit", "predict_proba", "score", "collate", "check_features", "save_checkpoint", "load_checkpoint"]
