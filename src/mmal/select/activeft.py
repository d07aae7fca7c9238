"""ActiveFT (Xie et al., CVPR 2023; METHODS F) and its multimodal form (002 eq. 4.6-4.9).

A parametric model Theta of B points is optimised (distribution gap + diversity, eq. 4.6-4.8;
``mm-activeft``: the uni- plus cross-modal gap of eq. 4.9), then each theta takes its most
similar sample not yet taken (:func:`greedy_unique_pick`). :func:`parametric_selection` is
the pure array function that ``mmcsal`` (:mod:`mmal.select.mmcsal`) shares.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from mmal.errors import ConfigError
from mmal.pool import ScoredPool, Selection
from mmal.select.api import empty_selection
from mmal.select.registry import register
from mmal.select.coldstart import (FEATURES_DOC, _candidates, _selection, _shared_space, concat_rows, pool_features)


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
                         official: bool = False, align: str = "corrected", tau: float = 0.07,
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
          ``align="corrected"`` (default) sign = -1 (raises the cross-modal similarity, the
          stated aim), ``align="printed"`` sign = +1 (as printed; lowers it, and on the
          project's benchmarks leaves most thetas on their random start: docs/results/cold_start.md).
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


#: values of ``one_block`` (mm-activeft, mmcsal): what the multimodal objective does on one feature block
ONE_BLOCK = ("activeft", "error")
ONE_BLOCK_DOC = ("features of a single block (a plain pool.embedding, or one modality) leave the cross-modal "
                 "terms no modality pair: 'activeft' (default) drops them, which is ActiveFT's objective "
                 "(eq. 4.7-4.8) on that block, and says so in info['warnings']; 'error' raises instead")


def _parametric_strategy(name, pool, budget, labeled_mask, rng, features, objective, one_block: str = "error",
                         **kw) -> Selection:
    if one_block not in ONE_BLOCK:
        raise ConfigError(f"{name}: one_block must be one of {', '.join(ONE_BLOCK)}, got {one_block!r}")
    cand, _, b = _candidates(pool, budget, labeled_mask)
    if b == 0:
        return empty_selection(name, {"n_candidates": int(len(cand))})
    feats, source = pool_features(pool, features)
    warning = None
    if objective != "activeft" and len(feats) == 1 and one_block == "activeft":
        # eq. 4.9 / 4.11 with M = 1: no pair (a, b != a) for the cross-modal terms, what is left
        # is eq. 4.7 + 4.8 on the one block, i.e. ActiveFT on the same representation it reads
        what = "pool.embedding" if source == "embedding" else f"{source} features of '{next(iter(feats))}' only"
        warning = (f"strategy '{name}': the features are one block ({what}), so the "
                   f"cross-modal terms of 002 eq. {'4.9' if objective == 'mm-activeft' else '4.11'} have no "
                   "modality pair and were left out: these are ActiveFT's picks (eq. 4.7-4.8) on that block "
                   "(one_block='error' refuses instead)")
        objective = "activeft"
        kw = {k: v for k, v in kw.items() if k not in ("align", "lambda_align")}
    if objective == "activeft":
        blocks = [concat_rows(feats, None if len(cand) == len(pool.ids) else cand)]
    else:
        _shared_space(feats, name)
        blocks = [feats[m] if len(cand) == len(pool.ids) else feats[m][cand] for m in sorted(feats)]
    rng = np.random.default_rng(0) if rng is None else rng
    out = parametric_selection(blocks, b, rng, objective=objective, **kw)
    rows = cand[out["rows"]]
    loss = out["loss"]
    info = {"features": source, "loss_first": float(loss[0]) if len(loss) else None,
            "loss_last": float(loss[-1]) if len(loss) else None,
            "steps": int(len(loss)), "picks_at_init": int(np.sum(out["rows"] == out["init"])),
            **{k: v for k, v in kw.items() if k in ("official", "align")}}
    if warning:
        info["objective"] = "activeft"
        info["warnings"] = [warning]
    return _selection(pool, name, rows, out["similarity"], [f"theta {j}" for j in range(len(rows))], info, cand)


@register("activeft", cold_start=True, params={"features": FEATURES_DOC, "tau": "temperature of the similarities (0.07)", "lambda_div": "weight of the diversity term (1.0)", "steps": "Adam steps (300)", "lr": "Adam learning rate (1e-3)", "batch_size": "candidates per step for the distribution term; None = all", "official": "use the official code's diversity term (k = j included, one side detached)"})
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


@register("mm-activeft", cold_start=True, needs=("shared_space",), params={"features": FEATURES_DOC, "tau": "temperature of the similarities (0.07)", "lambda_div": "weight of the diversity term (1.0)", "steps": "Adam steps (300)", "lr": "Adam learning rate (1e-3)", "batch_size": "candidates per step for the distribution term; None = all", "one_block": ONE_BLOCK_DOC})
def mm_activeft(pool: ScoredPool, budget: int, *, labeled_mask=None, rng=None, features: str = "auto",
                tau: float = 0.07, lambda_div: float = 1.0, steps: int = 300, lr: float = 1e-3,
                batch_size: int | None = 10000, one_block: str = "activeft") -> Selection:
    """MMActiveFT: ActiveFT with the uni+cross-modal distribution gap of 002 eq. 4.9.

    Per-modality thetas (each unit-norm); the final pick uses the uni-modal similarity, as
    002 §4.2.3 states for MMCSAL (the thesis does not say it for MMActiveFT). Needs one
    shared space (MMSSL embeddings) for two or more modalities; on features of one block
    (a pool with only an embedding) eq. 4.9 has no cross-modal pair and ``one_block`` says
    what happens (default: ActiveFT's eq. 4.7-4.8 on that block, with a warning).
    """
    return _parametric_strategy("mm-activeft", pool, budget, labeled_mask, rng, features, "mm-activeft",
                                one_block=one_block, tau=tau, lambda_div=lambda_div, steps=steps, lr=lr,
                                batch_size=batch_size)
