"""Learners a user picks by name (``--learner``, ``[model] learner`` in mmal.toml).

| name | model | when |
|---|---|---|
| ``auto`` | the best of the ``linear`` probes (C, class weighting) and ``late-fusion`` by cross-validation on the fit's own labels (:mod:`mmal.learners.auto`) | a candidate default that is the scikit-learn probe unless something beats it on held-out folds |
| ``late-fusion`` (default) | per-modality encoders over the frozen towers -> concat -> one linear layer; audio by avg-pool (000 eq. 6) or VLMAE (000 eq. 7) | the default: exact BMMAL blocks, real unimodal heads |
| ``linear`` | scikit-learn logistic regression on concatenated L2-normalised pooled embeddings | the probe every learner must beat |
| ``fusion`` | single-stream VLMo-style transformer with a fused MLP head | kept for comparison |
| ``probe`` | relevance: MLP + hierarchical-softmax head over frozen query / keyword-text vectors | relevance default |
| ``cosine`` | relevance: the frozen MiniLM cosine of query and keyword text (no ranking trained; levels calibrated) | the relevance baseline |
| ``auto-relevance`` | relevance: the ``probe`` where it beats the ``cosine`` on query-grouped held-out folds, else the cosine | a candidate relevance default |
| ``hcmrm`` | relevance: the ALBEF-style dual stream of 003 fine-tuned with a head | relevance, minutes per fit |

Which learners a workspace may use is its task's choice (:mod:`mmal.tasks`).

``make_learner(name, n_classes=..., seed=..., **params)`` builds one; each fills every
:class:`~mmal.select.ScoredPool` field (see :mod:`mmal.learners.base`).
"""

from __future__ import annotations

from mmal.errors import ConfigError
from mmal.learners.auto import AutoLearner
from mmal.learners.base import Learner
from mmal.learners.fusion import FusionLearner
from mmal.learners.late_fusion import LateFusionLearner
from mmal.learners.linear import LinearProbe
from mmal.learners.relevance import AutoRelevance, CosineRelevance, HCMRMLearner, RelevanceProbe

LEARNERS: dict[str, type[Learner]] = {"auto": AutoLearner, "late-fusion": LateFusionLearner, "linear": LinearProbe, "fusion": FusionLearner,
                                      "probe": RelevanceProbe, "hcmrm": HCMRMLearner,
                                      "cosine": CosineRelevance, "auto-relevance": AutoRelevance}
DEFAULT_LEARNER = "auto"


def make_learner(name: str | None = None, *, n_classes: int | None = None, seed: int = 0, **params) -> Learner:
    """Build the learner ``name`` (default :data:`DEFAULT_LEARNER`) with its parameters.

    Raises
    ------
    ConfigError : unknown learner name or parameter (the message lists the allowed ones).
    """
    name = name or DEFAULT_LEARNER
    if name not in LEARNERS:
        raise ConfigError(f"unknown learner '{name}'; choose one of {', '.join(LEARNERS)}")
    cls = LEARNERS[name]
    import inspect

    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "n_classes", "seed")]
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ConfigError(f"learner '{name}' got unknown parameters {bad}; allowed: {allowed}")
    return cls(n_classes=n_classes, seed=seed, **params)


__all__ = ["AutoLearner", "Learner", "LEARNERS", "DEFAULT_LEARNER", "make_learner", "LinearProbe", "LateFusionLearner", "FusionLearner",
           "RelevanceProbe", "HCMRMLearner", "CosineRelevance", "AutoRelevance"]
