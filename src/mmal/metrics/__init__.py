"""Evaluation metrics, one module per task (METHODS D), plus the shared pieces and the modality gap.

- :func:`~mmal.metrics.binary.binary_metrics` — AUC, AP, F1, R@P40..90 on the positive class, max Beta variance (000 §4.3, eq. 12);
- :func:`~mmal.metrics.multiclass.multiclass_metrics` — accuracy, balanced accuracy, macro-F1, one-vs-rest AUC, per class;
- :func:`~mmal.metrics.relevance.relevance_metrics` — AUC {0,1} vs {2,3}, Spearman, Pearson, NDCG@10 (003 §4.2);
- :func:`~mmal.metrics.core.expected_label_error` (000 eq. 11, ordered labels) and
  :func:`~mmal.metrics.core.true_class_error` (``1 - p_y``, unordered classes).

Which of them a workspace reports is the task's choice (:mod:`mmal.tasks`).
"""

from mmal.metrics.binary import binary_metrics
from mmal.metrics.core import (badness, beta_variance, check_probs, expected_label, expected_label_error, modality_cosines,
                               modality_gap, operating_points, recall_at_precision_points, true_class_error)
from mmal.metrics.multiclass import multiclass_metrics, ovr_macro_auc
from mmal.metrics.relevance import ndcg_at_k, relevance_metrics

__all__ = [
    "binary_metrics", "multiclass_metrics", "badness", "relevance_metrics", "ovr_macro_auc", "ndcg_at_k", "check_probs",
    "expected_label", "expected_label_error", "true_class_error", "beta_variance", "operating_points",
    "recall_at_precision_points", "modality_gap", "modality_cosines",
]
