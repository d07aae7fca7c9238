"""Lookalike model and threshold filter (METHODS.md B steps 3-4; 000 §3.1, Algorithm 1).

The lookalike model ``g(h)`` is a logistic regression on the CLS embedding ``h`` that
predicts whether the current model gets a labeled item wrong. Broadened LSB candidates
are kept when ``g(h) > l_t`` (likely mistakes).
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError


def lookalike_fit(embedding_labeled, is_mistake, *, C: float = 1.0, class_weight="balanced",
                  holdout: float = 0.25, seed: int = 0, refit: bool = True, max_iter: int = 1000):
    """Fit the lookalike model ``g`` and measure its AUC on held-out labeled samples.

    Implements METHODS.md B step 3 (000 §3.1): positives are the seed bad cases
    (prediction != label), negatives the correctly predicted labeled samples.

    Parameters
    ----------
    embedding_labeled : float array [L, D]
        CLS embeddings of the training items (labeled, non-test).
    is_mistake : bool array [L]
        True for the positives: the seed bad cases (see
        :func:`mmal.select.lsb.lookalike_training_set`); False for correctly predicted items.
    C : float
        Inverse L2 regularisation of ``sklearn.linear_model.LogisticRegression``.
    class_weight : "balanced" | dict | None
        Class weighting (the paper says "class weighting"; ``"balanced"`` by default).
    holdout : float
        Fraction of the labeled samples held out (stratified by ``is_mistake``) to
        report the AUC. If a class has fewer than 2 samples, no holdout is made and the
        AUC is NaN. ``0`` disables the holdout (AUC NaN).
    seed : int
        Seed of the holdout split (and of the solver).
    refit : bool
        After measuring the held-out AUC, refit on all labeled samples (default True) so
        the filter uses every label; ``False`` keeps the model fitted on the train part.
    max_iter : int
        Solver iterations.

    Returns
    -------
    model : sklearn LogisticRegression
        ``model.predict_proba(h)[:, 1]`` is ``g(h)``.
    auc : float
        ROC AUC on the held-out part (NaN when there is none).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x = np.asarray(embedding_labeled, dtype=np.float32)  # [L, D]
    y = np.asarray(is_mistake).astype(bool).astype(np.int64)  # [L]
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ConfigError(f"lookalike_fit: need embedding [L, D] and is_mistake [L], got {x.shape} and {y.shape}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"lookalike_fit: holdout must be in [0, 1), got {holdout}")
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"lookalike_fit: need both mistakes and correct predictions among labeled items, "
            f"got {n_pos} mistakes and {n_neg} correct"
        )
    if not np.isfinite(x).all():
        raise ConfigError(f"lookalike_fit: {int((~np.isfinite(x).all(axis=1)).sum())} labeled rows have non-finite embeddings")

    def make():
        return LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=seed)

    auc = float("nan")
    n_test = int(round(holdout * len(y)))
    can_split = holdout > 0 and min(n_pos, n_neg) >= 2 and n_test >= 2 and len(y) - n_test >= 2
    if can_split:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, stratify=y, random_state=seed)
        if len(np.unique(y_tr)) == 2 and len(np.unique(y_te)) == 2:
            model = make().fit(x_tr, y_tr)
            auc = float(roc_auc_score(y_te, model.predict_proba(x_te)[:, 1]))
            if not refit:
                return model, auc
    return make().fit(x, y), auc


def lookalike_filter(scores, l_t: float = 0.3) -> np.ndarray:
    """Boolean mask of items the lookalike model flags: strictly ``g(h) > l_t``.

    Implements METHODS.md B step 4 **(fix)**: Algorithm 1 of 000 prints ``< l_t``; the
    text and its thresholds (0.5 search ads, 0.3 others) mean ``>``.

    Parameters
    ----------
    scores : float array [M]
        ``g(h)`` in [0, 1].
    l_t : float
        Lookalike threshold in [0, 1] (paper: 0.3, 0.5 for search ads).
    """
    g = np.asarray(scores, dtype=np.float64)
    if not 0.0 <= float(l_t) <= 1.0:
        raise ConfigError(f"lookalike threshold l_t must be in [0, 1], got {l_t}")
    if not np.isfinite(g).all():
        raise ConfigError(f"lookalike scores: {int((~np.isfinite(g)).sum())} non-finite values")
    return g > float(l_t)
