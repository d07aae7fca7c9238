"""Latent Space Broadening (LSB) with the lookalike threshold (METHODS.md B; 000 §3.1, Alg. 1).

Pipeline: seed bad cases among labeled items -> the k nearest unlabeled candidates of each
seed by CLS embedding (the *broadened set*; paper: k = 3, fixed) -> (``lsb-lt`` only) keep
candidates the lookalike model flags, ``g(h) > l_t`` -> order -> budget.

Order, a named parameter ``order``:

* ``lsb-knn`` default ``"random"``: the LSB share is **sampled at random** from the
  broadened set, as 000 l. 227 does ("a subset of 30k is randomly sampled from 130k LSB
  data"). Exactly ``rng.choice(M, size=min(budget, M), replace=False)`` over the ``M``
  broadened candidates in ascending pool-row order; ``score`` is NaN.
* ``lsb-lt`` default ``"lookalike"``: the filtered set is **ranked by g(h)** (000 §3.1.2:
  the lookalike model "quantitatively rank[s] the kNN-selected samples"), highest first,
  ties by pool row; ``score`` is g(h).
* ``"badness"`` (either strategy; the ordering used in earlier versions): closest seed's
  badness descending, then closeness to it, then pool row; ``score`` is that badness.

Seeds come from out-of-sample predictions (``seeds_from``). The paper's seed bad cases are
production mistakes: items the deployed model got wrong *before* anyone labeled them. A
learner scored on its own training labels fits them (the late-fusion learner makes no
in-sample mistake on 50-200 labels), so ``seeds_from="auto"`` (default) judges each labeled
item by the probabilities it had when it was selected (``pool.extras["at_selection_probs"]``,
:data:`AT_SELECTION`: filled by ``simulate`` and ``mmal score`` from the round that picked
it; NaN rows where unknown) and falls back to the current, in-sample ``pool.probs`` for items
without them (an imported or initial labeled set). ``"at_selection"`` uses only items that
have them; ``"current"`` only the in-sample probabilities (the behaviour before this option).

Fill (fidelity 2): ``k`` stays fixed (``fill="none"``, default) and a shortfall is
returned (``info["shortfall"]``) for a mix to hand on to its next part;
``fill="knn"`` doubles ``k`` until enough candidates survive (a named option).
``Selection.reason`` is always the id of the closest seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmal.errors import ConfigError
from mmal.index import Index, build_index
from mmal.metrics.core import badness
from mmal.select.api import empty_selection
from mmal.select.lookalike import lookalike_filter, lookalike_fit
from mmal.select.registry import register
from mmal.pool import Selection

#: ``ScoredPool.extras`` key of each labeled item's probabilities at the time it was selected
AT_SELECTION = "at_selection_probs"
SEEDS_FROM = ("auto", "at_selection", "current")

#: index the full embedding (and filter results) instead of copying the candidate rows
#: when candidates are at least this fraction of the pool
FULL_INDEX_FRACTION = 0.9


def seed_bad_cases(probs, labels, labeled_mask, *, s_t: float | None = None, top_s: int | None = None,
                   ordered: bool = False):
    """Seed bad cases: labeled items whose prediction disagrees most with the label.

    Implements METHODS.md B step 1 (000 §3.1, Algorithm 1 line 1-2).

    Parameters
    ----------
    probs : float array [N, C]
    labels : int array [N]
        ``-1`` where unknown.
    labeled_mask : bool array [N]
        Items eligible as seeds (labeled; callers exclude test items).
    s_t : float, optional
        Keep labeled items with badness strictly above ``s_t``.
    top_s : int, optional
        Keep the ``top_s`` worst (after ``s_t`` if both are given).
    ordered : bool
        Labels are ordered: badness is 000 eq. 11; else ``1 - p_y`` (:func:`mmal.metrics.core.badness`).

    With neither ``s_t`` nor ``top_s`` the default keeps every labeled *mistake*
    (``argmax p != label``); with only ``top_s`` the top-S by badness among all labeled
    items.

    Returns
    -------
    rows : int64 [S]
        Seed rows, ordered by badness descending (ties: smaller row first).
    scores : float64 [S]
        Their badness.
    """
    p = np.asarray(probs)
    y = np.asarray(labels)
    mask = np.asarray(labeled_mask, dtype=bool)
    if p.ndim != 2 or y.shape != (p.shape[0],) or mask.shape != y.shape:
        raise ConfigError(f"seed_bad_cases: need probs [N, C], labels [N], labeled_mask [N]; got {p.shape}, {y.shape}, {mask.shape}")
    rows = np.flatnonzero(mask)
    lab = y[rows].astype(np.int64)
    bad_label = (lab < 0) | (lab >= p.shape[1])
    if bad_label.any():
        raise ConfigError(
            f"seed_bad_cases: {int(bad_label.sum())} labeled rows have a label outside [0, {p.shape[1] - 1}] "
            f"(first row {int(rows[bad_label][0])}, label {int(lab[bad_label][0])})"
        )
    pr = np.asarray(p[rows], dtype=np.float64)  # [L, C]
    if not np.isfinite(pr).all():
        raise ConfigError(f"seed_bad_cases: {int((~np.isfinite(pr).all(axis=1)).sum())} labeled rows have non-finite probs")
    score = badness(pr, lab, ordered)  # [L]
    if s_t is not None:
        keep = score > float(s_t)
    elif top_s is None:
        keep = pr.argmax(axis=1) != lab
    else:
        keep = np.ones(len(rows), dtype=bool)
    rows, score = rows[keep], score[keep]
    order = np.argsort(-score, kind="stable")
    if top_s is not None:
        if isinstance(top_s, bool) or int(top_s) < 0:
            raise ConfigError(f"top_s must be a non-negative integer, got {top_s!r}")
        order = order[: int(top_s)]
    return rows[order], score[order]


@dataclass
class LSBExpansion:
    """Result of :func:`lsb_expand`: unique broadened candidates with their closest seed.

    ``rows`` (pool rows), ``seed`` (pool row of the closest seed), ``score`` (similarity
    for cosine/ip, squared distance for l2, to that seed), ``rank`` (0-based neighbour rank
    in that seed's list), all ``[M]``; ``n_pairs`` counts seed->neighbour links before
    de-duplication.
    """

    rows: np.ndarray
    seed: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    n_pairs: int
    larger_is_closer: bool

    def __len__(self) -> int:
        return len(self.rows)


def _as_mask(candidates, n: int, seeds: np.ndarray) -> np.ndarray:
    if candidates is None:
        mask = np.ones(n, dtype=bool)
        mask[seeds] = False
        return mask
    c = np.asarray(candidates)
    if c.dtype == bool:
        if c.shape != (n,):
            raise ConfigError(f"candidate mask must have shape [{n}], got {c.shape}")
        return c
    mask = np.zeros(n, dtype=bool)
    mask[c.astype(np.int64)] = True
    return mask


def build_candidate_index(embedding, candidate_mask, *, metric: str = "cosine", backend: str = "auto",
                          **index_params):
    """kNN index for LSB broadening; returns ``(index, index_rows)``.

    ``index_rows [ntotal]`` maps index rows to pool rows. When candidates are at least
    ``FULL_INDEX_FRACTION`` of the pool, or ``embedding`` is a memmap, the full embedding is
    indexed (no copy) and non-candidates are filtered at search time; otherwise only the
    candidate rows are copied and indexed.
    """
    mask = np.asarray(candidate_mask, dtype=bool)
    n = embedding.shape[0]
    if isinstance(embedding, np.memmap) or mask.sum() >= FULL_INDEX_FRACTION * n:
        return build_index(embedding, metric=metric, backend=backend, **index_params), np.arange(n, dtype=np.int64)
    rows = np.flatnonzero(mask)
    return build_index(np.asarray(embedding[rows], dtype=np.float32), metric=metric, backend=backend, **index_params), rows


def _search_allowed(index: Index, queries, k: int, allowed: np.ndarray):
    """Top-k among index rows with ``allowed[row]``; grows the search until found or exhausted.

    ``allowed [ntotal]``. Returns ``scores, rows [Q, k]`` with ``-1`` rows where fewer exist.
    """
    nq = queries.shape[0]
    out_s = np.zeros((nq, k), dtype=np.float32)
    out_r = np.full((nq, k), -1, dtype=np.int64)
    todo = np.arange(nq)
    n_allowed = int(allowed.sum())
    n_excluded = index.ntotal - n_allowed
    kk = min(index.ntotal, k + n_excluded if n_excluded <= 4 * k else 2 * k)
    while len(todo):
        s, r = index.search(queries[todo], kk)  # [q, kk]
        ok = (r >= 0) & allowed[np.maximum(r, 0)]
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # allowed first, in rank order
        s_k = np.take_along_axis(s, order, axis=1)
        r_k = np.where(np.take_along_axis(ok, order, axis=1), np.take_along_axis(r, order, axis=1), -1)
        kw = r_k.shape[1]
        out_s[todo, :kw], out_r[todo, :kw] = s_k, r_k
        done = (ok.sum(axis=1) >= min(k, n_allowed)) | (kk >= index.ntotal)
        todo = todo[~done]
        kk = min(index.ntotal, kk * 4)
    return out_s, out_r


def lsb_expand(index_or_embedding, seeds, candidates=None, *, k: int = 3, metric: str = "cosine",
               queries=None, index_rows=None, backend: str = "auto", index_params: dict | None = None
               ) -> LSBExpansion:
    """kNN broadening of seed bad cases (METHODS.md B step 2; 000 §3.1, Algorithm 1).

    For every seed, its ``k`` nearest candidates by CLS embedding (paper: k = 3, cosine).
    A candidate reached from several seeds is listed once, with the closest seed
    (ties: smaller seed row) as ``seed`` -- the paper does not de-duplicate.

    Parameters
    ----------
    index_or_embedding : float array [N, D] or Index
        The pool embedding (an index is built over the candidates), or a prebuilt
        :class:`mmal.index.Index` (then ``queries`` is required and ``index_rows`` maps its
        rows to pool rows; default identity).
    seeds : int array [S]
        Pool rows of the seeds.
    candidates : int array [M] or bool mask [N], optional
        Allowed neighbours (pool rows). Default: every row except the seeds.
    k : int
        Neighbours per seed.
    metric : {"cosine", "ip", "l2"}
    queries : float array [S, D], optional
        Seed embeddings; default ``embedding[seeds]``.
    backend, index_params :
        Passed to :func:`mmal.index.build_index` when an index is built here.

    Returns
    -------
    LSBExpansion
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"LSB k must be a positive integer, got {k!r}")
    seeds = np.asarray(seeds, dtype=np.int64)
    if isinstance(index_or_embedding, Index):
        index = index_or_embedding
        if queries is None:
            raise ConfigError("lsb_expand with a prebuilt index needs the seed embeddings (queries=)")
        index_rows = np.arange(index.ntotal, dtype=np.int64) if index_rows is None else np.asarray(index_rows, dtype=np.int64)
        n = int(index_rows.max()) + 1 if candidates is None or np.asarray(candidates).dtype != bool else len(candidates)
        n = max(n, int(seeds.max()) + 1 if len(seeds) else 0)
        larger = index.larger_is_closer
    else:
        emb = index_or_embedding
        if emb is None or emb.ndim != 2:
            raise ConfigError("lsb_expand needs an embedding [N, D] (pool.embedding is missing)")
        n = emb.shape[0]
        if len(seeds) and (seeds.min() < 0 or seeds.max() >= n):
            raise ConfigError(f"lsb_expand: seed rows must be in [0, {n}), got range [{seeds.min()}, {seeds.max()}]")
        queries = np.asarray(emb[seeds], dtype=np.float32) if queries is None else queries
        index = None
        larger = metric in ("cosine", "ip")
    cand_mask = _as_mask(candidates, n, seeds)
    empty = LSBExpansion(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                         np.zeros(0, np.int64), 0, larger)
    if len(seeds) == 0 or not cand_mask.any():
        return empty
    if index is None:
        index, index_rows = build_candidate_index(emb, cand_mask, metric=metric, backend=backend,
                                                  **{"n_queries": len(seeds), **(index_params or {})})
    allowed = cand_mask[index_rows]  # [ntotal]
    sims, nbr = _search_allowed(index, np.asarray(queries, dtype=np.float32), int(k), allowed)  # [S, k]
    seed_rep = np.repeat(seeds, nbr.shape[1])  # [S*k]
    rank = np.tile(np.arange(nbr.shape[1]), len(seeds))
    flat_r, flat_s = nbr.ravel(), sims.ravel()
    ok = flat_r >= 0
    cand = index_rows[flat_r[ok]]
    seed_rep, rank, flat_s = seed_rep[ok], rank[ok], flat_s[ok]
    closeness = -flat_s if larger else flat_s
    order = np.lexsort((seed_rep, closeness, cand))  # by candidate, then closest, then seed row
    cand, seed_rep, rank, flat_s = cand[order], seed_rep[order], rank[order], flat_s[order]
    first = np.r_[True, cand[1:] != cand[:-1]]  # closest seed per candidate
    return LSBExpansion(cand[first], seed_rep[first], flat_s[first], rank[first], int(ok.sum()), larger)


ORDERS = ("random", "lookalike", "badness")


def _order_expansion(exp: LSBExpansion, keep: np.ndarray, budget: int, order: str, rng, seed_score: dict, g):
    """Rows of ``exp`` (positions) to select, in order, and their scores (see module docstring)."""
    pos = np.flatnonzero(keep)  # ascending pool rows (exp.rows is sorted)
    if len(pos) == 0:
        return pos, np.zeros(0)
    if order == "random":
        take = pos[rng.choice(len(pos), size=min(budget, len(pos)), replace=False)]
        return take, np.full(len(take), np.nan)
    if order == "lookalike":
        o = np.lexsort((exp.rows[pos], -g[pos]))[:budget]  # g(h) desc, then pool row
        return pos[o], g[pos[o]]
    bad = np.array([seed_score[s] for s in exp.seed[pos].tolist()], dtype=np.float64)
    closeness = -exp.score[pos] if exp.larger_is_closer else exp.score[pos]
    o = np.lexsort((exp.rows[pos], closeness, -bad))[:budget]
    return pos[o], bad[o]


def seed_probabilities(pool, eligible: np.ndarray, seeds_from: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(rows [R], probs [R, C])``: the eligible labeled rows LSB may judge and the
    probabilities it judges them by (see the module docstring, ``seeds_from``)."""
    if seeds_from not in SEEDS_FROM:
        raise ConfigError(f"seeds_from must be one of {', '.join(SEEDS_FROM)}, got {seeds_from!r}")
    rows = np.flatnonzero(eligible)
    cur = np.asarray(pool.probs[rows], dtype=np.float64)  # [R, C]
    if seeds_from == "current":
        return rows, cur
    at = pool.extras.get(AT_SELECTION)
    if at is None:
        have = np.zeros(len(rows), bool)
        prior = cur
    else:
        prior = np.asarray(at[rows], dtype=np.float64)
        if prior.shape != cur.shape:
            raise ConfigError(f"pool.extras['{AT_SELECTION}'] must be [N, C] like probs, got {np.shape(at)}")
        have = np.isfinite(prior).all(axis=1)
    if seeds_from == "at_selection":
        return rows[have], prior[have]
    return rows, np.where(have[:, None], prior, cur)


def lookalike_training_set(pool, eligible: np.ndarray, seeds: np.ndarray, seeds_from: str = "auto"):
    """Rows and targets of the lookalike model (000 l. 251; METHODS.md B step 3).

    Positives are the **seed bad cases** (respecting ``s_t``/``top_s``); negatives the
    eligible labeled items whose prediction matches the label, seeds excluded, both judged by
    the same probabilities as the seeds (:func:`seed_probabilities`). Labeled mistakes that
    are not seeds are in neither set. Returns ``rows [L]`` (ascending), ``is_seed [L]``.
    """
    rows, probs = seed_probabilities(pool, eligible, seeds_from)
    correct = probs.argmax(axis=1) == np.asarray(pool.labels)[rows]
    is_seed = np.isin(rows, seeds)
    use = is_seed | correct
    return rows[use], is_seed[use]


def _lsb(pool, budget, *, labeled_mask, rng, name: str, lookalike: bool, order: str, k: int, s_t, top_s,
         metric: str, index, index_params, fill: str, fill_max_k, l_t: float = 0.3, C: float = 1.0,
         class_weight="balanced", holdout: float = 0.25, lookalike_seed: int = 0, seeds_from: str = "auto") -> Selection:
    if fill not in ("none", "knn"):
        raise ConfigError(f"{name}: fill must be 'none' or 'knn', got {fill!r}")
    allowed_orders = ORDERS if lookalike else ("random", "badness")
    if order not in allowed_orders:
        raise ConfigError(f"{name}: order must be one of {', '.join(allowed_orders)}, got {order!r}")
    if pool.embedding is None:
        raise ConfigError(f"{name} needs pool.embedding (the fused CLS embedding)")
    if pool.labels is None:
        raise ConfigError(f"{name} needs pool.labels to find seed bad cases")
    rng = np.random.default_rng(0) if rng is None else rng
    labeled = np.zeros(len(pool), bool) if labeled_mask is None else np.asarray(labeled_mask, bool)
    not_test = np.ones(len(pool), bool) if pool.split is None else pool.split != "test"
    eligible = labeled & not_test & (np.asarray(pool.labels) >= 0)  # seeds / lookalike training never use test items
    judged, judged_probs = seed_probabilities(pool, eligible, seeds_from)
    pos, seed_bad = seed_bad_cases(judged_probs, np.asarray(pool.labels)[judged], np.ones(len(judged), bool), s_t=s_t,
                                    top_s=top_s, ordered=pool.ordered)
    seeds = judged[pos]
    info = {"n_seeds": int(len(seeds)), "k": int(k), "metric": metric, "order": order, "fill": fill, "seeds_from": seeds_from}
    if seeds_from != "current":
        at = pool.extras.get(AT_SELECTION)
        info["n_judged_at_selection"] = 0 if at is None else int(np.isfinite(np.asarray(at[np.flatnonzero(eligible)], np.float64)).all(1).sum())
    if lookalike:
        info["lookalike_auc"] = float("nan")
    cand_mask = pool.selectable(labeled)
    if budget == 0 or len(seeds) == 0 or not cand_mask.any():
        if len(seeds) == 0:
            info["note"] = f"no seed bad cases among labeled items (seeds_from={seeds_from!r}); nothing selected"
        info.update(n_broadened=0, n_after_filter=0, shortfall=int(budget))
        return empty_selection(name, info)

    g_model = None
    if lookalike:
        lab_rows, is_seed = lookalike_training_set(pool, eligible, seeds, seeds_from)
        info.update(n_lookalike_pos=int(is_seed.sum()), n_lookalike_neg=int((~is_seed).sum()))
        try:
            g_model, auc = lookalike_fit(np.asarray(pool.embedding[lab_rows], dtype=np.float32), is_seed,
                                         C=C, class_weight=class_weight, holdout=holdout, seed=lookalike_seed)
        except ConfigError as e:
            info.update(n_broadened=0, n_after_filter=0, shortfall=int(budget),
                        note=f"lookalike model not fitted ({e}); nothing selected")
            return empty_selection(name, info)
        info["lookalike_auc"] = auc
        info["l_t"] = float(l_t)

    if isinstance(index, Index):
        idx, idx_rows = index, np.arange(index.ntotal, dtype=np.int64)
        if index.ntotal != len(pool):
            raise ConfigError(f"{name}: a prebuilt index must cover the whole pool ({len(pool)} rows), has {index.ntotal}")
    elif isinstance(index, str):
        idx, idx_rows = build_candidate_index(pool.embedding, cand_mask, metric=metric, backend=index,
                                              **{"n_queries": len(seeds), **(index_params or {})})
    else:
        raise ConfigError(f"{name}: index must be 'auto', a backend string or an mmal.index.Index")
    queries = np.asarray(pool.embedding[seeds], dtype=np.float32)  # [S, D]
    seed_score = dict(zip(seeds.tolist(), seed_bad.tolist()))
    n_cand = int(cand_mask.sum())
    max_k = int(fill_max_k) if fill_max_k else 32 * int(k)
    k_cur = int(k)
    while True:
        exp = lsb_expand(idx, seeds, cand_mask, k=k_cur, metric=metric, queries=queries, index_rows=idx_rows)
        keep = np.ones(len(exp), bool)
        g = None
        if lookalike and len(exp):
            g = g_model.predict_proba(np.asarray(pool.embedding[exp.rows], dtype=np.float32))[:, 1]  # [M]
            keep = lookalike_filter(g, l_t)
        n_keep = int(keep.sum())
        if fill == "none" or n_keep >= budget or k_cur >= min(n_cand, max_k):
            break
        k_cur = min(n_cand, max_k, k_cur * 2)
    info.update(n_broadened=int(len(exp)), n_pairs=int(exp.n_pairs), n_after_filter=n_keep, k_used=int(k_cur))
    take, score = _order_expansion(exp, keep, budget, order, rng, seed_score, g)
    if len(take) < budget:
        info["shortfall"] = int(budget - len(take))
        info["note"] = (f"only {len(take)} candidates in the broadened{' and filtered' if lookalike else ''} set "
                        f"(budget {budget}, k={k_cur}); not padded (fill={fill!r})")
    return Selection(ids=pool.ids[exp.rows[take]], strategy=name, score=score,
                     reason=pool.ids[exp.seed[take]].astype(object), info=info)


_COMMON_DOCS = {
    "k": "neighbours per seed (000: k = 3, fixed)",
    "s_t": "seed threshold: keep labeled items with badness strictly above s_t (|E_p[y] - y|, 000 eq. 11, for "
           "ordered labels; 1 - p_y for unordered classes)",
    "top_s": "keep the top-S seeds by badness; default (neither s_t nor top_s): every labeled mistake",
    "metric": "'cosine' (000), 'ip' or 'l2'",
    "index": "kNN backend string for mmal.index.build_index ('auto'), or a prebuilt mmal.index.Index "
             "over the whole pool embedding",
    "index_params": "dict of options passed to mmal.index.build_index",
    "fill": "'none' (default: fixed k, a shortfall is returned and a mix hands it on) or 'knn' "
            "(double k until enough candidates survive, up to fill_max_k)",
    "fill_max_k": "largest k of fill='knn' (default 32 k)",
    "seeds_from": "which predictions judge labeled items: 'auto' (default: the probabilities each had when it "
                  "was selected, pool.extras['at_selection_probs'], else the current ones), 'at_selection' or "
                  "'current' (in-sample)",
}
_LT_DOCS = {
    "l_t": "lookalike threshold: keep g(h) > l_t (000: 0.3; 0.5 for search ads)",
    "C": "inverse L2 regularisation of the lookalike LogisticRegression",
    "class_weight": "class weighting of the lookalike model ('balanced'; 000 says 'class weighting')",
    "holdout": "fraction of the lookalike training set held out (stratified) to report its AUC",
    "lookalike_seed": "seed of the holdout split and the solver",
}


@register("lsb-knn", reason="seed", knn_index=True, params={
    **_COMMON_DOCS,
    "order": "'random' (default; 000 l. 227: the LSB share is randomly sampled from the broadened set) "
             "or 'badness' (closest seed's badness, then closeness)",
}, needs=("embedding", "labels", "at_selection"))
def lsb_knn(pool, budget, *, labeled_mask=None, rng=None, k: int = 3, s_t: float | None = None,
            top_s: int | None = None, metric: str = "cosine", index="auto", index_params: dict | None = None,
            fill: str = "none", fill_max_k: int | None = None, order: str = "random", seeds_from: str = "auto") -> Selection:
    """LSB-kNN: seed bad cases -> kNN broadening (k = 3) -> random subsample (000 §3.1, l. 227).

    ``Selection.reason`` is the id of the closest seed; ``score`` NaN (``order="random"``) or
    the seed badness (``order="badness"``). ``info`` has ``n_seeds``, ``n_broadened``
    (unique candidates), ``n_pairs``, ``k_used`` and, when short, ``shortfall``/``note``.
    Randomness only from ``rng`` (same seed, same result).
    """
    return _lsb(pool, budget, labeled_mask=labeled_mask, rng=rng, name="lsb-knn", lookalike=False, order=order,
                k=k, s_t=s_t, top_s=top_s, metric=metric, index=index, index_params=index_params, fill=fill,
                fill_max_k=fill_max_k, seeds_from=seeds_from)


@register("lsb-lt", reason="seed", knn_index=True, params={
    **_COMMON_DOCS, **_LT_DOCS,
    "order": "'lookalike' (default; 000 §3.1.2: rank the kNN-selected samples by g(h)), 'random' or 'badness'",
}, needs=("embedding", "labels", "at_selection"))
def lsb_lt(pool, budget, *, labeled_mask=None, rng=None, k: int = 3, s_t: float | None = None,
           top_s: int | None = None, metric: str = "cosine", index="auto", index_params: dict | None = None,
           fill: str = "none", fill_max_k: int | None = None, order: str = "lookalike", l_t: float = 0.3,
           C: float = 1.0, class_weight="balanced", holdout: float = 0.25, lookalike_seed: int = 0,
           seeds_from: str = "auto") -> Selection:
    """LSB-kNN-LT: LSB-kNN, keep ``g(h) > l_t`` (000 Alg. 1, fixed ``>``), rank by ``g(h)`` (§3.1.2).

    The lookalike model ``g`` (:func:`mmal.select.lookalike.lookalike_fit`) is fitted with
    the seed bad cases as positives and the correctly predicted labeled items as negatives
    (:func:`lookalike_training_set`, 000 l. 251). ``info`` adds ``lookalike_auc`` (NaN when
    not fitted), ``n_after_filter``, ``n_lookalike_pos``/``n_lookalike_neg``. If the model
    cannot be fitted (no seeds or no correct labeled items) nothing is selected and
    ``info["note"]`` says why.
    """
    return _lsb(pool, budget, labeled_mask=labeled_mask, rng=rng, name="lsb-lt", lookalike=True, order=order,
                k=k, s_t=s_t, top_s=top_s, metric=metric, index=index, index_params=index_params, fill=fill,
                fill_max_k=fill_max_k, l_t=l_t, C=C, class_weight=class_weight, holdout=holdout,
                lookalike_seed=lookalike_seed, seeds_from=seeds_from)
