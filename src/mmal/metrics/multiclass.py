"""Metrics of a task with unordered classes (METHODS D "Multiclass").

Class indices carry no order, so there is no "class 0 vs rest" view and no rank
correlation: accuracy, balanced accuracy, macro-F1, one-vs-rest macro AUC, a per-class
table and the confusion matrix. Headline: macro-F1.
"""

from __future__ import annotations

import numpy as np

from mmal.metrics.core import NAN, check_probs


def f1_score(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import f1_score as f

    return f(*args, **kwargs)


def precision_recall_fscore_support(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import precision_recall_fscore_support as f

    return f(*args, **kwargs)


def roc_auc_score(*args, **kwargs):  # scikit-learn / SciPy load on first use (CLI start-up)
    from sklearn.metrics import roc_auc_score as f

    return f(*args, **kwargs)

HEADLINE = "macro_f1"


def ovr_macro_auc(y, probs) -> float:
    """One-vs-rest macro AUC: the mean over classes ``c`` of AUC(``y == c``, ``p_c``).

    Classes that are absent from ``y`` (or are every item) have no AUC and are left out of
    the mean; NaN when no class has one. With every class present this equals
    ``roc_auc_score(y, probs, multi_class="ovr", average="macro")``.
    """
    y = np.asarray(y)
    p = np.asarray(probs, dtype=np.float64)
    aucs = []
    for c in range(p.shape[1]):
        yc = y == c
        if 0 < yc.sum() < len(y):
            aucs.append(roc_auc_score(yc, p[:, c]))
    return float(np.mean(aucs)) if aucs else NAN


def confusion(y, pred, n_classes: int) -> np.ndarray:
    """``[C, C]`` counts, row = true class, column = predicted class."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return m


def multiclass_metrics(y_true, probs, *, names=None) -> dict:
    """Metrics of argmax predictions over all ``C`` classes.

    Parameters
    ----------
    y_true : int labels ``[N]`` in ``[0, C)``.
    probs : class probabilities ``[N, C]``.
    names : optional class names (index = class) for the per-class table.

    Returns
    -------
    dict: ``n``, ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in
    ``y_true``), ``macro_f1`` (F1 averaged over all C classes; a class never true nor predicted
    scores 0), ``auc_ovr`` (:func:`ovr_macro_auc`), ``per_class`` ``{name: {precision, recall,
    f1, support}}`` and ``confusion`` (``[C][C]`` list, row = true class).
    """
    y, p = check_probs(y_true, probs)
    C = p.shape[1]
    names = [str(x) for x in names] if names is not None and len(names) >= C else [str(c) for c in range(C)]
    out: dict = {"n": int(len(y))}
    if not len(y):
        return out | {"accuracy": NAN, "balanced_accuracy": NAN, "macro_f1": NAN, "auc_ovr": NAN, "per_class": {},
                      "confusion": confusion([], [], C).tolist()}
    pred = p.argmax(1)
    out["accuracy"] = float((pred == y).mean())
    present = np.unique(y)
    out["balanced_accuracy"] = float(np.mean([(pred[y == c] == c).mean() for c in present]))
    out["macro_f1"] = float(f1_score(y, pred, labels=np.arange(C), average="macro", zero_division=0))
    out["auc_ovr"] = ovr_macro_auc(y, p)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=np.arange(C), zero_division=0)
    out["per_class"] = {names[c]: {"precision": float(prec[c]), "recall": float(rec[c]), "f1": float(f1[c]),
                                   "support": int(sup[c])} for c in range(C)}
    out["confusion"] = confusion(y, pred, C).tolist()
    return out


__all__ = ["multiclass_metrics", "ovr_macro_auc", "confusion", "HEADLINE"]
