"""Relevance learners under the learner contract (:mod:`mmal.learners.base`), over :class:`RelevanceData`.

Both fill what the selection strategies read (:class:`mmal.select.ScoredPool`): ``probs``
is the **four-level distribution** ``[N, 4]`` (levels 0 bad .. 3 excellent), so the
registry's ``entropy`` / ``least-confidence`` / ``margin`` are the level entropy etc. of
003's ordinal head, ``level-variance`` (:mod:`mmal.relevance.al`) is Var[y] under it and
LSB's seed score ``|E[y] - y|`` (:func:`mmal.select.lsb.badness`, 000 eq. 11) uses the
expected level ``E[y] = p1 + 2 p2 + 3 p3`` (003 eq. 9).

- ``probe`` (:class:`RelevanceProbe`, the active-learning learner): a one-hidden-layer MLP
  with a relevance head over *frozen* MiniLM vectors of the query ``q`` and of the video's
  keyword text ``t`` (:func:`mmal.relevance.features.prepare_relevance`; both L2-normalised
  means of the tower's states): ``x = [q * t, |q - t|, cos(q, t)]``, standardised with the
  training rows' mean and std; optionally the pooled visual embedding (``visual=True``).
  Full-batch AdamW, a fixed number of steps: one fit on a few hundred pairs takes well under
  a second on one CPU thread, which is what a simulation with tens of fits per strategy
  needs. Text only by default: on the Tux Paint relevance data the frozen image tower adds
  little (docs/results/hcmrm.md) and 1280 more inputs overfit a few hundred labels.
- ``hcmrm`` (:class:`HCMRMLearner`): the ALBEF-style dual stream of :mod:`mmal.relevance.model`
  fine-tuned with a head (:func:`mmal.relevance.pretrain.finetune_relevance`), optionally from
  a pre-trained model (``mmal pretrain DIR --objectives itc,itm,mlm,pqvm``). Minutes per fit
  on a CPU; the model of ``mmal train`` on a relevance workspace.

``embedding`` (what LSB's kNN and Core-Set search) is the probe's hidden layer, or the
fusion ``[CLS]`` vector of the dual stream.

Heads: ``hsoftmax`` (default) and ``ordinal`` give a level distribution; ``bce`` and ``mse``
do not (they give a score only), so a pool scored with them cannot feed the uncertainty
strategies: :func:`level_probs_or_error` refuses it with one line.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from mmal.errors import ConfigError
from mmal.learners.base import Learner
from mmal.relevance.features import RelevanceData
from mmal.relevance.heads import HEADS, RelevanceHead

#: relevance learners by name (``mmal train DIR --learner``, ``mmal simulate --learner`` on relevance items)
RELEVANCE_LEARNERS = ("probe", "hcmrm")
DEFAULT_RELEVANCE_LEARNER = {"simulate": "probe", "train": "hcmrm"}
DISTRIBUTION_HEADS = ("hsoftmax", "ordinal")


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ConfigError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    return head


def level_probs_or_error(head: str, what: str = "a scored pool") -> None:
    """ConfigError unless ``head`` yields the four-level distribution that selection reads."""
    if head not in DISTRIBUTION_HEADS:
        raise ConfigError(f"head '{head}' gives a score but no four-level distribution, so it cannot make {what}; "
                          f"train with --head {' or --head '.join(DISTRIBUTION_HEADS)}")


def query_vectors(data: RelevanceData) -> np.ndarray:
    """Per pair: the L2-normalised mean of the frozen MiniLM states of its query ``[P, 384]``."""
    cache = getattr(data, "_query_vectors", None)
    if cache is None:
        by_q: dict = {}
        rows = []
        for q, seg in zip(data.queries, data.query_text):
            if q not in by_q:
                v = seg.states.mean(0).numpy().astype(np.float64)
                by_q[q] = v / (np.linalg.norm(v) + 1e-12)
            rows.append(by_q[q])
        cache = np.stack(rows).astype(np.float32)
        data._query_vectors = cache  # per data object (not in ``info``, which is JSON)
    return cache


def probe_inputs(data: RelevanceData, idx, visual: bool = False) -> np.ndarray:
    """``[q * t, |q - t|, cos(q, t)]`` (+ pooled visual) of pairs ``idx`` -> ``[n, 769 (+1280)]``."""
    idx = np.asarray(idx)
    q = query_vectors(data)[idx]
    t = data.text_pooled[data.video_index[idx]].astype(np.float32)
    parts = [q * t, np.abs(q - t), (q * t).sum(1, keepdims=True)]
    if visual:
        parts.append(data.visual_pooled[data.video_index[idx]].astype(np.float32))
    return np.concatenate(parts, 1).astype(np.float32)


def _all(data: RelevanceData, idx):
    return np.arange(len(data.labels)) if idx is None else np.asarray(idx)


class _ProbeNet(nn.Module):
    def __init__(self, d_in: int, hidden: int, head: str, w: float, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = RelevanceHead(head, hidden, w=w)

    def forward(self, x):
        h = self.body(x)
        return h, self.head(h)


class RelevanceLearner(Learner):
    """Shared part: labels come from the ``labels`` argument (not ``data.labels``); ``n_classes`` = 4."""

    def _check_fit(self, data, labels, train_idx):
        if not isinstance(data, RelevanceData):
            raise ConfigError(f"the relevance learner '{self.name}' reads RelevanceData, got {type(data).__name__}")
        y = np.asarray(labels)[np.asarray(train_idx)]
        if len(y) == 0:
            raise ConfigError("no labeled pairs to train on: label some items first (mmal label)")
        if (y < 0).any() or (y > 3).any():
            raise ConfigError("relevance training labels must be levels 0..3")
        return y

    def _no_extras(self, coalitions):
        if coalitions:
            raise ConfigError(f"the relevance learner '{self.name}' has no modality coalitions (BMMAL); "
                              "use a strategy that reads the level distribution or the embedding")

    def _pack(self, probs, emb, scores):
        return {"probs": probs, "embedding": emb, "penultimate": emb, "modality": {}, "present": {},
                "unimodal_probs": {}, "coalition_probs": {}, "scores": scores}


class RelevanceProbe(RelevanceLearner):
    """The cheap relevance learner (module docstring).

    Parameters
    ----------
    head : ``hsoftmax`` (003 eq. 7-10, default) or ``ordinal`` (a distribution is required
        for selection); ``bce`` / ``mse`` train and score but give no distribution.
    w : weight of hsoftmax's ``(r - l)^2`` term (METHODS.md G, default 1).
    hidden : hidden width (default 64); its activations are the pool embedding.
    steps : full-batch AdamW steps (default 300). lr (default 3e-3), weight_decay (1e-2),
    dropout (0.1): optimiser / regularisation, chosen once on Tux Paint relevance at 50-400
    random labels (docs/relevance.md).
    visual : also feed the pooled visual embedding (default False; see module docstring).
    """

    name = "probe"

    def __init__(self, n_classes: int = 4, seed: int = 0, head: str = "hsoftmax", w: float = 1.0, hidden: int = 64,
                 steps: int = 300, lr: float = 3e-3, weight_decay: float = 1e-2, dropout: float = 0.1,
                 visual: bool = False):
        super().__init__(n_classes=4, seed=seed, head=check_head(head), w=float(w), hidden=int(hidden),
                         steps=int(steps), lr=float(lr), weight_decay=float(weight_decay), dropout=float(dropout),
                         visual=bool(visual))
        self.net: _ProbeNet | None = None
        self.mu = self.sd = None

    def fit(self, data, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        y = self._check_fit(data, labels, train_idx)
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        x = probe_inputs(data, train_idx, p["visual"])
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        xt = torch.from_numpy((x - self.mu) / self.sd)
        yt = torch.from_numpy(y.astype(np.int64))
        self.net = _ProbeNet(x.shape[1], p["hidden"], p["head"], p["w"], p["dropout"])
        opt = torch.optim.AdamW(self.net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
        self.net.train()
        losses = []
        for _ in range(p["steps"]):
            loss = self.net.head.loss(self.net(xt)[1], yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"loss": losses[-1], "seconds": time.perf_counter() - t0, "n_train": int(len(y)), "best_epoch": None}

    @torch.inference_mode()
    def score(self, data, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        self._no_extras(coalitions)
        if self.net is None:
            raise ConfigError("the relevance probe is not fitted")
        idx = _all(data, idx)
        self.net.eval()
        x = torch.from_numpy((probe_inputs(data, idx, self.params["visual"]) - self.mu) / self.sd)
        h, out = self.net(x)
        p = self.net.head.probs(out)
        probs = np.full((len(idx), 4), np.nan) if p is None else p.double().numpy()
        return self._pack(probs, h.numpy().astype(np.float32), self.net.head.score(out).double().numpy())

    def state(self) -> dict:
        return {"net": self.net.state_dict(), "mu": torch.from_numpy(self.mu), "sd": torch.from_numpy(self.sd),
                "d_in": int(len(self.mu))}

    def load_state(self, state) -> None:
        p = self.params
        self.net = _ProbeNet(int(state["d_in"]), p["hidden"], p["head"], p["w"], p["dropout"])
        self.net.load_state_dict(state["net"])
        self.mu, self.sd = state["mu"].numpy(), state["sd"].numpy()


class HCMRMLearner(RelevanceLearner):
    """The dual-stream relevance model fine-tuned with a head (module docstring).

    Parameters
    ----------
    head, w : as :class:`RelevanceProbe`.
    epochs, batch_size, lr : fine-tuning (:func:`~mmal.relevance.pretrain.finetune_relevance`;
        defaults 4, 32, 3e-4).
    config : :class:`~mmal.relevance.model.RelevanceConfig` fields of a fresh model (ignored
        when starting from ``pretrained``).
    pretrained : ``(config dict, state_dict)`` of a pre-trained model, or None.
    """

    name = "hcmrm"

    def __init__(self, n_classes: int = 4, seed: int = 0, head: str = "hsoftmax", w: float = 1.0, epochs: int = 4,
                 batch_size: int = 32, lr: float = 3e-4, config: dict | None = None):
        super().__init__(n_classes=4, seed=seed, head=check_head(head), w=float(w), epochs=int(epochs),
                         batch_size=int(batch_size), lr=float(lr), config=dict(config or {}))
        self.model = None
        self.head = None
        self.pretrained = None  # (config dict, state_dict) set by the caller before fit

    def fit(self, data, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        from mmal.relevance.model import RelevanceConfig, RelevanceModel
        from mmal.relevance.pretrain import finetune_relevance

        self._check_fit(data, labels, train_idx)
        p = self.params
        t0 = time.perf_counter()
        model = None
        if self.pretrained is not None:
            cfg, sd = self.pretrained
            model = RelevanceModel(RelevanceConfig(**cfg).check())
            model.load_state_dict(sd)
            p["config"] = dict(cfg)
        d = replace(data, labels=np.asarray(labels, np.int64))
        cfg = None if model is not None else RelevanceConfig(**p["config"]).check()
        res = finetune_relevance(d, model, config=cfg, head=p["head"], w=p["w"], epochs=p["epochs"],
                                 batch_size=p["batch_size"], lr=p["lr"], seed=self.seed, pairs=np.asarray(train_idx))
        self.model, self.head = res.model, res.head
        p["config"] = res.model.cfg.to_dict()
        if log is not None:
            for e, v in enumerate(res.history, 1):
                log(f"epoch {e}: loss {v:.4f}")
        return {"loss": res.history[-1] if res.history else float("nan"), "history": res.history,
                "samples_per_s": res.samples_per_s, "n_train": int(len(train_idx)), "best_epoch": None,
                "seconds": time.perf_counter() - t0,
                "pretrained": self.pretrained is not None}

    def score(self, data, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        from mmal.relevance.pretrain import score_pairs

        self._no_extras(coalitions)
        if self.model is None:
            raise ConfigError("the hcmrm learner is not fitted")
        idx = _all(data, idx)
        scores, probs, emb = score_pairs(self.model, self.head, data, [data.query_text[i] for i in idx],
                                         data.video_index[idx], return_embedding=True)
        return self._pack(probs, emb.astype(np.float32), scores)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "head": self.head.state_dict()}

    def load_state(self, state) -> None:
        from mmal.relevance.model import RelevanceConfig, RelevanceModel

        self.model = RelevanceModel(RelevanceConfig(**self.params["config"]).check())
        self.model.load_state_dict(state["model"])
        self.head = RelevanceHead(self.params["head"], self.model.cfg.dim, w=self.params["w"])
        self.head.load_state_dict(state["head"])


def make_relevance_learner(name: str, seed: int = 0, **params) -> RelevanceLearner:
    """A relevance learner by name (:data:`RELEVANCE_LEARNERS`); unknown params raise ConfigError."""
    import inspect

    cls = {"probe": RelevanceProbe, "hcmrm": HCMRMLearner}.get(name)
    if cls is None:
        raise ConfigError(f"unknown relevance learner {name!r}; expected one of {', '.join(RELEVANCE_LEARNERS)}")
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "n_classes", "seed"}
    params.pop("n_classes", None)
    bad = sorted(set(params) - allowed)
    if bad:
        raise ConfigError(f"relevance learner '{name}' got unknown setting(s) {', '.join(bad)}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    return cls(seed=seed, **params)
