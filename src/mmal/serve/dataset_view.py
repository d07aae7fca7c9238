"""Pure logic of the review page's data-set views: filters and paging, suspect labels, the embedding map.

Functions of arrays only (no workspace, no HTTP): :mod:`mmal.serve.batch` reads the workspace
into the arrays, :mod:`mmal.serve.app` turns requests into calls. Rows are positions in the
items table (``items.parquet`` order); ``-1`` means "none" in label and prediction arrays.

References
----------
Northcutt, Jiang, Chuang (2021), *Confident Learning: Estimating Uncertainty in Dataset
Labels*, JAIR 70; its implementation ``cleanlab.filter.find_label_issues``: with
``filter_by="predicted_neq_given"`` an item is a label issue when the out-of-sample
prediction's argmax differs from the given label, and ``return_indices_ranked_by=
"self_confidence"`` ranks the issues by the predicted probability of the given label,
lowest first. :func:`suspect_rows` does exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from mmal.errors import ConfigError

#: rows per page by default, and the most one request may ask for
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: the embedding map shows at most this many points (a seeded random sample of the pool)
MAP_POINTS = 3000

ITEM_PARAMS = ("id", "label", "pred", "labeled", "split", "batch", "round", "min_conf", "max_conf", "sort",
               "offset", "limit")
SUSPECT_PARAMS = ("in_sample", "offset", "limit")
SORTS = ("items", "conf", "-conf")
SPLITS = ("train", "pool", "test")

#: where the probabilities that judge a labeled item come from (:func:`judged_probabilities`)
SOURCES = {
    "held-out": "test split: the model never trains on it",
    "labeled-after-scoring": "labeled after the pool was scored: the model had not seen the label",
    "at-selection": "the probabilities it had when it was selected (the previous round's model)",
    "in-sample": "only the current model's prediction, and that model was trained on this label",
}
OUT_OF_SAMPLE = ("held-out", "labeled-after-scoring", "at-selection")


class QueryError(ConfigError):
    """A request parameter of a data-set view that is not valid (the page answers 400 with this line)."""


@dataclass(frozen=True)
class ItemQuery:
    """The filters, order and page of ``GET /api/items`` (every filter None = not applied)."""

    item_id: str | None = None
    label: int | None = None
    pred: int | None = None
    labeled: bool | None = None
    split: str | None = None
    batch: int | None = None
    round: int | None = None
    min_conf: float | None = None
    max_conf: float | None = None
    sort: str = "items"
    offset: int = 0
    limit: int = DEFAULT_LIMIT


def check_params(params: Mapping[str, str], known) -> dict:
    """The non-empty values of ``params`` (stripped); QueryError for a name not in ``known``
    (``token``, the token mode's, is allowed everywhere)."""
    unknown = sorted(k for k in params if k not in known and k != "token")
    if unknown:
        known_s = f"known: {', '.join(known)}" if known else "this route takes none"
        raise QueryError(f"unknown parameter {unknown[0]!r} ({known_s})")
    return {k: str(v).strip() for k, v in params.items() if k in known and str(v).strip() != ""}


def _int(name: str, raw: str, *, lo: int = 0, hi: int | None = None) -> int:
    s = raw.lstrip("+")
    if not (s.isdigit() or (s.startswith("-") and s[1:].isdigit())):
        raise QueryError(f"{name}: expected an integer, got {raw!r}")
    v = int(s)
    if v < lo or (hi is not None and v > hi):
        want = f"{lo}..{hi}" if hi is not None else f"{lo} or more"
        raise QueryError(f"{name}: {v} is out of range (expected {want})")
    return v


def _float01(name: str, raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise QueryError(f"{name}: expected a number between 0 and 1, got {raw!r}") from None
    if not (0.0 <= v <= 1.0):  # NaN fails too
        raise QueryError(f"{name}: {raw} is not between 0 and 1")
    return v


def parse_class(name: str, raw: str, names: list[str]) -> int:
    """A class given by name (exact, as the page shows it) or by number ``0..C-1``."""
    if raw in names:
        return names.index(raw)
    if raw.isdigit() and int(raw) < len(names):
        return int(raw)
    raise QueryError(f"{name}: {raw!r} is not a class ({', '.join(names)}, or 0..{len(names) - 1})")


def _bool(name: str, raw: str) -> bool:
    s = raw.lower()
    if s in ("1", "true", "yes"):
        return True
    if s in ("0", "false", "no"):
        return False
    raise QueryError(f"{name}: expected yes or no (1/0, true/false), got {raw!r}")


def parse_item_query(params: Mapping[str, str], names: list[str], *, batch_ids=(), rounds=()) -> ItemQuery:
    """Validate the query string of ``GET /api/items``; :class:`QueryError` (one line) on the first bad one.

    ``names``: class names (index = class); ``batch_ids`` / ``rounds``: the batches and rounds
    that exist. Empty values are "not set" (an HTML form sends every field). ``limit`` is
    capped at :data:`MAX_LIMIT` (a larger one is an error, not silently cut).
    """
    p = check_params(params, ITEM_PARAMS)
    kw: dict = {}
    if "id" in p:
        kw["item_id"] = p["id"]
    for k in ("label", "pred"):
        if k in p:
            kw[k] = parse_class(k, p[k], names)
    if "labeled" in p:
        kw["labeled"] = _bool("labeled", p["labeled"])
    if "split" in p:
        if p["split"] not in SPLITS:
            raise QueryError(f"split: {p['split']!r} is not one of {', '.join(SPLITS)}")
        kw["split"] = p["split"]
    if "batch" in p:
        kw["batch"] = _int("batch", p["batch"], lo=0)
        if kw["batch"] not in set(batch_ids):
            have = ", ".join(str(b) for b in sorted(batch_ids)) or "none"
            raise QueryError(f"batch: no batch {kw['batch']} in this workspace (batches: {have})")
    if "round" in p:
        kw["round"] = _int("round", p["round"], lo=0)
        if kw["round"] not in set(rounds):
            have = ", ".join(str(r) for r in sorted(rounds)) or "none"
            raise QueryError(f"round: no batch in round {kw['round']} (rounds with batches: {have})")
    for k in ("min_conf", "max_conf"):
        if k in p:
            kw[k] = _float01(k, p[k])
    if kw.get("min_conf") is not None and kw.get("max_conf") is not None and kw["min_conf"] > kw["max_conf"]:
        raise QueryError(f"min_conf {kw['min_conf']} is larger than max_conf {kw['max_conf']}")
    if "sort" in p:
        if p["sort"] not in SORTS:
            raise QueryError(f"sort: {p['sort']!r} is not one of {', '.join(SORTS)}")
        kw["sort"] = p["sort"]
    kw["offset"], kw["limit"] = parse_page(p)
    return ItemQuery(**kw)


def parse_page(p: Mapping[str, str]) -> tuple[int, int]:
    """``(offset, limit)`` of a page request (limit 1..:data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`)."""
    offset = _int("offset", p["offset"], lo=0) if p.get("offset") else 0
    limit = _int("limit", p["limit"], lo=1, hi=MAX_LIMIT) if p.get("limit") else DEFAULT_LIMIT
    return offset, limit


def parse_suspect_query(params: Mapping[str, str]) -> tuple[bool, int, int]:
    """``(in_sample, offset, limit)`` of ``GET /api/suspects``."""
    p = check_params(params, SUSPECT_PARAMS)
    in_sample = _bool("in_sample", p["in_sample"]) if "in_sample" in p else False
    return (in_sample, *parse_page(p))


# ---- the item table ----------------------------------------------------------------------------
def filter_rows(q: ItemQuery, *, ids, labels, pred, conf, split, in_batch=None) -> np.ndarray:
    """Rows [M] of the items that pass every filter of ``q``, in ``q.sort`` order.

    ``labels`` [N] current label (-1 none), ``pred`` [N] predicted class (-1: not in the
    scored pool), ``conf`` [N] its probability (NaN: none), ``split`` [N], ``in_batch`` [N]
    bool: in the batch / round ``q`` names (None when it names none). A filter on the
    prediction or the confidence drops items without one. ``sort``: ``items`` = items-table
    order; ``conf`` = least confident first, ``-conf`` = most confident first (ties: items
    order; items without a prediction last).
    """
    n = len(ids)
    keep = np.ones(n, bool)
    labels, pred, conf = np.asarray(labels), np.asarray(pred), np.asarray(conf, np.float64)
    if q.item_id is not None:
        keep &= np.asarray(ids) == q.item_id
    if q.label is not None:
        keep &= labels == q.label
    if q.labeled is not None:
        keep &= (labels >= 0) == q.labeled
    if q.pred is not None:
        keep &= pred == q.pred
    if q.split is not None:
        keep &= np.asarray(split) == q.split
    if q.min_conf is not None:
        keep &= np.isfinite(conf) & (conf >= q.min_conf)
    if q.max_conf is not None:
        keep &= np.isfinite(conf) & (conf <= q.max_conf)
    if in_batch is not None:
        keep &= np.asarray(in_batch, bool)
    rows = np.flatnonzero(keep)
    if q.sort != "items" and len(rows):
        c = conf[rows]
        key = np.where(np.isfinite(c), c if q.sort == "conf" else -c, np.inf)
        rows = rows[np.lexsort((rows, key))]
    return rows


def page(rows: np.ndarray, offset: int, limit: int) -> np.ndarray:
    """The rows of one page (empty past the end)."""
    return np.asarray(rows)[offset:offset + limit]


# ---- suspect labels ----------------------------------------------------------------------------
def judged_probabilities(probs, *, split, at_selection=None, scored_labels=None) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities each pool row is judged by, out of sample where the pool allows.

    ``probs`` [N, C]: the scored pool's (current model); ``split`` [N] of the workspace;
    ``at_selection`` [N, C] (``pool.extras["at_selection_probs"]``, NaN rows where unknown;
    :func:`mmal.loop.workspace_round.at_selection_probs`); ``scored_labels`` [N] the labels
    the pool was scored with (``pool.labels``, -1 unlabeled). Per row, the first that applies
    (:data:`SOURCES`):

    1. ``held-out``: a test-split item, ``probs`` (``mmal train`` never trains on test items);
    2. ``labeled-after-scoring``: unlabeled when the pool was scored, ``probs`` (the model,
       trained before scoring, never saw the label);
    3. ``at-selection``: a finite ``at_selection`` row (what the previous round's model said
       before anyone labeled it; the view LSB's seed bad cases use, :mod:`mmal.select.lsb`);
    4. ``in-sample``: ``probs``, from a model trained on this very label.

    Returns ``(judged [N, C] float64, source [N] str)``.
    """
    p = np.asarray(probs, np.float64)  # [N, C]
    n = p.shape[0]
    source = np.full(n, "in-sample", dtype=object)
    judged = p.copy()
    if at_selection is not None:
        at = np.asarray(at_selection, np.float64)
        if at.shape != p.shape:
            raise ConfigError(f"at_selection must be [N, C] like probs {p.shape}, got {at.shape}")
        have = np.isfinite(at).all(axis=1)
        judged[have] = at[have]
        source[have] = "at-selection"
    fresh = np.zeros(n, bool) if scored_labels is None else np.asarray(scored_labels) < 0
    held = np.asarray(split) == "test"
    for mask, name in ((fresh, "labeled-after-scoring"), (held, "held-out")):  # later wins: held-out first in priority
        judged[mask] = p[mask]
        source[mask] = name
    return judged, source


def self_confidence(probs, labels) -> np.ndarray:
    """``probs[i, labels[i]]`` [N] (NaN where the label is -1 or not a column of ``probs``)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    ok = (y >= 0) & (y < p.shape[1])
    out = np.full(len(y), np.nan)
    out[ok] = p[np.flatnonzero(ok), y[ok]]
    return out


def suspect_rows(probs, labels, eligible=None) -> np.ndarray:
    """Label issues ranked as ``cleanlab.filter.find_label_issues(filter_by="predicted_neq_given",
    return_indices_ranked_by="self_confidence")`` ranks them (module References).

    ``probs`` [N, C] out-of-sample probabilities (:func:`judged_probabilities`), ``labels``
    [N] given labels (-1 none), ``eligible`` [N] bool (None: all). A row is an issue when it is
    eligible, labeled with a class of ``probs``, and ``argmax probs != label``; issues come
    lowest self-confidence (probability of the given label) first, ties by row. Returns rows [K].
    """
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    ok = (y >= 0) & (y < p.shape[1]) & np.isfinite(p).all(axis=1)
    if eligible is not None:
        ok &= np.asarray(eligible, bool)
    rows = np.flatnonzero(ok)
    rows = rows[p[rows].argmax(axis=1) != y[rows]]
    sc = p[rows, y[rows]]
    return rows[np.lexsort((rows, sc))]


# ---- the embedding map -------------------------------------------------------------------------
def sample_rows(n: int, k: int | None = None, seed: int = 0) -> np.ndarray:
    """All rows when ``n <= k`` (default :data:`MAP_POINTS`), else ``k`` rows drawn without
    replacement by ``default_rng(seed)``, sorted."""
    k = MAP_POINTS if k is None else int(k)
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def pca_2d(x) -> tuple[np.ndarray, np.ndarray]:
    """Project ``x`` [M, D] on its first two principal axes: ``(xy [M, 2], explained [2])``.

    Centred (``xc = x - mean``); the axes are the two leading right singular vectors of ``xc``
    (the top eigenvectors of the scatter matrix ``xc^T xc`` [D, D], or when ``D > M`` obtained
    from the Gram matrix ``xc xc^T`` [M, M] as ``xc^T u / s``: one symmetric eigenproblem of
    the smaller side instead of a full SVD, which matters for a page request); ``xy = xc @
    axes.T`` and ``explained`` = eigenvalue / trace (the share of the variance). The sign of
    an axis is arbitrary; it is fixed here so that the axis's entry of largest magnitude is
    positive (deterministic across runs and machines). With fewer than two axes (``M < 2``
    or ``D < 2``) the missing coordinates are 0.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ConfigError(f"pca_2d: the embedding must be [M, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise ConfigError(f"pca_2d: {bad} embedding rows are not finite")
    m, d = x.shape
    xy, explained = np.zeros((m, 2)), np.zeros(2)
    if m < 2 or d == 0:
        return xy, explained
    xc = x - x.mean(axis=0)
    k = min(2, m, d)
    if d <= m:
        w, v = np.linalg.eigh(xc.T @ xc)  # [D, D], ascending eigenvalues
        w, axes = w[::-1][:k], v[:, ::-1][:, :k].T  # [k], [k, D]
    else:
        w, u = np.linalg.eigh(xc @ xc.T)  # [M, M]
        w, u = w[::-1][:k], u[:, ::-1][:, :k]
        keep = w > 0
        w, u = w[keep], u[:, keep]
        axes = (xc.T @ u / np.sqrt(w)).T  # [k, D] unit right singular vectors
        k = len(w)
    w = np.clip(w, 0.0, None)
    if k:
        big = np.abs(axes).argmax(axis=1)
        axes = axes * np.sign(axes[np.arange(k), big])[:, None]
        xy[:, :k] = xc @ axes.T  # [M, D] -> [M, k]
    total = float((xc ** 2).sum())  # = trace of the scatter matrix = sum of all eigenvalues
    if total > 0:
        explained[:k] = w / total
    return xy, explained
