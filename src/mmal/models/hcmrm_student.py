"""Distilled serving student (003 App. A): a light model over cached visual embeddings.

The teacher (a fine-tuned :class:`~mmal.relevance.model.RelevanceModel`) scores many
unlabeled (query, video) pairs; the student learns those scores by MSE. The student reads
only what is cheap at serving time:

- the query and the video's keyword text as wordpiece ids, each mean-pooled by an
  ``EmbeddingBag`` initialised from MiniLM's word embeddings (trainable, no transformer);
- the video's pooled visual embedding from the frozen image tower, precomputed and cached;

``score = MLP([q, t, q*t, |q - t|, W v])``. It is trained by :func:`mmal.train.hcmrm.distill_student`. The paper's student is a smaller BERT-VL; a
bag-of-embeddings model is the smallest thing that can still match query words to video
words on a CPU (a named simplification).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from mmal.features.hcmrm import RelevanceData


class Student(nn.Module):
    """Bag-of-wordpieces query/text + cached visual embedding -> relevance score."""

    def __init__(self, word_emb: torch.Tensor, in_visual: int = 1280, hidden: int = 128):
        super().__init__()
        V, D = word_emb.shape
        self.bag = nn.EmbeddingBag(V, D, mode="mean")
        self.bag.weight.data.copy_(word_emb)
        self.vis = nn.Linear(in_visual, D)
        self.mlp = nn.Sequential(nn.Linear(5 * D, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, q_ids, q_off, t_ids, t_off, visual):
        q = self.bag(q_ids, q_off)
        t = self.bag(t_ids, t_off)
        return self.mlp(torch.cat([q, t, q * t, (q - t).abs(), self.vis(visual)], 1))[:, 0]


def _bags(segs):
    ids = [s.ids for s in segs]
    off = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
    return torch.cat(ids), off


def student_inputs(data: RelevanceData, query_segs, video_index):
    vidx = np.asarray(video_index)
    q_ids, q_off = _bags(query_segs)
    t_ids, t_off = _bags([data.video_text[v] for v in vidx])
    return q_ids, q_off, t_ids, t_off, torch.from_numpy(data.visual_pooled[vidx])


def unlabeled_pairs(data: RelevanceData, n_random: int, seed: int = 0, exclude_split: str = "test"):
    """Pairs for distillation: every pair outside ``exclude_split`` plus ``n_random`` random
    (query, video) combinations of those queries with any video. Returns (query segs, video idx)."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(data.splits != exclude_split)
    segs = [data.query_text[i] for i in idx]
    vids = list(data.video_index[idx])
    pick = rng.choice(idx, n_random)
    segs += [data.query_text[i] for i in pick]
    vids += rng.integers(0, len(data.video_ids), n_random).tolist()
    return segs, np.array(vids)


@torch.inference_mode()
def student_scores(model: Student, data: RelevanceData, query_segs, video_index, batch_size: int = 1024):
    """Student scores ``[n]`` and the throughput (pairs/s, inputs assembled per batch, timed)."""
    model.eval()
    vidx = np.asarray(video_index)
    out = np.zeros(len(vidx))
    t0 = time.perf_counter()
    for s in range(0, len(vidx), batch_size):
        out[s : s + batch_size] = model(*student_inputs(data, query_segs[s : s + batch_size],
                                                        vidx[s : s + batch_size])).numpy()
    dt = time.perf_counter() - t0
    return out, len(vidx) / dt if dt > 0 else float("inf")


def _word_embeddings() -> torch.Tensor:
    from mmal.encoders import load

    return load("text:minilm")._module.embeddings.word_embeddings.weight.detach().clone()
