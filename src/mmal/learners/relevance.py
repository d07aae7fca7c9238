"""Relevance learners under the learner contract (:mod:`mmal.learners.base`), over :class:`RelevanceData`.

Both fill what the selection strategies read (:class:`mmal.select.ScoredPool`): ``probs``
is the **four-level distribution** ``[N, 4]`` (levels 0 bad .. 3 excellent), so the
registry's ``entropy`` / ``least-confidence`` / ``margin`` are the level entropy etc. of
003's ordinal head, ``level-variance`` (:func:`mmal.select.uncertainty.level_variance`) is Var[y]
under it and LSB's seed score ``|E[y] - y|`` (000 eq. 11, the relevance task's badness) uses the
expected level ``E[y] = p1 + 2 p2 + 3 p3`` (003 eq. 9).

- ``probe`` (:class:`RelevanceProbe`, the active-learning learner): a one-hidden-layer MLP
  with a relevance head over *frozen* MiniLM vectors of the query ``q`` and of the video's
  keyword text ``t`` (:func:`mmal.features.hcmrm.prepare_relevance`; both L2-normalised
  means of the tower's states): ``x = [q * t, |q - t|, cos(q, t)]``, standardised with the
  training rows' mean and std; optionally the pooled visual embedding (``visual=True``).
  Full-batch AdamW, a fixed number of steps: one fit on a few hundred pairs takes well under
  a second on one CPU thread, which is what a simulation with tens of fits per strategy
  needs. Text only by default: on the Tux Paint relevance data the frozen image tower adds
  little (docs/results/hcmrm.md) and 1280 more inputs overfit a few hundred labels.
- ``hcmrm`` (:class:`HCMRMLearner`): the ALBEF-style dual stream of :mod:`mmal.models.hcmrm`
  fine-tuned with a head (:func:`mmal.train.hcmrm.finetune_hcmrm`), optionally from a
  pre-trained model (``mmal pretrain DIR --objectives itc,itm,mlm,pqvm``). Minutes per fit
  on a CPU.

``embedding`` (what LSB's kNN and Core-Set search) is the probe's hidden layer, or the
fusion ``[CLS]`` vector of the dual stream.

Heads: ``hsoftmax`` (default) and ``ordinal`` give a level distribution; ``bce`` and ``mse``
do not (they give a score only), so a pool scored with them cannot feed the uncertainty
strategies: :func:`level_probs_or_error` refuses it with one line.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from mmal.errors import ConfigError
from mmal.features.hcmrm import RelevanceData, pair_cosine, query_vectors
from mmal.learners.base import Learner
from mmal.models.hsoftmax import HEADS, RelevanceHead
from mmal.train.config import TrainConfig
from mmal.train.engine import seeded, torch_threads, train_epochs
from mmal.train.hcmrm import FINETUNE_TRAIN

DISTRIBUTION_HEADS = ("hsoftmax", "ordinal")
#: CPU-sized dual stream of a fresh ``hcmrm`` learner (the set-up of docs/results/hcmrm.md)
WORKSPACE_MODEL = dict(dim=64, n_heads=4, n_text_layers=1, n_image_layers=1, n_fusion_layers=1, embed_dim=32)
#: TrainConfig overrides of the probe (full batch: ``batch_size`` is set to the labeled count; one thread:
#: a tiny MLP gains nothing from two, and loses 10x when the other core is busy)
PROBE_TRAIN = {"lr": 3e-3, "weight_decay": 1e-2, "epochs": 300, "patience": None, "threads": 1}


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ConfigError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    return head


def level_probs_or_error(head: str, what: str = "a scored pool") -> None:
    """ConfigError unless ``head`` yields the four-level distribution that selection reads."""
    if head not in DISTRIBUTION_HEADS:
        raise ConfigError(f"head '{head}' gives a score but no four-level distribution, so it cannot make {what}; "
                          f"train with --head {' or --head '.join(DISTRIBUTION_HEADS)}")


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
    dropout : on the hidden layer (0.1).
    visual : also feed the pooled visual embedding (default False; see module docstring).
    train : :class:`~mmal.train.config.TrainConfig` overrides over :data:`PROBE_TRAIN`:
        full-batch AdamW, one step per epoch (``epochs`` = steps, 300), ``lr`` 3e-3,
        ``weight_decay`` 1e-2; chosen once on Tux Paint relevance at 50-400 random labels.
    """

    name = "probe"
    train_defaults = PROBE_TRAIN

    def __init__(self, n_classes: int = 4, seed: int = 0, *, head: str = "hsoftmax", w: float = 1.0, hidden: int = 64,
                 dropout: float = 0.1, visual: bool = False, train: dict | None = None):
        train = dict(train or {})
        TrainConfig.from_dict({**PROBE_TRAIN, **train})  # validate early
        super().__init__(n_classes=4, seed=seed, head=check_head(head), w=float(w), hidden=int(hidden),
                         dropout=float(dropout), visual=bool(visual), train=train)
        self.net: _ProbeNet | None = None
        self.mu = self.sd = None

    def fit(self, data, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        y = self._check_fit(data, labels, train_idx)
        p = self.params
        t0 = time.perf_counter()
        x = probe_inputs(data, train_idx, p["visual"])
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        xt = torch.from_numpy((x - self.mu) / self.sd)
        yt = torch.from_numpy(y.astype(np.int64))
        rows = np.arange(len(y))
        # full-batch AdamW: one step per "epoch" of the shared loop
        tc = TrainConfig.from_dict({**PROBE_TRAIN, **p["train"], "batch_size": max(1, len(y)), "seed": self.seed})
        with torch_threads(tc.threads), seeded(self.seed):
            self.net = _ProbeNet(x.shape[1], p["hidden"], p["head"], p["w"], p["dropout"])

            def batch_loss(bi):
                return self.net.head.loss(self.net(xt)[1], yt)  # the batch is every row: order is irrelevant

            hist = train_epochs({"net": self.net}, [{"params": list(self.net.parameters())}], rows, batch_loss, tc,
                                progress=progress, desc="train relevance probe")
        self.net.eval()
        return {"loss": hist["epochs"][-1]["train_loss"], "seconds": time.perf_counter() - t0, "n_train": int(len(y)),
                "best_epoch": None}

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
    config : :class:`~mmal.models.hcmrm.RelevanceConfig` fields of a fresh model (default: the
        CPU-sized :data:`WORKSPACE_MODEL`; ignored when starting from a pre-training).
    train : :class:`~mmal.train.config.TrainConfig` overrides of fine-tuning over
        :data:`mmal.train.hcmrm.FINETUNE_TRAIN` (4 epochs, batch 32, lr 3e-4).

    cosine_start : start from the untrained cosine (default True): the head's output is a
        residual on ``prior_scale · (cos(q, t) − mean)`` with the residual zero at the start,
        so before fine-tuning the model ranks the pairs exactly as the frozen MiniLM cosine
        does (:class:`~mmal.models.hsoftmax.RelevanceHead`); False: the plain head of 003.
    prior_scale : starting weight of the cosine prior (4.0; learned).

    A stored HCMRM pre-training is handed over by :meth:`init_from_pretraining`.
    """

    name = "hcmrm"
    pretraining = "hcmrm"
    train_defaults = FINETUNE_TRAIN

    def __init__(self, n_classes: int = 4, seed: int = 0, *, head: str = "hsoftmax", w: float = 1.0,
                 config: dict | None = None, train: dict | None = None, cosine_start: bool = True,
                 prior_scale: float = 4.0):
        train = dict(train or {})
        TrainConfig.from_dict({**FINETUNE_TRAIN, **train})  # validate early
        if not float(prior_scale) > 0:
            raise ConfigError(f"hcmrm learner: prior_scale = {prior_scale}: expected > 0")
        super().__init__(n_classes=4, seed=seed, head=check_head(head), w=float(w),
                         config=dict(WORKSPACE_MODEL if config is None else config), train=train,
                         cosine_start=bool(cosine_start), prior_scale=float(prior_scale))
        self.model = None
        self.head = None
        self.center = 0.0  # the training pairs' mean cosine, subtracted from the prior
        self.pretrained = None  # (config dict, state_dict) set by the caller before fit

    def init_from_pretraining(self, pretrained) -> None:
        """Start fine-tuning from a stored HCMRM pre-training: ``(config dict, state_dict)``."""
        self.pretrained = pretrained

    def fit(self, data, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        from mmal.models.hcmrm import RelevanceConfig, RelevanceModel
        from mmal.train.hcmrm import finetune_hcmrm

        self._check_fit(data, labels, train_idx)
        p = self.params
        t0 = time.perf_counter()
        model = None
        if self.pretrained is not None:
            cfg, sd = self.pretrained
            model = RelevanceModel(RelevanceConfig(**cfg).check())
            model.load_state_dict(sd)
            p["config"] = dict(cfg)
        cfg = None if model is not None else RelevanceConfig(**p["config"]).check()
        prior = None
        if p["cosine_start"]:
            cos = pair_cosine(data, np.arange(len(data.labels)))
            self.center = float(cos[np.asarray(train_idx)].mean())
            prior = cos - self.center
        res = finetune_hcmrm(data, labels, np.asarray(train_idx), model, config=cfg, head=p["head"], w=p["w"],
                             train=p["train"], seed=self.seed, progress=progress, prior=prior,
                             prior_scale=p["prior_scale"])
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
        from mmal.models.hcmrm_pretrain import score_pairs

        self._no_extras(coalitions)
        if self.model is None:
            raise ConfigError("the hcmrm learner is not fitted")
        idx = _all(data, idx)
        prior = pair_cosine(data, idx) - self.center if self.params["cosine_start"] else None
        scores, probs, emb = score_pairs(self.model, self.head, data, [data.query_text[i] for i in idx],
                                         data.video_index[idx], return_embedding=True, prior=prior)
        return self._pack(probs, emb.astype(np.float32), scores)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "head": self.head.state_dict(), "center": float(self.center)}

    def load_state(self, state) -> None:
        from mmal.models.hcmrm import RelevanceConfig, RelevanceModel

        self.model = RelevanceModel(RelevanceConfig(**self.params["config"]).check())
        self.model.load_state_dict(state["model"])
        self.head = RelevanceHead(self.params["head"], self.model.cfg.dim, w=self.params["w"],
                                  prior_scale=self.params["prior_scale"] if self.params["cosine_start"] else None)
        self.head.load_state_dict(state["head"])
        self.center = float(state.get("center", 0.0))



def _fit_exceedance(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per threshold k = 0, 1, 2: ``(a_k >= 0, b_k)`` of ``P(y > k | s) = sigmoid(a_k s + b_k)`` (1-D logistic fits)."""
    from sklearn.linear_model import LogisticRegression

    out = np.zeros((3, 2))
    for k in range(3):
        t = (y > k).astype(int)
        if t.min() == t.max():  # one side only: a constant rate, smoothed towards 1/2
            out[k] = (0.0, float(np.log((t.sum() + 0.5) / (len(t) - t.sum() + 0.5))))
            continue
        lr = LogisticRegression(C=100.0, max_iter=1000).fit(s[:, None], t)
        a = max(0.0, float(lr.coef_[0, 0]))  # a monotone map: a larger cosine never lowers the level
        b = float(lr.intercept_[0]) if a > 0 else float(np.log(t.mean() / (1 - t.mean())))
        out[k] = (a, b)
    return out


def exceedance_probs(s: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Four-level distribution from the exceedance curves, made monotone (``P(y>0) >= P(y>1) >= P(y>2)``)."""
    ex = 1.0 / (1.0 + np.exp(-(s[:, None] * ab[None, :, 0] + ab[None, :, 1])))  # [N, 3]
    ex = np.minimum.accumulate(ex, axis=1)
    p = np.concatenate([1 - ex[:, :1], ex[:, :-1] - ex[:, 1:], ex[:, -1:]], 1)
    return np.clip(p, 0.0, 1.0)


class CosineRelevance(RelevanceLearner):
    """``cosine``: the untrained bi-encoder baseline of relevance, as a learner.

    The score is ``cos(q, t)`` of the frozen MiniLM query vector and the video's keyword-text
    vector (:func:`pair_cosine`); nothing about the ranking is trained. ``fit`` only
    calibrates the four-level distribution that uncertainty strategies read: per threshold
    ``k`` a 1-D logistic ``P(y > k | cos)`` with a non-negative slope (so ``E[y]`` never
    falls as the cosine rises). ``embedding`` = ``q * t`` (what LSB and Core-Set search).
    """

    name = "cosine"

    def __init__(self, n_classes: int = 4, seed: int = 0):
        super().__init__(n_classes=4, seed=seed)
        self.ab = None

    def fit(self, data, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        y = self._check_fit(data, labels, train_idx)
        t0 = time.perf_counter()
        self.ab = _fit_exceedance(pair_cosine(data, train_idx), y)
        return {"seconds": time.perf_counter() - t0, "n_train": int(len(y)), "best_epoch": None}

    def score(self, data, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        self._no_extras(coalitions)
        if self.ab is None:
            raise ConfigError("the cosine learner is not fitted (its level calibration needs labels)")
        idx = _all(data, idx)
        s = pair_cosine(data, idx)
        q = query_vectors(data)[idx]
        t = data.text_pooled[data.video_index[idx]].astype(np.float32)
        return self._pack(exceedance_probs(s, self.ab), (q * t).astype(np.float32), s)

    def state(self) -> dict:
        return {"ab": torch.from_numpy(np.asarray(self.ab, np.float64))}

    def load_state(self, state) -> None:
        self.ab = state["ab"].numpy()


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _auc_relevant(a, y) -> float:
    """ROC AUC of scores ``a`` for "relevant" (level >= 2, as the task's AUC reads it); NaN with one class."""
    from sklearn.metrics import roc_auc_score

    t = np.asarray(y) >= 2
    return float(roc_auc_score(t, a)) if 0 < t.sum() < len(t) else float("nan")


#: held-out criteria auto-relevance can require: the task's Spearman and its AUC of "relevant"
RELEVANCE_CRITERIA = {"spearman": _spearman, "auc": _auc_relevant}


def query_bootstrap_p_better(a: np.ndarray, b: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int,
                             seed: int = 0, metric: str = "spearman") -> float:
    """Share of ``n_boot`` bootstrap resamples of the queries (all of a drawn query's pairs, drawn
    with replacement) in which scores ``a`` have a higher ``metric`` (:data:`RELEVANCE_CRITERIA`)
    against ``y`` than scores ``b``."""
    fn = RELEVANCE_CRITERIA[metric]
    uq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uq))]
    rng = np.random.default_rng([seed, 11])
    wins = 0
    for _ in range(int(n_boot)):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(uq), len(uq))])
        sa, sb = fn(a[rows], y[rows]), fn(b[rows], y[rows])
        wins += bool(np.isfinite(sa) and (not np.isfinite(sb) or sa > sb))
    return wins / int(n_boot)


class AutoRelevance(RelevanceLearner):
    """``auto-relevance``: the ``probe`` only where it beats the ``cosine`` on held-out folds.

    ``cv_folds``-fold cross-validation on the fit's own labeled pairs, grouped by query (a
    query's pairs stay in one fold: a new query is what the model meets at test time). The
    criteria (``criteria``) are the task's two headline metrics, Spearman between the
    out-of-fold scores and the levels and the AUC of "relevant" (level >= 2); the probe is
    chosen only when, on **each** criterion, its pooled out-of-fold value is above the
    cosine's by more than ``margin`` (0) **and** above the cosine's in at least
    ``confidence`` (0.9) of ``n_boot`` (200) bootstrap resamples of the held-out queries
    (each resample draws queries with replacement, with all their pairs), so a learner
    worse than the cosine on held-out folds by either metric is never the default and a
    noisy win on a few queries does not replace it. Fewer than ``cv_folds`` queries with
    labels: the cosine.
    The record is ``history["auto"]`` and ``state()["cv"]``.
    """

    name = "auto-relevance"
    train_defaults = PROBE_TRAIN

    def __init__(self, n_classes: int = 4, seed: int = 0, *, cv_folds: int = 3, margin: float = 0.0,
                 confidence: float = 0.9, n_boot: int = 200, head: str = "hsoftmax", train: dict | None = None,
                 criteria=("spearman", "auc")):
        crits = [str(c) for c in (criteria or ())]
        if not crits or set(crits) - set(RELEVANCE_CRITERIA):
            raise ConfigError(f"relevance auto learner: criteria = {list(criteria or ())}: expected a non-empty subset "
                              f"of {list(RELEVANCE_CRITERIA)}")
        if int(cv_folds) < 2:
            raise ConfigError(f"relevance auto learner: cv_folds = {cv_folds}: expected >= 2")
        if not 0.5 <= float(confidence) < 1.0 or int(n_boot) < 10:
            raise ConfigError(f"relevance auto learner: confidence = {confidence}, n_boot = {n_boot}: expected "
                              "0.5 <= confidence < 1 and n_boot >= 10")
        super().__init__(n_classes=4, seed=seed, cv_folds=int(cv_folds), margin=float(margin),
                         confidence=float(confidence), n_boot=int(n_boot), head=check_head(head),
                         train=dict(train or {}), criteria=crits)
        self.inner = None
        self.cv: dict = {}

    def _candidates(self):
        return {"cosine": lambda: CosineRelevance(seed=self.seed),
                "probe": lambda: RelevanceProbe(seed=self.seed, head=self.params["head"], train=self.params["train"])}

    def fit(self, data, labels, train_idx, val_idx=None, *, progress: bool = False, log=None) -> dict:
        y = self._check_fit(data, labels, train_idx)
        rows = np.asarray(train_idx)
        k = self.params["cv_folds"]
        groups = np.asarray(data.query_ids)[rows]
        uq = np.unique(groups)
        scores: dict = {}
        p_better: dict | None = None
        crits = self.params.get("criteria", ["spearman"])
        if len(uq) >= k and len(np.unique(y)) > 1:
            perm = np.random.default_rng(self.seed).permutation(len(uq))
            fold_of = {q: int(i % k) for i, q in zip(range(len(uq)), uq[perm])}
            fold = np.array([fold_of[q] for q in groups])
            oofs = {}
            for name, make in self._candidates().items():
                oof = np.zeros(len(rows))
                for f in range(k):
                    tr, te = rows[fold != f], fold == f
                    m = make()
                    m.fit(data, labels, tr)
                    oof[te] = m.score(data, rows[te])["scores"]
                oofs[name] = oof
                scores[name] = {c: RELEVANCE_CRITERIA[c](oof, y) for c in crits}
            p_better = {c: query_bootstrap_p_better(oofs["probe"], oofs["cosine"], y, groups, self.params["n_boot"],
                                                    seed=self.seed, metric=c) for c in crits}

            def beats(c):
                sp, sc = scores["probe"][c], scores["cosine"][c]
                return bool(np.isfinite(sp) and (not np.isfinite(sc) or (
                    sp > sc + self.params["margin"] and p_better[c] >= self.params["confidence"])))

            better = all(beats(c) for c in crits)
            chosen, reason = ("probe" if better else "cosine"), (
                f"held-out {' and '.join(crits)} of {k} query-grouped folds; the probe only where it beats the cosine "
                f"on each in >= {self.params['confidence']:.0%} of {self.params['n_boot']} query bootstrap resamples")
        else:
            chosen, reason = "cosine", f"fewer than {k} labeled queries: no cross-validation, the cosine"
        self.inner = self._candidates()[chosen]()
        hist = dict(self.inner.fit(data, labels, rows, progress=progress, log=log))
        self.cv = {"chosen": chosen, "scores": scores, "criteria": list(crits), "folds": k, "reason": reason,
                   "p_better_than_cosine": p_better}
        hist["auto"] = self.cv
        if log is not None:
            log(f"auto: {chosen} ({reason}; " + ", ".join(
                f"{a}: " + "/".join(f"{c} {v:.3f}" for c, v in b.items()) for a, b in scores.items()) + ")")
        return hist

    def score(self, data, idx=None, *, coalitions=False, progress: bool = False) -> dict:
        if self.inner is None:
            raise ConfigError("the relevance auto learner is not fitted")
        return self.inner.score(data, idx, coalitions=coalitions, progress=progress)

    def state(self) -> dict:
        return {"chosen": self.cv["chosen"], "inner": self.inner.state(),
                "cv": {"chosen": self.cv["chosen"],
                       "scores": {k: {c: float(x) for c, x in v.items()} for k, v in self.cv["scores"].items()},
                       "reason": self.cv["reason"]}}

    def load_state(self, state) -> None:
        self.inner = self._candidates()[state["chosen"]]()
        self.inner.load_state(state["inner"])
        self.cv = dict(state["cv"])
