"""Training, prediction and scoring loops over cached features (see docs/models.md).

The names below load their module on first use (PEP 562), so ``mmal.train.config`` — read by
the ``mmal.toml`` schema of every command — does not import torch.
"""

import importlib

_WHERE = {"TrainConfig": "config", "fit": "loop", "predict_proba": "loop", "score": "loop", "collate": "data",
          "check_features": "data", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
          "fit_end_to_end": "finetune", "encode_with_towers": "finetune"}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mmal.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mmal.train' has no attribute {name!r}")
