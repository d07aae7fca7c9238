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

import itertools
from typing import Iterable, Mapping

import numpy as np

from mmal.errors import ConfigError


class Learner:
    """Base class; subclasses set ``name`` and implement the methods below."""

    name: str = ""
    #: True when ``score()["modality"]`` blocks are exactly the fused linear layer's input
    fused_blocks: bool = False
    #: True when the learner has dropout for MC-dropout (BALD)
    supports_mc_dropout: bool = False

    def __init__(self, n_classes: int | None = None, seed: int = 0, **params):
        self.n_classes = n_classes
        self.seed = int(seed)
        self.params = dict(params)

    # ---- to implement ------------------------------------------------------------
    def fit(self, features, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        raise NotImplementedError

    def score(self, features, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        raise NotImplementedError

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


def coalition_key(subset: Iterable[str]) -> str:
    return "+".join(sorted(subset))


def coalition_subsets(modalities: list[str], coalitions) -> list[tuple[str, ...]]:
    """``True`` -> all 2^M subsets (M <= 4); or an explicit list of subsets (validated)."""
    if coalitions is True:
        if len(modalities) > 4:
            raise ConfigError(
                f"coalitions=True with {len(modalities)} modalities would need {2 ** len(modalities)} passes; "
                "pass an explicit list of subsets"
            )
        return [s for r in range(len(modalities) + 1) for s in itertools.combinations(sorted(modalities), r)]
    out = []
    for s in coalitions or []:
        s = tuple(sorted([s] if isinstance(s, str) else s))
        bad = set(s) - set(modalities)
        if bad:
            raise ConfigError(f"coalition {s} names modalities {sorted(bad)} the model does not have; model has {modalities}")
        out.append(s)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["Learner", "coalition_key", "coalition_subsets", "softmax"]
