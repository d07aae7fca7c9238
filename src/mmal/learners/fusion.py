"""``fusion``: the single-stream VLMo/BEiT-3-style transformer (kept for comparison).

Wraps :class:`mmal.models.MultimodalClassifier` with :func:`mmal.train.loop.fit` /
:func:`mmal.train.loop.score`. Its per-modality outputs are masked means of backbone tokens,
which the fused head never reads directly, so ``fused_blocks`` is False (BMMAL refuses it).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from mmal.errors import ConfigError
from mmal.learners.base import Learner
from mmal.models import ModelConfig
from mmal.train.config import TrainConfig


class FusionLearner(Learner):
    """``model`` = :class:`ModelConfig` fields, ``train`` = :class:`TrainConfig` fields,
    ``val_fraction`` = labeled share held out for early stopping (0.2)."""

    name = "fusion"
    serves = {"coalitions": {}, "unimodal": {"heads": "fused+unimodal"}, "mc_samples": {}}
    fused_blocks = False
    supports_mc_dropout = True
    train_defaults: dict = {}  # TrainConfig's own defaults
    model_config = ModelConfig

    def __init__(self, n_classes: int | None = None, seed: int = 0, *, model: Mapping | None = None,
                 train: Mapping | None = None, modalities=None):
        model = dict(model or {})
        bad = (set(model) - set(ModelConfig.__dataclass_fields__)) | ({"input_dims", "n_classes"} & set(model))
        if bad:
            allowed = sorted(set(ModelConfig.__dataclass_fields__) - {"input_dims", "n_classes"})
            raise ConfigError(f"fusion learner: unknown model keys {sorted(bad)}; allowed: {allowed}")
        TrainConfig.from_dict(dict(train or {}))
        super().__init__(n_classes, seed, model=model, train=dict(train or {}),
                         modalities=None if modalities is None else sorted(modalities))
        self.net = None

    def fit(self, features, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        from mmal.train.engine import as_index, check_labels
        from mmal.train.loop import fit

        features = self._features(features)
        n = len(next(iter(features.values())))
        tr = as_index(train_idx, n, "train_idx")
        va = as_index(val_idx, n, "val_idx") if val_idx is not None else np.zeros(0, np.int64)
        labels, C = check_labels(labels, tr, va, n, self.n_classes)
        self.n_classes = C
        model = dict(self.params["model"])
        if "audio" not in features and model.get("fusion", "vlmae") != "none":
            model["fusion"] = "none"  # nothing to fuse: a text/image-only dataset
        mc = ModelConfig.from_features(features, n_classes=C, **model)
        tc = TrainConfig.from_dict({**self.params["train"], "seed": self.seed})
        self.net, history = fit(features, labels, tr, va, mc, tc, progress=progress, log=log)
        return history

    def score(self, features, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        from mmal.train.loop import score

        if self.net is None:
            raise ConfigError("fusion learner: call fit() (or load a checkpoint) before score()")
        return score(self.net, self._features(features), idx, coalitions=coalitions, progress=progress)

    def mc_probs(self, features, T: int, seed: int) -> np.ndarray:
        from mmal.train.loop import mc_dropout_probs

        return mc_dropout_probs(self.net, self._features(features), T, seed)

    def state(self) -> dict:
        return {"model_config": self.net.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    def load_state(self, state) -> None:
        from mmal.models import MultimodalClassifier

        mc = ModelConfig.from_dict(state["model_config"])
        net = MultimodalClassifier(mc)
        net.load_state_dict(state["state_dict"])
        self.net = net.eval()
        self.n_classes = mc.n_classes
