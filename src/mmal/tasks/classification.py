"""The classification tasks: ``binary`` (one positive class, often rare) and ``multiclass``.

Both fit the same learners on the same inputs (the frozen towers' cached features) and
pre-train with MMSSL (002 ch. 4); they differ in what a good model is:

- ``binary`` (000's clickbait / unsafe-content classifiers): metrics on the positive class
  1 (:func:`mmal.metrics.binary.binary_metrics`); headline **R@P80**, the recall at 80 %
  precision (000 §4.3). On a budget curve a point where 80 % precision is never reached
  counts as recall 0: a user who needs that precision gets nothing from such a model.
- ``multiclass`` (unordered classes): accuracy, balanced accuracy, macro-F1, one-vs-rest
  macro AUC, per class (:func:`mmal.metrics.multiclass.multiclass_metrics`); headline
  **macro-F1**.
"""

from __future__ import annotations

import math

from mmal.errors import ConfigError
from mmal.metrics.binary import binary_metrics
from mmal.metrics.core import DEFAULT_PRECISIONS
from mmal.metrics.multiclass import multiclass_metrics
from mmal.tasks.base import Task

R_AT_P = tuple(f"r_at_p{p}" for p in DEFAULT_PRECISIONS)


class ClassificationTask(Task):
    """What binary and multiclass share: learners, inputs, pre-training."""

    learners = ("auto", "late-fusion", "linear", "fusion")
    default_learner = "auto"
    pretraining = "mmssl"

    def encode(self, ws, *, encoders=None, batch_size=None, progress=False):
        from mmal.features.pipeline import encode_workspace

        return encode_workspace(ws, encoders=encoders, batch_size=batch_size, progress=progress)

    def load_features(self, ws, ids=None, *, progress=False, read_only=False):
        from mmal.features.pipeline import load_features

        return load_features(ws, ids, read_only=read_only)


class BinaryTask(ClassificationTask):
    name = "binary"
    headline = "r_at_p80"
    curve_metrics = ("r_at_p80", "auc", "average_precision", *[m for m in R_AT_P if m != "r_at_p80"], "f1", "accuracy")
    report_metrics = (("auc", "AUC"), ("average_precision", "AP"), *[(m, f"R@P{m[6:]}") for m in R_AT_P],
                      ("f1", "F1"), ("accuracy", "accuracy"), ("max_beta_variance", "max β-var"))
    badness_doc = "mean 1 − p(y) = |p₁ − y| (000 eq. 11 for two classes)"

    def check_n_classes(self, n_classes: int, where: str = "") -> None:
        if int(n_classes) > 2:
            raise ConfigError(f"{where + ': ' if where else ''}{n_classes} classes, but the binary task has two "
                              "(class 1 is the positive class); use --task multiclass")

    def classes(self, n_classes, names):
        return 2, (list(names) if names else None)  # two classes even before both have a label

    def class_names(self, n_classes, names=None):
        return super().class_names(2, names)

    def metrics(self, y_true, probs, *, scores=None, groups=None, names=None) -> dict:
        return binary_metrics(y_true, probs)

    def curve_value(self, metrics, metric):
        v = float(metrics.get(metric, float("nan")))
        if metric.startswith("r_at_p") and math.isnan(v) and metrics.get("n_positive"):
            return 0.0  # precision P never reached: nothing can be sent at that precision
        return v


class MulticlassTask(ClassificationTask):
    name = "multiclass"
    headline = "macro_f1"
    curve_metrics = ("macro_f1", "accuracy", "balanced_accuracy", "auc_ovr")
    report_metrics = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("macro_f1", "macro-F1"),
                      ("auc_ovr", "AUC (one vs rest)"))
    badness_doc = "mean 1 − p(y) (classes are unordered, so 000 eq. 11 does not apply)"

    def metrics(self, y_true, probs, *, scores=None, groups=None, names=None) -> dict:
        return multiclass_metrics(y_true, probs, names=names)
