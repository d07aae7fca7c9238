"""Training of the HCMRM relevance models on the project's one loop (:func:`~mmal.train.engine.train_epochs`).

- :func:`pretrain_hcmrm` — ITC + ITM + MLM + PQVM pre-training on the videos (003 §3.2, eq. 6;
  the objectives are :func:`mmal.models.hcmrm_pretrain.pretrain_losses`);
- :func:`finetune_hcmrm` — a relevance head on the fusion ``[CLS]`` over labeled pairs (003 §3.3);
- :func:`distill_student` — the serving student learns the teacher's scores by MSE (003 App. A).

Optimiser, shuffling, gradient clipping, the epoch loop and the history are the shared
loop's; each function only says how a batch becomes a loss. Every default that differs from
:class:`~mmal.train.config.TrainConfig` is in the ``*_TRAIN`` dicts below, stated once.
Randomness: weight init and dropout run inside :func:`~mmal.train.engine.seeded` ``(seed)``,
batches are shuffled by the loop's generator seeded with ``seed``, and the objectives' own
draws (MLM masks, pseudo-query split, hard negatives) come from generators seeded with
``seed`` as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mmal.errors import ConfigError
from mmal.features.hcmrm import RelevanceData
from mmal.models.hcmrm import RelevanceConfig, RelevanceModel
from mmal.models.hcmrm_pretrain import pair_batch, parse_objectives, pretrain_losses
from mmal.models.hcmrm_student import Student, _word_embeddings, student_inputs
from mmal.models.hsoftmax import RelevanceHead
from mmal.train.config import TrainConfig
from mmal.train.engine import seeded, torch_threads, train_epochs

#: TrainConfig overrides of each routine (ALBEF-style small-batch AdamW)
PRETRAIN_TRAIN = {"lr": 3e-4, "weight_decay": 0.02, "epochs": 3, "batch_size": 32, "patience": None}
FINETUNE_TRAIN = {"lr": 3e-4, "weight_decay": 0.02, "epochs": 4, "batch_size": 32, "patience": None}
DISTILL_TRAIN = {"lr": 2e-3, "weight_decay": 0.0, "epochs": 20, "batch_size": 256, "patience": None}


def train_config(defaults: dict, overrides: dict | None, seed: int) -> TrainConfig:
    """``TrainConfig`` from a routine's defaults, the caller's overrides and the seed."""
    return TrainConfig.from_dict({**defaults, **(overrides or {}), "seed": int(seed)})


@dataclass
class PretrainResult:
    model: RelevanceModel
    objectives: tuple
    history: list = field(default_factory=list)  # per epoch: mean loss per objective
    samples_per_s: float = 0.0


def pretrain_hcmrm(data: RelevanceData, config: RelevanceConfig | None = None, *, objectives="itc,itm,mlm,pqvm",
                   train: dict | None = None, pq_range: tuple[int, int] = (1, 3), mlm_prob: float = 0.15,
                   pqvm_temp: float = 0.07, exclude_same_query: bool = True, seed: int = 0) -> PretrainResult:
    """Pre-train a :class:`RelevanceModel` on the videos of ``data`` (003 eq. 6: the sum of the objectives).

    Parameters
    ----------
    objectives : subset of ``itc,itm,mlm,pqvm`` (``itc``/``itm`` need ``arch="dual"``).
    train : :class:`TrainConfig` overrides over :data:`PRETRAIN_TRAIN` (``batch_size`` >= 2: in-batch negatives).
    pq_range : ``(a, b)``: the pseudo query takes ``randint(a, b)`` keywords (inclusive), capped so
        that at least one keyword stays in the text (003 eq. 2).
    mlm_prob : share of the video text's keywords masked for MLM (at least one per video).
    pqvm_temp : temperature of the frozen-text similarity that samples PQVM negatives when ITC is off.
    exclude_same_query : a PQVM negative whose pseudo query equals the positive's is not drawn.
    """
    objs = parse_objectives(objectives)
    cfg = config or RelevanceConfig()
    cfg.vocab_size = data.vocab_size
    if cfg.arch != "dual" and ({"itc", "itm"} & set(objs)):
        raise ConfigError(f"objectives itc/itm need the dual-stream architecture, not {cfg.arch!r}")
    tc = train_config(PRETRAIN_TRAIN, train, seed)
    if tc.batch_size < 2:
        raise ConfigError(f"pre-training needs batch_size >= 2 (in-batch negatives), got {tc.batch_size}")
    a, b = int(pq_range[0]), int(pq_range[1])
    if not 1 <= a <= b:
        raise ConfigError(f"pq_range must be 1 <= a <= b, got {pq_range}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))
    t0 = time.perf_counter()
    with torch_threads(tc.threads), seeded(seed):
        model = RelevanceModel(cfg)

        def batch_loss(vids):
            if len(vids) < 2:
                return None  # one video has no in-batch negative
            return pretrain_losses(model, data, vids, objs, rng, gen, (a, b), mlm_prob, pqvm_temp, exclude_same_query)

        hist = train_epochs({"model": model}, [{"params": list(model.parameters())}], np.arange(len(data.video_ids)),
                            batch_loss, tc, desc="pretrain hcmrm")
    model.eval()
    dt = time.perf_counter() - t0
    history = [e.get("losses", {}) for e in hist["epochs"]]
    return PretrainResult(model, objs, history, hist["train_samples_per_s"] if dt > 0 else 0.0)


@dataclass
class FinetuneResult:
    model: RelevanceModel
    head: RelevanceHead
    history: list = field(default_factory=list)
    samples_per_s: float = 0.0


def finetune_hcmrm(data: RelevanceData, labels, pairs, model: RelevanceModel | None = None, *,
                   config: RelevanceConfig | None = None, head: str = "hsoftmax", w: float = 1.0,
                   train: dict | None = None, seed: int = 0, progress: bool = False, prior=None,
                   prior_scale: float = 4.0) -> FinetuneResult:
    """Fine-tune ``[CLS] query [SEP] keyword text`` + visual tokens -> fusion ``[CLS]`` -> ``head`` on ``pairs``.

    ``labels`` are the levels of every pair (``-1`` unlabeled; only ``pairs`` are read);
    ``model`` = a pre-trained model (fine-tuned in place), None = a fresh one from ``config``.
    ``train``: :class:`TrainConfig` overrides over :data:`FINETUNE_TRAIN`.
    ``prior``: an optional score of every pair ``[P]`` (the untrained cosine) the head starts
    from (:class:`~mmal.models.hsoftmax.RelevanceHead` ``prior_scale``): before the first step
    the model ranks the pairs as ``prior`` does, and fine-tuning learns a residual on it.
    """
    pairs = np.asarray(pairs, np.int64)
    prior_t = None if prior is None else torch.as_tensor(np.asarray(prior, np.float64), dtype=torch.float32)
    if len(pairs) == 0:
        raise ConfigError("no labeled pairs to fine-tune on")
    y = torch.as_tensor(np.asarray(labels, np.int64))
    tc = train_config(FINETUNE_TRAIN, train, seed)
    with torch_threads(tc.threads), seeded(seed):
        if model is None:
            cfg = config or RelevanceConfig()
            cfg.vocab_size = data.vocab_size
            model = RelevanceModel(cfg)
        rhead = RelevanceHead(head, model.cfg.dim, w=w, prior_scale=None if prior is None else prior_scale)

        def batch_loss(idx):
            text, visual = pair_batch(model, data, idx)
            pr = None if prior_t is None else prior_t[torch.from_numpy(idx)]
            return rhead.loss(rhead(model.joint(text, visual), pr), y[torch.from_numpy(idx)])

        hist = train_epochs({"model": model, "head": rhead}, [{"params": list(model.parameters()) + list(rhead.parameters())}],
                            pairs, batch_loss, tc, progress=progress, desc="fine-tune hcmrm")
    model.eval()
    rhead.eval()
    return FinetuneResult(model, rhead, [e["train_loss"] for e in hist["epochs"]], hist["train_samples_per_s"])


@dataclass
class StudentResult:
    model: Student
    history: list = field(default_factory=list)


def distill_student(data: RelevanceData, query_segs, video_index, teacher_scores, *, hidden: int = 128,
                    train: dict | None = None, seed: int = 0, word_emb: torch.Tensor | None = None) -> StudentResult:
    """Fit a :class:`~mmal.models.hcmrm_student.Student` to ``teacher_scores`` (MSE) on the given pairs.

    ``word_emb``: initial wordpiece embeddings ``[vocab, D]`` (default: MiniLM's);
    ``train``: :class:`TrainConfig` overrides over :data:`DISTILL_TRAIN`.
    """
    tc = train_config(DISTILL_TRAIN, train, seed)
    emb = _word_embeddings() if word_emb is None else word_emb
    y = torch.as_tensor(np.asarray(teacher_scores), dtype=torch.float32)
    vidx = np.asarray(video_index)
    with torch_threads(tc.threads), seeded(seed):
        model = Student(emb, data.visual_pooled.shape[1], hidden)

        def batch_loss(b):
            out = model(*student_inputs(data, [query_segs[i] for i in b], vidx[b]))
            return F.mse_loss(out, y[torch.from_numpy(b)])

        hist = train_epochs({"student": model}, [{"params": list(model.parameters())}], np.arange(len(vidx)),
                            batch_loss, tc, desc="distil student")
    model.eval()
    return StudentResult(model, [e["train_loss"] for e in hist["epochs"]])


__all__ = ["pretrain_hcmrm", "finetune_hcmrm", "distill_student", "PretrainResult", "FinetuneResult", "StudentResult",
           "PRETRAIN_TRAIN", "FINETUNE_TRAIN", "DISTILL_TRAIN"]
