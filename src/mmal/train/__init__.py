"""Training, prediction and scoring loops over cached features (see docs/models.md)."""

from mmal.train.checkpoint import load_checkpoint, save_checkpoint
from mmal.train.config import TrainConfig
from mmal.train.data import check_features, collate
from mmal.train.finetune import encode_with_towers, fit_end_to_end
from mmal.train.loop import fit, predict_proba, score

__all__ = ["TrainConfig", "fit", "predict_proba", "score", "collate", "check_features", "save_checkpoint", "load_checkpoint",
           "fit_end_to_end", "encode_with_towers"]
