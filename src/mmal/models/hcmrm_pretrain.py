"""HCMRM objectives: pre-training losses (ITC, ITM, word-level MLM, PQVM) and the fine-tuning inputs.

The training loops that use them are :func:`mmal.train.hcmrm.pretrain_hcmrm` and the
``hcmrm`` learner (:mod:`mmal.learners.relevance`), both on the project's one loop
(:func:`mmal.train.engine.train_epochs`).

Pre-training (003 §3.2, eq. 2-6; METHODS.md G) runs on the *videos* of a relevance items
file (no labels, no real queries), one step per batch of B >= 2 videos:

- **ITC** (ALBEF): in-batch contrastive loss between the text ``[CLS]`` (keyword text
  alone) and the image ``[CLS]``, ``(CE(s_i2t / tau) + CE(s_t2i / tau)) / 2``; no momentum
  model or queue.
- **ITM** with in-batch hard negatives (ALBEF): ``softmax`` of the similarities with the
  diagonal zeroed; one negative image per text and one negative text per image drawn by
  ``multinomial``; 2-way CE on the fusion ``[CLS]`` over B positives and 2B negatives.
- **MLM**, word-level: each keyword of the video text is masked with probability
  ``mlm_prob`` (at least one per video; all its wordpieces replaced by a learned ``[MASK]``
  vector in the input space); the wordpiece ids are predicted from the fusion encoder.
  With ``text_states="contextual"`` the frozen MiniLM states of the neighbours were
  computed with the word visible, so MLM is easier than in ALBEF (see docs/relevance.md).
- **PQVM** (eq. 2-5): ``inx = randint(a, b)`` keywords form the pseudo query ``Q_i``, the
  rest ``T_i``; ``S = (softmax(s_i2t) + softmax(s_t2i)) / 2`` with the diagonal zeroed;
  ``x ~ multinomial(S_i)``, ``x != i``; positive ``[CLS] Q_i [SEP] T_i`` + ``I_i``, negative
  ``[CLS] Q_x [SEP] T_i`` + ``I_i``; 2-way CE on the fusion ``[CLS]``. Without ITC (the
  ``single`` / ``text`` architectures or ``itc`` not selected) ``S`` is the softmax of the
  frozen MiniLM keyword-text cosine similarities divided by ``pqvm_temp``.

The total loss is the sum of the selected objectives (eq. 6).

Fine-tuning: ``[CLS] query [SEP] keyword text`` + the video's visual tokens -> fusion
``[CLS]`` -> a :class:`~mmal.relevance.heads.RelevanceHead`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmal.errors import ConfigError
from mmal.features.hcmrm import RelevanceData, Segment
from mmal.models.hcmrm import SEG_Q, SEG_T, RelevanceModel
from mmal.models.hsoftmax import RelevanceHead

OBJECTIVES = ("itc", "itm", "mlm", "pqvm")


def parse_objectives(spec) -> tuple[str, ...]:
    """``"itc,itm,mlm,pqvm"`` or a sequence -> validated tuple (order kept, duplicates dropped)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in items if s not in OBJECTIVES]
    if bad or not items:
        raise ConfigError(f"objectives must be a non-empty subset of {','.join(OBJECTIVES)}, got {spec!r}")
    return tuple(dict.fromkeys(items))


def sample_hard_negatives(sim: torch.Tensor, generator: torch.Generator | None = None,
                          forbid: torch.Tensor | None = None) -> torch.Tensor:
    """One index per row drawn from ``multinomial(sim[i])`` with ``sim[i, i] = 0`` (ALBEF, 003 eq. 3).

    Parameters
    ----------
    sim : ``[B, B]`` non-negative weights (e.g. softmax similarities), B >= 2.
    forbid : optional ``[B, B]`` bool; True entries are zeroed too (e.g. same pseudo query
        text). A row left with no weight falls back to uniform over ``j != i``.

    Returns ``[B]`` long, never equal to the row index.
    """
    B = sim.shape[0]
    if B < 2 or sim.shape != (B, B):
        raise ConfigError(f"hard negatives need a square batch of >= 2, got {tuple(sim.shape)}")
    w = sim.detach().clamp(min=0).clone()
    eye = torch.eye(B, dtype=torch.bool, device=w.device)
    w = torch.nan_to_num(w, nan=0.0, posinf=0.0)
    w[eye] = 0
    if forbid is not None:
        w[forbid & ~eye] = 0
    empty = w.sum(1) <= 0
    if empty.any():
        w[empty] = (~eye[empty]).to(w.dtype)
    return torch.multinomial(w, 1, generator=generator)[:, 0]


def text_batch(parts: list[tuple[Segment | None, Segment]], cls_vec, sep_vec, max_len: int,
               mask_words: list[set] | None = None, tower=None):
    """Assemble ``[CLS] Q [SEP] T [SEP]`` (or ``[CLS] T [SEP]`` when Q is None) batches.

    Returns ``states [B, L, 384]``, ``segment [B, L]``, ``pad [B, L]`` (True = padding),
    ``mlm_labels [B, L]`` (wordpiece ids at masked T tokens, -100 elsewhere) and
    ``masked [B, L]`` bool. ``mask_words[b]`` = word indices of T to mask.

    ``tower`` (a :class:`~mmal.relevance.features.TextStates` in ``joint`` mode): the states
    are the frozen tower's over the assembled ids (masked ids replaced by ``[MASK]``);
    otherwise the cached segment states are concatenated (specials = ``cls_vec``/``sep_vec``).
    """
    rows = []
    for b, (q, t) in enumerate(parts):
        st, sg, ids, mk = [cls_vec[None]], [SEG_Q], [-100], [False]
        if q is not None:
            q = Segment(q.ids[: max_len // 2], q.words[: max_len // 2], q.states[: max_len // 2])
            st += [q.states, sep_vec[None]]
            sg += [SEG_Q] * len(q.ids) + [SEG_Q]
            ids += [-100] * (len(q.ids) + 1)
            mk += [False] * (len(q.ids) + 1)
        room = max_len - len(sg) - 1
        tids, tw, ts = t.ids[:room], t.words[:room], t.states[:room]
        m = torch.zeros(len(tids), dtype=torch.bool)
        if mask_words is not None and mask_words[b]:
            m = torch.tensor([int(w) in mask_words[b] for w in tw], dtype=torch.bool)
        st += [ts, sep_vec[None]]
        sg += [SEG_T] * len(tids) + [SEG_T]
        ids += torch.where(m, tids, torch.full_like(tids, -100)).tolist() + [-100]
        mk += m.tolist() + [False]
        if tower is not None:
            tok = [torch.tensor([tower.tok.cls_token_id])]
            if q is not None:
                tok += [q.ids, torch.tensor([tower.tok.sep_token_id])]
            tok += [torch.where(m, torch.full_like(tids, tower.mask_id), tids), torch.tensor([tower.tok.sep_token_id])]
            rows.append((torch.cat(tok), sg, ids, mk))
        else:
            rows.append((torch.cat(st), sg, ids, mk))
    if tower is not None:
        states_list = tower.joint([(r[0], torch.tensor(r[1])) for r in rows],
                                  cache=mask_words is None)
        rows = [(s_, g, i, k) for s_, (_, g, i, k) in zip(states_list, rows)]
    L = max(len(r[1]) for r in rows)
    B, D = len(rows), cls_vec.shape[0]
    states = torch.zeros(B, L, D)
    seg = torch.zeros(B, L, dtype=torch.long)
    pad = torch.ones(B, L, dtype=torch.bool)
    labels = torch.full((B, L), -100, dtype=torch.long)
    masked = torch.zeros(B, L, dtype=torch.bool)
    for b, (s, g, i, k) in enumerate(rows):
        n = len(g)
        states[b, :n], seg[b, :n], pad[b, :n] = s, torch.tensor(g), False
        labels[b, :n], masked[b, :n] = torch.tensor(i), torch.tensor(k)
    return states, seg, pad, labels, masked


def _visual(data: RelevanceData, vids: np.ndarray):
    tok = torch.from_numpy(data.visual[vids])
    return tok, torch.zeros(tok.shape[:2], dtype=torch.bool)


def pretrain_losses(model, data, vids, objs, rng, gen, pq_range, mlm_prob, pqvm_temp, exclude_same_query) -> dict:
    """The selected objectives' losses on one batch of videos ``vids`` (B >= 2): ``{name: scalar}`` (eq. 6 sums them).

    ``rng`` (numpy) draws the MLM masks and the pseudo-query split, ``gen`` (torch) the hard
    negatives; see the module docstring for each objective.
    """
    cfg = model.cfg
    B = len(vids)
    segs = [data.video_text[v] for v in vids]
    losses: dict[str, torch.Tensor] = {}
    visual = _visual(data, vids) if cfg.arch != "text" else (None, None)
    img = img_pad = None
    if cfg.arch != "text":
        img, img_pad = model.encode_image(*visual)
    sim_i2t = sim_t2i = None
    if {"itc", "itm"} & set(objs) or ("pqvm" in objs and cfg.arch == "dual" and "itc" in objs):
        st, sg, pad, _, _ = text_batch([(None, t) for t in segs], data.cls_vec, data.sep_vec, cfg.max_len, tower=data.tower)
        t = model.encode_text(st, sg, pad)
        tf, imf = model.contrastive_features(t, img)
        sim_i2t = imf @ tf.T / model.temp  # [B, B]
        sim_t2i = tf @ imf.T / model.temp
        target = torch.arange(B)
        if "itc" in objs:
            losses["itc"] = (F.cross_entropy(sim_i2t, target) + F.cross_entropy(sim_t2i, target)) / 2
        if "itm" in objs:
            with torch.no_grad():
                neg_img = sample_hard_negatives(F.softmax(sim_t2i.float(), 1), gen)  # per text
                neg_txt = sample_hard_negatives(F.softmax(sim_i2t.float(), 1), gen)  # per image
            z = torch.cat([model.fuse(t, pad, img, img_pad)[:, 0],
                           model.fuse(t, pad, img[neg_img], img_pad[neg_img])[:, 0],
                           model.fuse(t[neg_txt], pad[neg_txt], img, img_pad)[:, 0]])
            y = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long()
            losses["itm"] = F.cross_entropy(model.itm_head(z), y)
    if "mlm" in objs:
        mask_words = []
        for sgm in segs:
            n = sgm.n_words
            m = set(np.flatnonzero(rng.random(n) < mlm_prob).tolist()) if n else set()
            if n and not m:
                m = {int(rng.integers(n))}
            mask_words.append(m)
        st, sg, pad, labels, masked = text_batch([(None, t) for t in segs], data.cls_vec, data.sep_vec,
                                                 cfg.max_len, mask_words, tower=data.tower)
        if data.tower is None:
            st = torch.where(masked[..., None], model.mask_vec.expand_as(st), st)
        h = model.fuse(model.encode_text(st, sg, pad), pad, img, img_pad)
        h = h[:, : labels.shape[1]]
        sel = labels != -100
        if sel.any():
            losses["mlm"] = F.cross_entropy(model.mlm_head(h[sel]), labels[sel])
    if "pqvm" in objs:
        inx = [min(int(rng.integers(pq_range[0], pq_range[1] + 1)), max(s.n_words - 1, 1)) for s in segs]
        qs = [s.word_slice(0, k) for s, k in zip(segs, inx)]
        ts = [s.word_slice(k) if s.n_words > k else s.word_slice(0, 0) for s, k in zip(segs, inx)]
        if sim_i2t is not None and "itc" in objs:
            S = (F.softmax(sim_i2t.detach().float(), 1) + F.softmax(sim_t2i.detach().float(), 1)) / 2
        else:
            tp = torch.from_numpy(data.text_pooled[vids])
            S = F.softmax(tp @ tp.T / pqvm_temp, 1)
        forbid = None
        if exclude_same_query:
            qtext = [" ".join(data.keywords[v][:k]) for v, k in zip(vids, inx)]
            forbid = torch.tensor([[qa == qb for qb in qtext] for qa in qtext])
        x = sample_hard_negatives(S, gen, forbid)
        parts = [(q, t) for q, t in zip(qs, ts)] + [(qs[int(x[i])], ts[i]) for i in range(B)]
        st, sg, pad, _, _ = text_batch(parts, data.cls_vec, data.sep_vec, cfg.max_len, tower=data.tower)
        if img is not None:
            img2, img_pad2 = torch.cat([img, img]), torch.cat([img_pad, img_pad])
        else:
            img2 = img_pad2 = None
        z = model.fuse(model.encode_text(st, sg, pad), pad, img2, img_pad2)[:, 0]
        y = torch.cat([torch.ones(B), torch.zeros(B)]).long()
        losses["pqvm"] = F.cross_entropy(model.pqvm_head(z), y)
    return losses


# ---- fine-tuning inputs and scoring ------------------------------------------------------------
def pair_batch(model, data, idx):
    """Fine-tuning input of pairs ``idx``: ``([CLS] query [SEP] keyword text`` batch, the videos' visual tokens)."""
    parts = [(data.query_text[i], data.video_text[data.video_index[i]]) for i in idx]
    st, sg, pad, _, _ = text_batch(parts, data.cls_vec, data.sep_vec, model.cfg.max_len, tower=data.tower)
    visual = _visual(data, data.video_index[idx]) if model.cfg.arch != "text" else None
    return (st, sg, pad), visual


def score_relevance(model: RelevanceModel, head: RelevanceHead, data: RelevanceData, idx, batch_size: int = 128):
    """Scores ``[n]`` and level distributions ``[n, 4]`` (NaN rows for bce / mse) of pairs ``idx``."""
    idx = np.asarray(idx)
    return score_pairs(model, head, data, [data.query_text[i] for i in idx], data.video_index[idx], batch_size)


@torch.inference_mode()
def score_pairs(model: RelevanceModel, head: RelevanceHead, data: RelevanceData, query_segs, video_index,
                batch_size: int = 128, return_embedding: bool = False, prior=None):
    """Scores and level distributions of arbitrary (query segment, video index) pairs.

    ``return_embedding``: also return the fusion ``[CLS]`` vectors ``[n, dim]`` (the head's input);
    ``prior``: the pairs' prior scores ``[n]`` for a head that starts from one.
    """
    prior_t = None if prior is None else torch.as_tensor(np.asarray(prior, np.float64), dtype=torch.float32)
    model.eval()
    head.eval()
    vidx = np.asarray(video_index)
    scores, probs = np.zeros(len(vidx)), np.full((len(vidx), 4), np.nan)
    emb = np.zeros((len(vidx), model.cfg.dim), np.float32) if return_embedding else None
    for s in range(0, len(vidx), batch_size):
        parts = [(q, data.video_text[v]) for q, v in zip(query_segs[s : s + batch_size], vidx[s : s + batch_size])]
        text = text_batch(parts, data.cls_vec, data.sep_vec, model.cfg.max_len, tower=data.tower)[:3]
        visual = _visual(data, vidx[s : s + batch_size]) if model.cfg.arch != "text" else None
        z = model.joint(text, visual)
        out = head(z, None if prior_t is None else prior_t[s : s + batch_size])
        scores[s : s + len(out)] = head.score(out).double().numpy()
        if emb is not None:
            emb[s : s + len(out)] = z.float().numpy()
        p = head.probs(out)
        if p is not None:
            probs[s : s + len(out)] = p.double().numpy()
    return (scores, probs, emb) if return_embedding else (scores, probs)
