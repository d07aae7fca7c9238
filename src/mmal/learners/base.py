"""The learner contract: a model a user picks by name, fitted on cached features.

A learner is built from a plain config dict, ``fit`` on labeled items, and ``score`` fills
every field the selection strategies read (:class:`mmal.select.ScoredPool`):

``score(features, idx, coalitions=...)`` returns a dict of numpy arrays

- ``probs [N, C]`` fused class probabilities;
- ``embedding [N, D]`` the item embedding LSB searches (the fused head's input);
- ``penultimate [N, D']`` the input of the fused head's last linear layer (BADGE);
- ``modality {m: [N, D_m]}`` per-modality blocks, ``present {m: [N] bool}``;
- ``unimodal_probs {m: [N, C]}`` (empty without unimodal heads);
- ``coalition_probs {"a+b": [N, C]}`` when ``coalitions`` is set (BMMAL's value function:
  the fused probabilities with the modalities outside the coalition zeroed);

and ``fused_blocks`` says whether ``modality`` blocks are exactly the last layer's input.

State is saved as plain tensors / numbers (``torch.load(weights_only=True)``), never a pickle.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Mapping

import numpy as np

from mmal.errors import ConfigError


class Learner:
    """Base class; subclasses set ``name`` and implement the methods below."""

    name: str = ""
    #: True when ``score()["modality"]`` blocks are exactly the fused linear layer's input
    fused_blocks: bool = False
    #: True when the learner has dropout for MC-dropout (BALD)
    supports_mc_dropout: bool = False
    #: TrainConfig overrides of this learner (``[train]`` keys win over them); None: the learner
    #: is not trained by the torch loop and takes no ``[train]`` settings
    train_defaults: dict | None = None
    #: config dataclass whose fields are also ``[model]`` settings (passed as ``model={...}``)
    model_config: type | None = None
    #: which stored pre-training the learner can start from (``mmssl`` | ``hcmrm``), if any
    pretraining: str | None = None
    #: strategy needs (:data:`mmal.select.registry.NEEDS`) this learner can serve, each with the
    #: ``[model]`` settings that turn it on; a need missing here cannot be served
    serves: dict = {}

    @classmethod
    def settings_for(cls, needs, model: Mapping | None = None) -> dict:
        """``[model]`` settings that let strategies with these registry ``needs`` run on this learner.

        ``needs`` other than ``coalitions``, ``mc_samples`` and ``unimodal`` concern the pool,
        not the learner, and are ignored here. Raises :class:`ConfigError` naming the
        learners that serve a need this one cannot.
        """
        from mmal.errors import ConfigError as _CE

        out: dict = {}
        for need in sorted(set(needs) & {"coalitions", "mc_samples", "unimodal"}):
            if need not in cls.serves:
                what = {"coalitions": "modality coalitions (BMMAL)", "mc_samples": "MC-dropout passes (BALD)",
                        "unimodal": "a head per modality"}[need]
                raise _CE(f"a strategy needs {what}, which the '{cls.name}' learner does not have")
            out.update(cls.serves[need])
        return out

    # ---- settings: the ``[model]`` keys this learner reads, and their defaults ------------
    @classmethod
    def _own_params(cls) -> dict:
        sig = inspect.signature(cls.__init__)
        return {n: p.default for n, p in sig.parameters.items()
                if n not in ("self", "n_classes", "seed", "model", "train") and p.kind is not p.VAR_KEYWORD}

    @classmethod
    def settings(cls) -> dict:
        """``{[model] key: default}`` this learner reads: its own parameters and, when it has one,
        the fields of its model config dataclass (the one place these defaults are stated)."""
        out = {k: (None if v is inspect.Parameter.empty else v) for k, v in cls._own_params().items()}
        if cls.model_config is not None:
            for f in dataclasses.fields(cls.model_config):
                if f.name in ("input_dims", "n_classes"):
                    continue
                d = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                out.setdefault(f.name, d)
        return out

    @classmethod
    def from_settings(cls, *, n_classes: int | None = None, seed: int = 0, model: Mapping | None = None,
                      train: Mapping | None = None) -> tuple["Learner", list[str]]:
        """Build the learner from flat ``[model]`` and ``[train]`` settings.

        Returns ``(learner, ignored)``: ``ignored`` are ``[model]`` keys that other learners read
        but this one does not (the caller reports them). ``[train]`` settings for a learner
        that is not trained by the torch loop raise :class:`ConfigError`.
        """
        model = {k: v for k, v in dict(model or {}).items() if v is not None}
        train = {k: v for k, v in dict(train or {}).items() if v is not None}
        own = cls._own_params()
        fields = {f.name for f in dataclasses.fields(cls.model_config)} - {"input_dims", "n_classes"} if cls.model_config else set()
        ignored = sorted(set(model) - set(own) - fields)
        params = {k: v for k, v in model.items() if k in own}
        if fields:
            params["model"] = {k: v for k, v in model.items() if k in fields and k not in own}
        if train:
            if cls.train_defaults is None:
                raise ConfigError(f"learner '{cls.name}' is not trained by the torch loop and takes no [train] settings; "
                                  f"got {sorted(train)}")
            params["train"] = train
        return cls(n_classes=n_classes, seed=seed, **params), ignored

    def __init__(self, n_classes: int | None = None, seed: int = 0, **params):
        self.n_classes = n_classes
        self.seed = int(seed)
        self.params = dict(params)

    def check_settings(self, modalities) -> None:
        """ConfigError when the settings do not make a valid model for these modalities (run when a
        workspace is opened, before any data is read): builds the model config dataclass, if
        the learner has one, with placeholder input widths."""
        if self.model_config is None or "model" not in self.params:
            return
        mods = self.params.get("modalities") or list(modalities)
        self.model_config(input_dims={m: 8 for m in mods}, n_classes=max(2, int(self.n_classes or 2)),
                          **self.params["model"])

    # ---- to implement ------------------------------------------------------------
    def fit(self, features, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        raise NotImplementedError

    def score(self, features, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        raise NotImplementedError

    def init_from_pretraining(self, pretrained) -> None:
        """Start the next fit from a stored pre-training (read by the workspace edge)."""
        raise ConfigError(f"the '{self.name}' learner cannot start from a pre-training")

    def mc_probs(self, features, T: int, seed: int) -> np.ndarray:
        raise ConfigError(
            f"BALD needs MC-dropout passes, which the '{self.name}' learner does not have; "
            "train with --learner late-fusion (dropout > 0) or --learner fusion"
        )

    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, state: Mapping) -> None:
        raise NotImplementedError

    def config(self) -> dict:
        """Plain dict that rebuilds this learner with :func:`mmal.learners.make_learner`."""
        return {"n_classes": self.n_classes, "seed": self.seed, **self.params}

    # ---- shared ------------------------------------------------------------------
    def _features(self, features) -> dict:
        """The learner's modalities (``modalities`` param, default all) of ``features``."""
        mods = self.params.get("modalities") or sorted(features)
        missing = sorted(set(mods) - set(features))
        if missing:
            raise ConfigError(f"{self.name} learner: features lack modalities {missing}; have {sorted(features)}")
        return {m: features[m] for m in mods}

    def predict_proba(self, features, idx=None) -> np.ndarray:
        """Fused class probabilities ``[N, C]`` of items ``idx`` (default all)."""
        return self.score(features, idx)["probs"]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["Learner", "softmax"]
