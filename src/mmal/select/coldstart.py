"""Cold-start selection: strategies that work when nothing is labeled (002 ch. 4, METHODS F).

With no labels there is no model, so these strategies read only features: the raw frozen
tower features (``pool.modality[m]``) or the MMSSL embeddings (``pool.extras["mmssl:<m>"]``,
see :mod:`mmal.models.mmssl`), chosen by the named parameter ``features`` (``"auto"`` =
MMSSL when the pool has it, else raw). Every block is L2-normalised; the "concatenated
multimodal representation" of 002 §4.2.1 is ``concat_m(r^m) / sqrt(M)`` (unit norm, so its
cosine is the mean of the per-modality cosines). Build such a pool with :func:`cold_pool`.

Strategies (all registered; all return exactly ``min(B, #selectable)`` unique ids):

* ``activeft`` - ActiveFT (Xie et al., CVPR 2023; METHODS F), paper loss or the official
  code's loss (``official=True``);
* ``mm-activeft`` - ActiveFT with the uni+cross-modal distribution gap of 002 eq. 4.9;
* ``mmcsal`` - 002 eq. 4.11; ``align="printed"`` (+lambda A, as printed) or
  ``align="corrected"`` (-lambda A, i.e. maximise the cross-modal similarity);
* ``kmeans`` - the item nearest each of B k-means centres (002 §4.3.2);
* ``typiclust`` - Hacohen et al., ICML 2022 (TPC_RP with given features);
* ``probcover`` - Yehuda et al., NeurIPS 2022, delta by the purity rule;
* ``random`` and ``coreset`` (k-center greedy from a random item) are the existing
  strategies; on a :func:`cold_pool` ``coreset`` reads ``pool.embedding`` = the default
  concatenated features.

References
----------
Y. Xie et al. Active Finetuning: Exploiting Annotation Budget in the Pretraining-Finetuning
Paradigm. CVPR 2023.  G. Hacohen, A. Dekel, D. Weinshall. Active Learning on a Budget:
Opposite Strategies Suit High and Low Budgets. ICML 2022.  O. Yehuda, A. Dekel, G. Hacohen,
D. Weinshall. Active Learning Through a Covering Lens. NeurIPS 2022.  M. Shen, thesis (002)
ch. 4, eq. 4.6-4.11.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from mmal.errors import ConfigError
from mmal.models.mmssl import kmeans, kmeans_sampled, paired_cosine, unit_rows
from mmal.select.api import empty_selection
from mmal.select.registry import register
from mmal.select.types import ScoredPool, Selection

#: Strategies that need no labels and no model (what ``mmal select`` accepts on a workspace
#: with no labels).
COLD_START_STRATEGIES = ("random", "coreset", "kmeans", "typiclust", "probcover",
                         "activeft", "mm-activeft", "mmcsal")
MMSSL_PREFIX = "mmssl:"


# ---------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------
def _normalise(x) -> np.ndarray:
    return unit_rows(np.asarray(x, dtype=np.float32))


def cold_pool(ids, raw: dict, mmssl: dict | None = None, *, n_classes: int = 2, split=None,
              labels=None) -> ScoredPool:
    """A :class:`ScoredPool` for cold start: uniform probs, no model.

    ``modality[m]`` = raw pooled tower features (L2-normalised); ``extras["mmssl:m"]`` =
    MMSSL embeddings when given; ``embedding`` = the concatenation ``concat_m(r^m)/sqrt(M)``
    of the MMSSL embeddings when given, else of the raw features (read by ``coreset``).
    """
    ids = np.asarray(ids).astype(str)
    n = len(ids)
    mod = {m: _normalise(x) for m, x in sorted(raw.items())}
    extras = {MMSSL_PREFIX + m: _normalise(x) for m, x in sorted((mmssl or {}).items())}
    default = {k[len(MMSSL_PREFIX):]: v for k, v in extras.items()} or mod
    return ScoredPool(ids=ids, probs=np.full((n, max(1, int(n_classes))), 1.0 / max(1, int(n_classes)), np.float32),
                      embedding=concat_features(default), modality=mod, split=split, labels=labels,
                      extras=extras)


def pool_features(pool: ScoredPool, features: str = "auto") -> tuple[dict, str]:
    """``(modality -> L2-normalised [N, D_m], source)`` with source ``"mmssl"`` or ``"raw"``."""
    mm = {k[len(MMSSL_PREFIX):]: v for k, v in pool.extras.items() if k.startswith(MMSSL_PREFIX)}
    if features == "auto":
        features = "mmssl" if mm else "raw"
    if features == "mmssl":
        if not mm:
            raise ConfigError("features='mmssl' but the pool has no MMSSL embeddings; run `mmal pretrain DIR` "
                              "first or pass features='raw'")
        chosen = mm
    elif features == "raw":
        if not pool.modality:
            raise ConfigError("features='raw' but the pool has no per-modality features (pool.modality)")
        chosen = dict(pool.modality)
    else:
        raise ConfigError(f"features must be 'auto', 'mmssl' or 'raw', got {features!r}")
    return {m: _normalise(chosen[m]) for m in sorted(chosen)}, features


def concat_features(feats: dict) -> np.ndarray:
    """``concat_m(normalise(x_m)) / sqrt(M)``: ``{m: [N, D_m]} -> [N, sum D_m]`` (unit rows)."""
    mods = sorted(feats)
    return (np.concatenate([_normalise(feats[m]) for m in mods], axis=1) / math.sqrt(len(mods))).astype(np.float32)


def concat_rows(feats: dict, rows=None, *, chunk: int = 65536) -> np.ndarray:
    """``concat_features(feats)[rows]`` without materialising the whole concatenation.

    Same arithmetic, row by row (so the same bits): each block normalised, concatenated in
    modality order, divided by ``sqrt(M)``; filled ``chunk`` rows at a time.
    """
    mods = sorted(feats)
    n_all = len(feats[mods[0]])
    n = n_all if rows is None else len(rows)
    dims = [feats[m].shape[1] for m in mods]
    out = np.empty((n, sum(dims)), np.float32)
    root = math.sqrt(len(mods))
    for s in range(0, n, chunk):
        sel = slice(s, min(n, s + chunk)) if rows is None else np.asarray(rows[s:s + chunk])
        off = 0
        for m, d in zip(mods, dims):
            out[s:s + chunk, off:off + d] = _normalise(feats[m][sel]) / root
            off += d
    return out


def _shared_space(feats: dict, name: str) -> None:
    dims = {m: x.shape[1] for m, x in feats.items()}
    if len(feats) < 2 or len(set(dims.values())) != 1:
        raise ConfigError(f"{name} compares modalities with each other and needs >= 2 modalities in one shared "
                          f"space (MMSSL embeddings, features='mmssl'); got dims {dims}")


def _cross_cosine_info(pool: ScoredPool, rows: np.ndarray, cand: np.ndarray) -> dict:
    """Mean cross-modal cosine of the picks and of all candidates, in the MMSSL space."""
    mm = {k[len(MMSSL_PREFIX):]: v for k, v in pool.extras.items() if k.startswith(MMSSL_PREFIX)}
    if len(mm) < 2 or len(rows) == 0:
        return {}
    return {"cross_cosine_selected": paired_cosine(mm, rows), "cross_cosine_candidates": paired_cosine(mm, cand)}


def _candidates(pool, budget, labeled_mask) -> tuple[np.ndarray, np.ndarray, int]:
    if isinstance(budget, bool) or int(budget) != budget or budget < 0:
        raise ConfigError(f"budget must be a non-negative integer, got {budget!r}")
    cand = np.flatnonzero(pool.selectable(labeled_mask))
    lab = np.zeros(0, dtype=np.int64) if labeled_mask is None else np.flatnonzero(np.asarray(labeled_mask, bool))
    return cand, lab, min(int(budget), len(cand))


def _selection(pool, name, rows, score, reason, info, cand) -> Selection:
    info = {"n_candidates": int(len(cand)), **info, **_cross_cosine_info(pool, rows, cand)}
    return Selection(ids=pool.ids[rows], strategy=name, score=np.asarray(score, dtype=np.float64),
                     reason=np.asarray(reason, dtype=object), info=info)


# ---------------------------------------------------------------------------------------
# ActiveFT family: a parametric model Theta of B points, then "each theta takes its most
# similar sample not yet taken"
# ---------------------------------------------------------------------------------------
def _mean_terms(terms, count: int):
    """``sum(terms) / count`` with the same bits, without the copies of ``0 + a`` and ``a / 1``.

    In place where a term needs no gradient (the first term is a fresh product)."""
    it = iter(terms)
    out = next(it)
    grad = isinstance(out, torch.Tensor) and out.requires_grad
    for t in it:
        if grad or (isinstance(t, torch.Tensor) and t.requires_grad):
            out, grad = out + t, True
        else:
            out += t
    if count != 1:
        out = out / count if grad else _div_(out, count)
    return out


def _pow2(n: int) -> bool:
    """Dividing by n is exact (and so keeps every order) when n is a power of two."""
    return n > 0 and n & (n - 1) == 0


def _div_(a, count):
    a /= count
    return a


def _merge_top(best_s, best_r, rr, jj, vals, offset: int, kk: int):
    """Merge new entries (row ``rr + offset``, theta ``jj``, similarity ``vals``) into each theta's
    list sorted by (-similarity, row), keeping ``kk`` per theta (fewer while fewer are known)."""
    b, width = best_s.shape
    all_j = np.concatenate([np.repeat(np.arange(b), width), jj])
    all_s = np.concatenate([best_s.ravel(), vals])
    all_r = np.concatenate([best_r.ravel(), rr.astype(np.int64) + offset])
    o = np.lexsort((all_r, -all_s, all_j))  # by theta, then similarity (desc), then row
    all_j, all_s, all_r = all_j[o], all_s[o], all_r[o]
    counts = np.bincount(all_j, minlength=b)
    rank = np.arange(len(all_j)) - np.repeat(np.cumsum(counts) - counts, counts)
    new_w = min(kk, int(counts.min()))  # every theta has >= width entries
    keep = rank < new_w
    return all_s[keep].reshape(b, new_w), all_r[keep].reshape(b, new_w)


def greedy_unique_pick(blocks: list, theta: list, *, top: int = 64, block: int = 65536,
                       sub: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Row per theta_j, in order j = 0..B-1: its most similar row not taken by theta_0..theta_{j-1}.

    Similarity = mean over blocks b of ``x_b . theta_b`` (rows and thetas unit-norm per
    block). Each theta's ``top`` best rows are found in one blocked pass; a theta whose
    ``top`` rows are all taken gets a full pass of its own. Ties: the lower row.

    The pass keeps, per theta, its ``top`` best rows so far; after the first block only the
    entries above a theta's current ``top``-th best can enter (one comparison per entry
    instead of a partial sort of every block; the result is the same). The products are
    computed a ``block`` of rows at a time (their rounding depends on the block); the sum
    over blocks, the comparison and the compaction then run ``sub`` rows at a time.

    Returns ``(rows [B] int64, similarity [B])``.
    """
    n = blocks[0].shape[0]
    b = theta[0].shape[0]
    kk = min(n, max(1, top), max(b, 1))
    th = [np.asarray(t, np.float32) for t in theta]
    # rank the sums over blocks and divide only the kept values when that is exact
    div = 1 if _pow2(len(blocks)) else len(blocks)  # division applied to every similarity
    later = len(blocks) // div  # division left for the picked values
    best_s = best_r = None  # [B, kk], each row sorted by (-similarity, row)
    for s in range(0, n, block):
        if best_s is not None and best_s.shape[1] >= kk:
            # the products of the whole block (their bits depend on the block), then the sum
            # over blocks, the threshold and the compaction a few rows at a time, in cache
            prods = [np.asarray(x[s:s + block], np.float32) @ t.T for x, t in zip(blocks, th)]  # [R, B] each
            thr = best_s[:, -1]
            found = []
            for lo in range(0, len(prods[0]), sub):
                part = _mean_terms((p[lo:lo + sub] for p in prods), div)  # in place in prods[0]
                r_, j_ = np.nonzero(part > thr[None, :])  # a tie with the kk-th best loses (higher row)
                if len(r_):
                    found.append((r_ + lo, j_, part[r_, j_]))
            del prods
            if not found:
                continue
            rr = np.concatenate([f[0] for f in found])
            jj = np.concatenate([f[1] for f in found])
            vals = np.concatenate([f[2] for f in found])
            best_s, best_r = _merge_top(best_s, best_r, rr, jj, vals, s, kk)
            continue
        sim = _mean_terms((np.asarray(x[s:s + block], np.float32) @ t.T for x, t in zip(blocks, th)), div)  # [R, B]
        if best_s is None:  # first block: a partial sort per theta (contiguous rows of sim.T)
            simt = np.ascontiguousarray(sim.T)  # [B, R]
            r = min(kk, simt.shape[1])
            part = np.argpartition(-simt, r - 1, axis=1)[:, :r] if r < simt.shape[1] else \
                np.broadcast_to(np.arange(simt.shape[1]), simt.shape).copy()
            cs = np.take_along_axis(simt, part, 1)
            o = np.lexsort((part, -cs), axis=1)
            best_s, best_r = np.take_along_axis(cs, o, 1), np.take_along_axis(part, o, 1).astype(np.int64) + s
            continue
        rr, jj = np.nonzero(sim > -np.inf)  # fewer rows seen than kk: everything enters
        best_s, best_r = _merge_top(best_s, best_r, rr, jj, sim[rr, jj], s, kk)
    taken = np.zeros(n, bool)
    rows = np.empty(b, np.int64)
    sims = np.empty(b)
    for j in range(b):
        free = ~taken[best_r[j]]
        if free.any():
            k = int(np.argmax(free))
            rows[j], sims[j] = best_r[j, k], best_s[j, k] / later
        else:  # all of its top rows are taken: one full pass for this theta
            sim = _mean_terms((np.asarray(x, np.float32) @ t[j] for x, t in zip(blocks, th)), div)  # [N]
            sim[taken] = -np.inf
            rows[j] = int(np.argmax(sim))
            sims[j] = sim[rows[j]] / later
        taken[rows[j]] = True
    return rows, sims


def _nearest_theta(xb: list, th: list, objective: str, n_pairs: int, *, chunk: int = 512) -> torch.Tensor:
    """Per row, the theta of highest distribution similarity (argmax of ``dist_sim``): ``[n']`` int64.

    ``dist_sim`` is computed ``chunk`` rows at a time, so each ``[chunk, B]`` slice is added
    and reduced while it is in cache instead of streaming an ``[n', B]`` matrix through
    memory several times. The chunks are near-equal (none much smaller than the others) and
    each row's products, sums and argmax are those of the whole matrix.
    """
    n = xb[0].shape[0]
    nb = len(xb)
    n_chunks = max(1, -(-n // max(1, int(chunk))))
    bounds = [n * i // n_chunks for i in range(n_chunks + 1)]
    pos = torch.empty(n, dtype=torch.long)
    if objective == "mm-activeft":
        tsum = sum(th)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        xc = [x[lo:hi] for x in xb]
        # dist_sim is only ranked (argmax per row); a power-of-two scale is exact in floating
        # point and ranks the same, so it is left out
        if objective == "mm-activeft":
            # uni + cross = (1/M) sum_b x_b.t_b + 1/(M(M-1)) sum_{a != c} x_a.t_c
            #             = 1/(M(M-1)) (sum_a x_a).(sum_c t_c) + (1/M - 1/(M(M-1))) sum_b x_b.t_b:
            # M + 1 products instead of M^2 (one when M = 2, where the second weight is 0)
            w_all, w_own = 1.0 / n_pairs, 1.0 / nb - 1.0 / n_pairs
            dist_sim = sum(xc) @ tsum.T
            if w_own:
                dist_sim *= w_all
                dist_sim += _mean_terms((x @ t.T for x, t in zip(xc, th)), 1) * w_own
        else:
            dist_sim = _mean_terms((x @ t.T for x, t in zip(xc, th)), 1 if _pow2(nb) else nb)  # [chunk, B]
        pos[lo:hi] = torch.from_numpy(dist_sim.numpy().argmax(1))  # first maximum, as torch's max; ~5x faster
    return pos


def parametric_selection(blocks: list, budget: int, rng: np.random.Generator, *, objective: str = "activeft",
                         official: bool = False, align: str = "printed", tau: float = 0.07,
                         lambda_div: float = 1.0, lambda_align: float = 1.0, steps: int = 300, lr: float = 1e-3,
                         batch_size: int | None = 10000, chunk: int = 512) -> dict:
    """Optimise the ActiveFT parametric model and pick; a pure function of arrays.

    Parameters
    ----------
    blocks : list of float arrays [N, D_b]
        Unit-norm feature blocks of the N candidates: one block (the concatenated
        representation) for ActiveFT, one per modality for ``mm-activeft`` / ``mmcsal``.
    objective : {"activeft", "mm-activeft", "mmcsal"}
        * ``activeft`` (METHODS F): ``L = -E_i max_j cos(f_i, theta_j)/tau
          + lambda_div E_j log sum_{k != j} exp(cos(theta_j, theta_k)/tau)``;
          ``official=True``: the official code's ``-E_i log(e^{s_i} / (e^{s_i} + lambda_div
          sum_k e^{cos(sg(theta_k), theta_{j_i})/tau}))`` with k = j included and one side
          detached (sg).
        * ``mm-activeft``: distribution term of 002 eq. 4.9 (uni- plus cross-modal cosines,
          s_i = argmax of their sum; pairs of modalities averaged), diversity eq. 4.8.
        * ``mmcsal``: 002 eq. 4.11: eq. 4.7 + eq. 4.8 + ``sign * lambda_align * E_j log
          sum_k exp(cos(theta_j^a, theta_k^b)/tau)`` averaged over modality pairs (a, b);
          ``align="printed"`` sign = +1 (as printed; lowers cross-modal similarity),
          ``align="corrected"`` sign = -1 (raises it, the stated aim).
    tau, lambda_div, lambda_align, steps, lr :
        0.07, 1, 1, 300, Adam 1e-3 (ActiveFT / 002 §4.3.3).
    batch_size : int or None
        Rows of the distribution term per step: all rows when N <= batch_size, else a random
        batch each step (the official code's large-dataset path); None = always all.
    chunk : int
        Rows per slice when finding each row's nearest theta (memory ``chunk x B``; the
        result does not depend on it).

    Returns
    -------
    dict with ``rows`` [B] (positions in the blocks), ``similarity`` [B], ``loss`` [steps]
    (the loss of every step, before its update), ``theta`` list of [B, D_b], ``init`` [B]
    (the row each theta started from; ``rows == init`` counts thetas that never left it).
    """
    if objective not in ("activeft", "mm-activeft", "mmcsal"):
        raise ConfigError(f"objective must be activeft, mm-activeft or mmcsal, got {objective!r}")
    if align not in ("printed", "corrected"):
        raise ConfigError(f"align must be 'printed' or 'corrected', got {align!r}")
    if official and objective != "activeft":
        raise ConfigError("official=True is the official ActiveFT code's loss; it applies to objective='activeft' only")
    n = blocks[0].shape[0]
    b = min(int(budget), n)
    if b == 0:
        return {"rows": np.zeros(0, np.int64), "similarity": np.zeros(0), "loss": np.zeros(0), "theta": [],
                "init": np.zeros(0, np.int64)}
    init = np.sort(rng.choice(n, size=b, replace=False))
    xs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in blocks]
    theta = [torch.nn.Parameter(x[torch.from_numpy(init)].clone()) for x in xs]
    opt = torch.optim.Adam(theta, lr=lr)
    nb = len(xs)
    pairs = list(itertools.permutations(range(nb), 2))
    upairs = list(itertools.combinations(range(nb), 2))
    eye = torch.eye(b, dtype=torch.bool)
    losses = np.zeros(steps)
    gen = np.random.default_rng(rng.integers(2**63))
    for step in range(steps):
        th = [F.normalize(t, dim=1) for t in theta]
        if batch_size is not None and n > batch_size:
            idx = torch.from_numpy(np.sort(gen.choice(n, size=batch_size, replace=False)))
            xb = [x[idx] for x in xs]
        else:
            xb = xs
        with torch.no_grad():  # which theta each row is nearest to: no gradient through the [n', B] matrix
            pos = _nearest_theta(xb, th, objective, len(pairs), chunk=chunk)  # [n']
        # s_i = dist_sim[i, pos_i], recomputed with autograd from the chosen thetas only: the
        # gradient of a max flows to its argmax entry alone, so this is the same gradient
        s = _mean_terms(((x * t.index_select(0, pos)).sum(1) for x, t in zip(xb, th)), nb)
        if objective == "mm-activeft":
            s = s + _mean_terms(((xb[a] * th[c].index_select(0, pos)).sum(1) for a, c in pairs), len(pairs))
        tt = _mean_terms((t @ t.T for t in th), nb)  # [B, B] mean per-block cosine between thetas
        if official:
            cent = _mean_terms((t.detach() @ t.T for t in th), nb)  # [B, B], rows detached
            csum = torch.exp(cent / tau).sum(0)  # [B]
            loss = -(s / tau - torch.log(torch.exp(s / tau) + lambda_div * csum[pos])).mean()
        else:
            div = torch.logsumexp((tt / tau).masked_fill(eye, -math.inf), dim=1).mean() if b > 1 else torch.zeros(())
            loss = -(s / tau).mean() + lambda_div * div
        if objective == "mmcsal":
            sign = 1.0 if align == "printed" else -1.0
            a_term = torch.stack([torch.logsumexp(th[a] @ th[c].T / tau, dim=1).mean() for a, c in upairs]).mean()
            loss = loss + sign * lambda_align * a_term
        losses[step] = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        th = [F.normalize(t, dim=1).numpy() for t in theta]
    rows, sims = greedy_unique_pick(list(blocks), th)
    return {"rows": rows, "similarity": sims, "loss": losses, "theta": th, "init": init}


def _parametric_strategy(name, pool, budget, labeled_mask, rng, features, objective, **kw) -> Selection:
    cand, _, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection(name, {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    if objective == "activeft":
        blocks = [concat_rows(feats, None if len(cand) == len(pool.ids) else cand)]
    else:
        _shared_space(feats, name)
        blocks = [feats[m] if len(cand) == len(pool.ids) else feats[m][cand] for m in sorted(feats)]
    rng = np.random.default_rng(0) if rng is None else rng
    out = parametric_selection(blocks, b, rng, objective=objective, **kw)
    rows = cand[out["rows"]]
    info = {"features": source, "loss_first": float(out["loss"][0]), "loss_last": float(out["loss"][-1]),
            "steps": int(len(out["loss"])), "picks_at_init": int(np.sum(out["rows"] == out["init"])),
            **{k: v for k, v in kw.items() if k in ("official", "align")}}
    return _selection(pool, name, rows, out["similarity"], [f"theta {j}" for j in range(len(rows))], info, cand)


@register("activeft", params={"features": "'auto' (MMSSL embeddings when the pool carries them, else raw), 'mmssl' or 'raw' per-modality features", "tau": "temperature of the similarities (0.07)", "lambda_div": "weight of the diversity term (1.0)", "steps": "Adam steps (300)", "lr": "Adam learning rate (1e-3)", "batch_size": "candidates per step for the distribution term; None = all", "official": "use the official code's diversity term (k = j included, one side detached)"})
def activeft(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
             official: bool = False, tau: float = 0.07, lambda_div: float = 1.0, steps: int = 300,
             lr: float = 1e-3, batch_size: int | None = 10000) -> Selection:
    """ActiveFT (Xie et al. 2023; METHODS F) on the concatenated representation.

    See :func:`parametric_selection` (``objective="activeft"``). ``official`` switches to the
    official code's loss. Score = cosine of each pick to its theta; reason = ``theta j``;
    ``info`` has the first/last loss and, with MMSSL features, the picks' mean cross-modal
    cosine (``cross_cosine_selected``).
    """
    return _parametric_strategy("activeft", pool, budget, labeled_mask, rng, features, "activeft", official=official,
                                tau=tau, lambda_div=lambda_div, steps=steps, lr=lr, batch_size=batch_size)


@register("mm-activeft", params={"features": "'auto' (MMSSL embeddings when the pool carries them, else raw), 'mmssl' or 'raw' per-modality features", "tau": "temperature of the similarities (0.07)", "lambda_div": "weight of the diversity term (1.0)", "steps": "Adam steps (300)", "lr": "Adam learning rate (1e-3)", "batch_size": "candidates per step for the distribution term; None = all"})
def mm_activeft(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
                tau: float = 0.07, lambda_div: float = 1.0, steps: int = 300, lr: float = 1e-3,
                batch_size: int | None = 10000) -> Selection:
    """MMActiveFT: ActiveFT with the uni+cross-modal distribution gap of 002 eq. 4.9.

    Per-modality thetas (each unit-norm); the final pick uses the uni-modal similarity, as
    002 §4.2.3 states for MMCSAL (the thesis does not say it for MMActiveFT). Needs one
    shared space (MMSSL embeddings).
    """
    return _parametric_strategy("mm-activeft", pool, budget, labeled_mask, rng, features, "mm-activeft",
                                tau=tau, lambda_div=lambda_div, steps=steps, lr=lr, batch_size=batch_size)


@register("mmcsal", params={"features": "'auto' (MMSSL embeddings when the pool carries them, else raw), 'mmssl' or 'raw' per-modality features", "tau": "temperature of the similarities (0.07)", "lambda_div": "weight of the diversity term (1.0)", "steps": "Adam steps (300)", "lr": "Adam learning rate (1e-3)", "batch_size": "candidates per step for the distribution term; None = all", "align": "'printed' (eq. 4.11 as printed) or 'corrected' (sign flipped)", "lambda_align": "weight of the alignment term (1.0)"})
def mmcsal(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
           align: str = "printed", tau: float = 0.07, lambda_div: float = 1.0, lambda_align: float = 1.0,
           steps: int = 300, lr: float = 1e-3, batch_size: int | None = 10000) -> Selection:
    """MMCSAL (002 eq. 4.11): ActiveFT's gap and diversity + the cross-modal alignment term.

    ``align="printed"`` adds ``+lambda_align * A`` exactly as eq. 4.11 prints it (minimising
    it *lowers* the thetas' cross-modal similarity); ``align="corrected"`` subtracts it.
    ``info["cross_cosine_selected"]`` is the picks' mean cross-modal cosine (MMSSL space),
    to compare with ``info["cross_cosine_candidates"]``. Needs MMSSL embeddings.
    """
    return _parametric_strategy("mmcsal", pool, budget, labeled_mask, rng, features, "mmcsal", align=align,
                                tau=tau, lambda_div=lambda_div, lambda_align=lambda_align, steps=steps, lr=lr,
                                batch_size=batch_size)


# ---------------------------------------------------------------------------------------
# k-means centres
# ---------------------------------------------------------------------------------------
def _fit_kmeans(x, k, rng, iters, fit_sample, assign_all: bool = True):
    """:func:`kmeans_sampled` with its seed and its sample drawn from ``rng``: ``(centres, assign, sqdist)``."""
    seed = int(rng.integers(2**31))
    return kmeans_sampled(x, k, iters=iters, seed=seed, fit_sample=fit_sample, sample_rng=rng,
                          assign_all=assign_all)


@register("kmeans", params={"features": "'auto' (MMSSL embeddings when the pool carries them, else raw), 'mmssl' or 'raw' per-modality features", "iters": "Lloyd iterations (20)", "fit_sample": "fit k-means on this many random candidates at most; None = all"})
def kmeans_centres(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
                   iters: int = 20, fit_sample: int | None = 100000) -> Selection:
    """K-means with B clusters over the concatenated representation; per centre the nearest item.

    002 §4.3.2 ("K-means"). Centres are taken in index order; each takes its nearest
    candidate not yet taken (so exactly B unique ids). ``fit_sample``: fit on a random
    subsample of that many candidates when there are more (then one assignment pass).
    Score = minus the Euclidean distance of the pick to its centre.
    """
    cand, _, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection("kmeans", {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    rng = np.random.default_rng(0) if rng is None else rng
    x = concat_rows(feats, None if len(cand) == len(pool.ids) else cand)
    cen, _, _ = _fit_kmeans(x, b, rng, iters, fit_sample, assign_all=False)  # only the centres are used
    # nearest unique candidate per centre: cosine similarity to the normalised centre is not
    # the same as Euclidean distance for non-unit centres, so rank by -||x - c||^2 directly
    # (= 2 x.c - ||c||^2 - 1 for unit x): feed [x, 1] . [2c, -||c||^2] to the greedy picker.
    xa = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1)
    ca = np.concatenate([2 * cen, -np.einsum("kd,kd->k", cen, cen)[:, None]], 1).astype(np.float32)
    rows, sim = greedy_unique_pick([xa], [ca])
    dist = np.sqrt(np.maximum(1.0 - sim, 0.0))  # ||x - c||^2 = 1 - (2 x.c - ||c||^2)
    return _selection(pool, "kmeans", cand[rows], -dist, [f"centre {j}" for j in range(len(rows))],
                      {"features": source, "n_clusters": int(b)}, cand)


# ---------------------------------------------------------------------------------------
# TypiClust
# ---------------------------------------------------------------------------------------
class TypicalityCache:
    """A cluster's neighbour lists, kept while members are removed (TypiClust's repeated visits).

    Built once from the cluster's current members: each member's ``length`` nearest other
    members with their squared distances, by FAISS in float32. :meth:`mean_sqdist` for a
    later, smaller member set uses each row's first ``k`` listed neighbours still in the set
    (``None`` = rebuild: some row has fewer than ``k`` of them left). These float32 means
    only screen: :func:`typiclust` recomputes the rows near the best one in float64 with
    :func:`typicality` (``rows=``) and decides with those, so the pick is the float64 one.
    """

    def __init__(self, x: np.ndarray, members: np.ndarray, length: int):
        import faiss

        self.members = np.asarray(members, np.int64)
        xm = np.ascontiguousarray(x[self.members], dtype=np.float32)
        m = len(xm)
        self.length = length = int(min(length, m - 1))
        index = faiss.IndexFlatL2(xm.shape[1])
        index.add(xm)
        d2, nb = index.search(xm, min(m, length + 1))  # [m, L+1] ascending, usually the row itself first
        own = nb == np.arange(m)[:, None]
        no_own = ~own.any(1)
        own[no_own, -1] = True  # a row not in its own list (duplicates): drop the farthest instead
        self.nb = nb[~own].reshape(m, length)
        self.d2 = np.maximum(d2[~own].reshape(m, length), 0.0).astype(np.float64)

    def mean_sqdist(self, members: np.ndarray, k: int):
        """Mean squared distance to the k nearest of ``members`` (a subset of the build's), or ``None``."""
        local = np.searchsorted(self.members, members)
        alive = np.zeros(len(self.members), bool)
        alive[local] = True
        valid = alive[self.nb[local]]  # [n, L]
        take = valid & (np.cumsum(valid, axis=1) <= k)
        if (take.sum(1) < k).any():
            return None
        return (self.d2[local] * take).sum(1) / k


def typicality(x: np.ndarray, k: int, block: int = 512, rows=None) -> np.ndarray:
    """``1 / (mean squared-L2 distance to the k nearest other rows + 1e-5)`` (TypiClust ref.).

    The reference code uses faiss ``IndexFlatL2`` distances, which are squared. ``[n, D] -> [n]``,
    or ``[len(rows)]`` for the given ``rows`` only (their neighbours are still all of ``x``);
    float64; distances are computed ``block`` rows at a time (memory ``block x n``).
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    k = max(1, min(k, n - 1))
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    out = np.empty(len(rows))
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        d2 = np.maximum(sq[r, None] + sq[None, :] - 2.0 * x[r] @ x.T, 0.0)  # [R, n]
        d2[np.arange(len(r)), r] = np.inf  # not its own neighbour
        out[s:s + block] = 1.0 / (np.partition(d2, k - 1, axis=1)[:, :k].mean(1) + 1e-5)
    return out


@register("typiclust", params={"features": "'auto' (MMSSL embeddings when the pool carries them, else raw), 'mmssl' or 'raw' per-modality features", "k_nn": "neighbours for typicality (20)", "min_cluster_size": "clusters this small are skipped (5)", "max_clusters": "cap on the number of clusters (500)", "iters": "Lloyd iterations (20)", "fit_sample": "fit k-means on this many random items at most; None = all", "cache_min": "clusters with more free members than this keep a neighbour cache (256)", "shortlist_extra": "cached neighbours per member beyond k_nn (8)", "screen_tol": "float32 screen margin on the mean squared distance, times the largest squared norm (1e-4)"})
def typiclust(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
              k_nn: int = 20, min_cluster_size: int = 5, max_clusters: int = 500, iters: int = 20,
              fit_sample: int | None = 100000, cache_min: int = 256, shortlist_extra: int = 8,
              screen_tol: float = 1e-4) -> Selection:
    """TypiClust (Hacohen et al. 2022, TPC_RP on given features), as the reference code does it.

    k-means with ``min(|L| + B, max_clusters)`` clusters over candidates and labeled items;
    clusters of <= ``min_cluster_size`` items are skipped (unless all are); the rest are
    visited by fewest labeled items, then largest size, cyclically; each visit picks the
    member of highest :func:`typicality` with ``k = min(k_nn, n_c // 2)`` among its members
    still unlabeled and unpicked. Score = typicality; reason = ``cluster c``.

    k-means is fitted on at most ``fit_sample`` random rows, then every row is assigned to
    the centres (the reference code fits sklearn's ``MiniBatchKMeans`` when there are more
    than 50 clusters; it does not fit on all rows either).

    Clusters of more than ``cache_min`` free members keep a :class:`TypicalityCache`
    (each member's ``k_nn + shortlist_extra`` nearest members, float32, built once): a
    visit screens with it and recomputes in float64 only the members whose float32 mean
    squared distance is within ``screen_tol`` (times the largest squared norm; float32
    errors are ~1e-6 of it) of the best, so the pick is the float64 argmax; smaller
    clusters are computed directly.
    """
    cand, lab, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection("typiclust", {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    rng = np.random.default_rng(0) if rng is None else rng
    rel = np.union1d(cand, lab) if len(lab) else cand  # sorted rows: candidates and labeled
    x = concat_rows(feats, None if len(rel) == len(pool.ids) else rel)
    k = min(len(lab) + b, max_clusters, len(rel))
    _, assign, _ = _fit_kmeans(x, k, rng, iters, fit_sample)
    is_cand = np.isin(rel, cand) if len(lab) else np.ones(len(rel), bool)
    sizes = np.bincount(assign, minlength=k)
    lab_counts = np.bincount(assign[~is_cand], minlength=k)
    order = [c for c in np.lexsort((-sizes, lab_counts)) if sizes[c] > 0]
    big = [c for c in order if sizes[c] > min_cluster_size]
    order = big or order
    by_cluster = np.argsort(assign, kind="stable")  # members of each cluster, ascending rows
    starts = np.concatenate([[0], np.cumsum(sizes)])
    free = is_cand.copy()  # members that may still be picked
    cache = {}  # cluster -> TypicalityCache of its free members
    sqmax = float(np.max(np.einsum("nd,nd->n", x, x))) if len(x) else 1.0  # scale of float32 distance errors
    picks, scores, reasons = [], [], []
    i = 0
    while len(picks) < b:
        c = order[i % len(order)]
        i += 1
        all_members = by_cluster[starts[c]:starts[c + 1]]
        members = all_members[free[all_members]]
        if len(members) == 0:
            if not any(free[by_cluster[starts[cc]:starts[cc + 1]]].any() for cc in order):  # skipped clusters only
                order = [cc for cc in np.lexsort((-sizes, lab_counts))
                         if free[by_cluster[starts[cc]:starts[cc + 1]]].any()]
                i = 0
            continue
        kc = min(k_nn, len(members) // 2)
        if len(members) <= 1:
            t = np.ones(1)
        elif len(members) <= cache_min:
            t = typicality(x[members], kc)
        else:
            tc = cache.get(c)
            msd = None if tc is None else tc.mean_sqdist(members, kc)
            if msd is None:  # no cache yet, or a row lost too many neighbours: rebuild from the free members
                cache[c] = tc = TypicalityCache(x, members, kc + shortlist_extra)
                msd = tc.mean_sqdist(members, kc)
            # float32 screen, float64 decision: only rows within screen_tol of the best can win
            near = np.flatnonzero(msd <= msd.min() + screen_tol * max(1.0, float(sqmax)))
            t = np.full(len(members), -np.inf)
            t[near] = typicality(x[members], kc, rows=near)
        j = int(np.argmax(t))
        picks.append(int(members[j]))
        scores.append(float(t[j]))
        reasons.append(f"cluster {int(c)}")
        free[members[j]] = False
    rows = rel[np.array(picks, np.int64)]
    return _selection(pool, "typiclust", rows, scores, reasons,
                      {"features": source, "n_clusters": int(k), "n_clusters_used": int(len(big) or len(order))}, cand)


# ---------------------------------------------------------------------------------------
# ProbCover
# ---------------------------------------------------------------------------------------
def purity_delta(x: np.ndarray, pseudo: np.ndarray, alpha: float = 0.95, block: int = 4096) -> tuple[float, float]:
    """Largest delta whose purity is >= alpha (ProbCover's rule), exactly.

    A row's delta-ball ``{j : ||x_i - x_j|| < delta}`` is pure when all its members share
    the row's pseudo-label, i.e. when ``delta <= d_i``, the distance from row i to the
    nearest row of another pseudo-label. purity(delta) = mean(d_i >= delta), so the largest
    delta with purity >= alpha is the ``floor((1 - alpha) N)``-th smallest d_i.
    Returns ``(delta, purity(delta))``.
    """
    x = np.asarray(x, np.float64)  # exact enough to rank distances
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    d_other = np.full(n, np.inf)
    for s in range(0, n, block):
        dd = sq[s:s + block, None] + sq[None, :] - 2.0 * (x[s:s + block] @ x.T)  # [R, N]
        dd[pseudo[s:s + block, None] == pseudo[None, :]] = np.inf
        d_other[s:s + block] = np.sqrt(np.maximum(dd.min(1), 0.0))
    srt = np.sort(d_other)
    m = int(math.floor((1.0 - alpha) * n))
    delta = float(srt[min(m, n - 1)])
    if not np.isfinite(delta):  # a single pseudo-class: every ball is pure
        delta = float(np.sqrt(max(sq.max() * 4.0, 0.0))) or 1.0
    return delta, float(np.mean(d_other >= delta))


def delta_ball_graph(x: np.ndarray, delta: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency of ``||x_i - x_j|| < delta`` (self loops included): ``(indptr [N+1], indices)``."""
    x = np.asarray(x, np.float32)
    n = len(x)
    sq = np.einsum("nd,nd->n", x, x)
    ind, counts = [], []
    for s in range(0, n, block):
        dd = sq[s:s + block, None] + sq[None, :] - 2.0 * (x[s:s + block] @ x.T)
        r, c = np.nonzero(dd < delta * delta)
        counts.append(np.bincount(r, minlength=min(block, n - s)))
        ind.append(c.astype(np.int64))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return indptr, np.concatenate(ind) if ind else np.zeros(0, np.int64)


def max_coverage(indptr, indices, selectable: np.ndarray, covered: np.ndarray, budget: int) -> tuple[list, list]:
    """Greedy max coverage on a symmetric ball graph (ProbCover Alg. 1).

    Repeatedly pick the selectable row whose ball holds the most uncovered rows (ties: the
    lower row), then mark its ball covered. Returns ``(picks, newly_covered_counts)``;
    stops early when no ball covers anything new (the caller fills the rest).
    """
    n = len(indptr) - 1
    covered = covered.copy()
    deg = np.add.reduceat(~covered[indices], indptr[:-1]) if len(indices) else np.zeros(n, np.int64)
    deg = np.where(np.diff(indptr) > 0, deg, 0).astype(np.int64)
    deg[~selectable] = -1
    picks, gains = [], []
    for _ in range(budget):
        cur = int(np.argmax(deg))
        if deg[cur] <= 0:
            break
        picks.append(cur)
        gains.append(int(deg[cur]))
        nb = indices[indptr[cur]:indptr[cur + 1]]
        new = nb[~covered[nb]]
        covered[new] = True
        if len(new):  # every ball containing a newly covered y loses one (symmetric graph): one pass
            lo, hi = indptr[new], indptr[new + 1]
            owners = np.repeat(np.arange(len(new)), hi - lo)
            flat = indices[lo[owners] + (np.arange(len(owners)) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo))]
            deg -= np.bincount(flat, minlength=n)
        deg[cur] = -1
        deg[~selectable] = -1
    return picks, gains


@register("probcover", params={"features": "'auto' (MMSSL embeddings when the pool carries them, else raw), 'mmssl' or 'raw' per-modality features", "alpha": "purity threshold of the delta rule (0.95)", "n_pseudo": "k-means pseudo-label clusters for the purity rule (default: budget)", "delta": "ball radius; None = chosen by the purity rule (recorded in info)", "delta_sample": "items used to choose delta; None = all", "iters": "Lloyd iterations (20)", "graph_max": "largest number of items the delta-ball graph is built on; above it, all labeled items and a uniform random sample of the candidates (50000; None = all)"})
def probcover(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
              alpha: float = 0.95, n_pseudo: int | None = None, delta: float | None = None,
              delta_sample: int | None = 20000, iters: int = 20, graph_max: int | None = 50000) -> Selection:
    """ProbCover (Yehuda et al. 2022): greedy max coverage of delta-balls.

    Over candidates and labeled items (labeled balls start covered), on the concatenated
    unit-norm representation with Euclidean distance. ``delta`` (``None`` = the purity rule,
    :func:`purity_delta`, on k-means pseudo-labels with ``n_pseudo`` clusters, default the
    pool's number of classes, purity threshold ``alpha`` = 0.95, computed on at most
    ``delta_sample`` random rows) is recorded in ``info``. When every point is covered
    before B picks, the rest are drawn at random (``info["n_random_fill"]``; the paper does
    not say). Score = newly covered count (NaN for random fill).

    The graph has N² distances: 50k items take about 30 s on 2 cores, 1M would take hours.
    Above ``graph_max`` items the graph (and the pick) is restricted to all labeled items
    and a uniform random sample of ``max(B, graph_max - |L|)`` candidates, so coverage is
    measured on a sample of the pool (``info["graph_items"]``, ``info["graph_sampled"]``).
    The paper builds the graph on the whole pool with a GPU; it does not say what to do
    past what fits.
    """
    cand, lab, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection("probcover", {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    rng = np.random.default_rng(0) if rng is None else rng
    rel = np.union1d(cand, lab)
    sampled = graph_max is not None and len(rel) > int(graph_max)
    if sampled:
        n_keep = min(len(cand), max(b, int(graph_max) - len(lab)))
        rel = np.union1d(np.sort(rng.choice(cand, size=n_keep, replace=False)), lab)
    x = concat_rows(feats, None if len(rel) == len(pool.ids) else rel)
    info = {"features": source, "alpha": alpha, "graph_items": int(len(rel)), "graph_sampled": bool(sampled)}
    if delta is None:
        k = int(n_pseudo or pool.n_classes)
        sub = np.arange(len(x)) if delta_sample is None or len(x) <= delta_sample else \
            np.sort(rng.choice(len(x), size=delta_sample, replace=False))
        _, pseudo, _ = kmeans(x[sub], min(max(k, 1), len(sub)), iters=iters, seed=int(rng.integers(2**31)))
        delta, pur = purity_delta(x[sub], pseudo, alpha)
        info.update({"delta_rule": "purity", "n_pseudo": k, "purity": pur, "delta_sample": int(len(sub))})
    else:
        info["delta_rule"] = "given"
    delta = max(float(delta), 1e-6)  # balls must hold at least their centre
    info["delta"] = delta
    indptr, indices = delta_ball_graph(x, delta)
    is_cand = np.isin(rel, cand)
    covered = np.zeros(len(rel), bool)
    for r in np.flatnonzero(~is_cand):
        covered[indices[indptr[r]:indptr[r + 1]]] = True
    picks, gains = max_coverage(indptr, indices, is_cand, covered, b)
    score = [float(g) for g in gains]
    reason = ["coverage"] * len(picks)
    n_fill = b - len(picks)
    if n_fill:
        rest = np.setdiff1d(np.flatnonzero(is_cand), picks)
        fill = rng.choice(rest, size=n_fill, replace=False)
        picks += [int(f) for f in fill]
        score += [math.nan] * n_fill
        reason += ["random fill (all covered)"] * n_fill
    covered_final = covered.copy()
    for p in picks:
        covered_final[indices[indptr[p]:indptr[p + 1]]] = True
    info.update({"n_random_fill": int(n_fill), "coverage": float(covered_final.mean()),
                 "mean_degree": float(np.diff(indptr).mean())})
    return _selection(pool, "probcover", rel[np.array(picks, np.int64)], score, reason, info, cand)
