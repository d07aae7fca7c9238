"""Train / evaluate / filter a small captioner with visual-dependence re-weighting (002 ch. 5).

The imperative shell around :mod:`mmal.models.token_reweighting` (equations) and
:mod:`mmal.models.captioner` (model): reading a ``tuxpaint-scenes`` folder, caching the
frozen image tower's patch features of the clean and the noised images, the training
losses (MLE, selective EOS, eq. 5.5 re-weighting from a start fraction), CHAIR
evaluation (greedy or VCD decoding), the per-token analyses (Fig. 5.2 / 5.5 analogs) and
the data filter (§5.4.5).
"""

from __future__ import annotations

import dataclasses

import json
import math
import os
import pathlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mmal.data.datasets.tuxpaint_scenes import META_FILE
from mmal.errors import ConfigError
from mmal.metrics.chair import chair
from mmal.models.captioner import Captioner, CaptionerConfig, Vocab, decode
from mmal.models.token_reweighting import (caption_nll, dependence_groups, q_sample, selective_eos_nll,
                                           target_logprobs, token_weights, visual_dependence)
from mmal.select.visual_dependence_filter import filter_by_visual_dependence, sequence_dependence
from mmal.train.config import TrainConfig
from mmal.train.engine import seeded, train_epochs

LOSSES = ("mle", "eos", "w-pos", "w-neg")
DECODES = ("greedy", "vcd")
ITEMS = "items.parquet"


# ----------------------------------------------------------------------------------------- data
@dataclass
class SceneSet:
    """A ``tuxpaint-scenes`` folder read into memory (no features)."""

    dir: pathlib.Path
    ids: list[str]
    split: np.ndarray  # [N] "train" / "test"
    captions: list[str]
    objects: list[list[str]]
    images: list[pathlib.Path]
    meta: dict
    vocab: Vocab = field(repr=False, default=None)

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    @property
    def object_words(self) -> list[str]:
        return list(self.meta["objects"])


def load_scenes(data_dir) -> SceneSet:
    """Read ``DATA/items.parquet`` + ``DATA/scenes_meta.json``; errors name the file and field."""
    import pyarrow.parquet as pq

    d = pathlib.Path(data_dir)
    items, meta_path = d / ITEMS, d / META_FILE
    if not d.is_dir():
        raise ConfigError(f"{d}: no such folder; build one with `mmal dataset tuxpaint-scenes {d}`")
    for p in (items, meta_path):
        if not p.is_file():
            raise ConfigError(f"{p}: file not found; build the folder with `mmal dataset tuxpaint-scenes {d}`")
    try:
        t = pq.read_table(items).to_pydict()
    except Exception as e:  # a truncated or non-parquet file
        raise ConfigError(f"{items}: not a readable Parquet file ({type(e).__name__})") from None
    for col in ("id", "split", "image", "text", "objects"):
        if col not in t:
            raise ConfigError(f"{items}: column '{col}' is missing (expected a tuxpaint-scenes items file)")
    try:
        meta = json.loads(meta_path.read_text())
        meta["objects"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{meta_path}: field 'objects' missing or the file is not JSON") from None
    split = np.asarray(t["split"], dtype=object)
    if not (split == "train").any():
        raise ConfigError(f"{items}: column 'split' has no 'train' rows")
    s = SceneSet(dir=d, ids=list(t["id"]), split=split, captions=list(t["text"]),
                 objects=[json.loads(o) for o in t["objects"]], images=[d / p for p in t["image"]], meta=meta)
    s.vocab = Vocab.from_captions([c for c, sp in zip(s.captions, split) if sp == "train"])
    return s


def token_arrays(scenes: SceneSet, idx: np.ndarray, max_len: int) -> dict:
    """Teacher-forcing arrays for items ``idx``: ``inp`` (BOS + words) / ``tgt`` (words + EOS) /
    ``mask`` / ``eos`` ``[n, L]`` with ``L = max_len`` (captions longer than it are cut)."""
    v = scenes.vocab
    n = len(idx)
    inp = np.full((n, max_len), v.pad, np.int64)
    tgt = np.full((n, max_len), v.pad, np.int64)
    for r, i in enumerate(idx):
        ids = v.encode(scenes.captions[i])[:max_len]
        tgt[r, :len(ids)] = ids
        inp[r, 0] = v.bos
        inp[r, 1:len(ids)] = ids[:-1]
    mask = tgt != v.pad
    return {"inp": torch.from_numpy(inp), "tgt": torch.from_numpy(tgt), "mask": torch.from_numpy(mask),
            "eos": torch.from_numpy(tgt == v.eos)}


# ----------------------------------------------------------------------------------------- features
def feature_path(scenes: SceneSet, split: str, noise_step: int, *, input_size: int = 128, noise_seed: int = 0) -> pathlib.Path:
    """Cache file of the patch features of ``split`` at ``noise_step`` (0 = clean)."""
    tag = "clean" if noise_step == 0 else f"t{noise_step}-seed{noise_seed}"
    return scenes.dir / "features" / f"efficientnet-lite0-s{input_size}" / f"{split}-{tag}.npy"


def scene_features(scenes: SceneSet, split: str, noise_step: int = 0, *, input_size: int = 128, noise_seed: int = 0,
                   batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Frozen EfficientNet-Lite0 patch grid ``[n, (S/32)^2, 1280]`` (float16) of ``split``'s images.

    ``noise_step > 0``: the image is first noised in closed form ``q(x_t | x_0)``
    (:func:`~mmal.models.token_reweighting.q_sample`, VCD's schedule) on the tower's
    normalised ``[-1, 1]`` pixels. The noise of item ``i`` is drawn from
    ``numpy.random.default_rng([noise_seed, i])``: the same ``eps`` at every noise step, so
    the noise-step ablation changes only the scale. Cached under ``DATA/features/`` (written
    atomically) and read back on the next call.
    """
    path = feature_path(scenes, split, noise_step, input_size=input_size, noise_seed=noise_seed)
    if path.is_file():
        return np.load(path, mmap_mode="r")
    from mmal.encoders.image import EfficientNetLite0Encoder
    from mmal.utils import progress_bar

    enc = EfficientNetLite0Encoder(input_size=input_size, resize="squash")
    idx = scenes.index(split)
    out = None
    with progress_bar(progress, unit="images") as bar:
        task = bar.add_task(f"features {split} t={noise_step}", total=len(idx))
        for s in range(0, len(idx), batch_size):
            batch = []
            for i in idx[s:s + batch_size]:
                x = enc._prepare(scenes.images[i], int(i))  # [3, S, S] in [-1, 1]
                if noise_step > 0:
                    eps = np.random.default_rng([noise_seed, int(i)]).standard_normal(x.shape).astype(np.float32)
                    x = q_sample(torch.from_numpy(x), noise_step, torch.from_numpy(eps)).numpy()
                batch.append(x.astype(np.float32))
            _, seqs = enc._forward(batch)
            f = np.stack(seqs).astype(np.float16)  # [b, P, 1280]
            if out is None:
                out = np.zeros((len(idx),) + f.shape[1:], np.float16)
            out[s:s + len(f)] = f
            bar.advance(task, len(f))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


# ----------------------------------------------------------------------------------------- training
#: the captioner-size fields a training recipe sets, with CaptionerConfig's defaults (stated there once)
_SIZE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CaptionerConfig)
                  if f.name not in ("vocab_size", "feat_dim", "n_patches")}


@dataclass
class CaptionTrainConfig:
    """How :func:`train_captioner` trains (002 ch. 5 defaults where the thesis gives one).

    loss : ``"mle"``, ``"eos"`` (selective EOS supervision), ``"w-pos"`` (eq. 5.4 + 5.5) or
        ``"w-neg"`` (eq. 5.3 + 5.5).
    tau : softmax temperature of eq. 5.5 (thesis 0.5).
    start_frac : share of the optimiser steps trained with plain MLE before re-weighting
        starts (thesis 0.5 = after half of training).
    noise_step : diffusion step of ``v*`` for d(y_t) during training (thesis 900).
    eos_floor, eos_floor_mode : see :func:`~mmal.models.token_reweighting.token_weights`.
    epochs, batch_size, lr, weight_decay, grad_clip : the training loop's (not from the
        thesis, which fine-tunes an LVLM with LoRA; sized for a CPU core).
    d_model, n_layers, n_heads, ff_dim, dropout, max_len : captioner size.
    """

    loss: str = "mle"
    tau: float = 0.5
    start_frac: float = 0.5
    noise_step: int = 900
    eos_floor: float = 1.0
    eos_floor_mode: str = "renormalise"
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    d_model: int = _SIZE_DEFAULTS["d_model"]
    n_layers: int = _SIZE_DEFAULTS["n_layers"]
    n_heads: int = _SIZE_DEFAULTS["n_heads"]
    ff_dim: int = _SIZE_DEFAULTS["ff_dim"]
    dropout: float = _SIZE_DEFAULTS["dropout"]
    max_len: int = _SIZE_DEFAULTS["max_len"]

    def __post_init__(self):
        checks = [
            (self.loss in LOSSES, f"loss = {self.loss!r}: expected one of {', '.join(LOSSES)}"),
            (self.tau >= 0, f"tau = {self.tau}: expected >= 0"),
            (0.0 <= self.start_frac < 1.0, f"start_frac = {self.start_frac}: expected 0 <= start_frac < 1"),
            (0 < self.noise_step < 1000, f"noise_step = {self.noise_step}: expected 0 < noise_step < 1000"),
            (self.epochs >= 1, f"epochs = {self.epochs}: expected >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError("caption train: " + msg)

    def to_dict(self) -> dict:
        return asdict(self)


def dependence_of(model: Captioner, feats: torch.Tensor, noisy: torch.Tensor, inp: torch.Tensor,
                  tgt: torch.Tensor) -> torch.Tensor:
    """Eq. 5.1 for every target token by teacher forcing, in eval mode without gradients:
    ``[B, L]`` from clean/noisy features ``[B, P, F]`` and tokens ``[B, L]``."""
    was = model.training
    model.eval()
    with torch.no_grad():
        p_c = target_logprobs(model(feats, inp), tgt).exp()
        p_n = target_logprobs(model(noisy, inp), tgt).exp()
    model.train(was)
    return visual_dependence(p_c, p_n)


def train_captioner(scenes: SceneSet, cfg: CaptionTrainConfig, *, seed: int = 0, train_idx=None,
                    progress: bool = False, log=None) -> tuple[Captioner, dict]:
    """Train a captioner on the ``train`` scenes (or ``train_idx``, positions among them).

    Uses :func:`mmal.train.engine.train_epochs` (AdamW, seeded shuffling) with weight init
    and dropout seeded by ``seed``. For ``w-pos`` / ``w-neg`` the first
    ``ceil(start_frac * total_steps)`` optimiser steps are plain MLE; afterwards every
    batch computes d(y_t) on the fly (eval mode, no grad) from the clean and the
    ``noise_step``-noised features and weights the loss by eq. 5.5.

    Returns ``(model, history)``; history has the loop's record plus ``seconds`` and
    ``reweight_start_step``.
    """
    tr = scenes.index("train")
    sel = np.arange(len(tr)) if train_idx is None else np.asarray(train_idx, np.int64)
    feats = torch.from_numpy(np.array(scene_features(scenes, "train", 0, progress=progress)))
    noisy = None
    if cfg.loss in ("w-pos", "w-neg"):
        noisy = torch.from_numpy(np.array(scene_features(scenes, "train", cfg.noise_step, progress=progress)))
    toks = token_arrays(scenes, tr, cfg.max_len)
    mcfg = CaptionerConfig(vocab_size=len(scenes.vocab), feat_dim=feats.shape[2], n_patches=feats.shape[1],
                           **{k: getattr(cfg, k) for k in _SIZE_DEFAULTS})
    tc = TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     patience=None, seed=seed, grad_clip=cfg.grad_clip)
    total_steps = cfg.epochs * math.ceil(len(sel) / cfg.batch_size)
    start = math.ceil(cfg.start_frac * total_steps)
    state = {"step": 0}
    eos_id = scenes.vocab.eos

    with seeded(seed):
        model = Captioner(mcfg)

        def batch_loss(bi: np.ndarray) -> torch.Tensor:
            b = torch.from_numpy(bi)
            f = feats[b].float()
            Lb = int(toks["mask"][b].sum(1).max())  # trim the batch to its longest caption
            inp, tgt, mask = toks["inp"][b, :Lb], toks["tgt"][b, :Lb], toks["mask"][b, :Lb]
            weights = None
            if noisy is not None and state["step"] >= start:
                d = dependence_of(model, f, noisy[b].float(), inp, tgt)
                weights = token_weights(d, mask, toks["eos"][b, :Lb], kind=cfg.loss, tau=cfg.tau,
                                        eos_floor=cfg.eos_floor, eos_floor_mode=cfg.eos_floor_mode)
            state["step"] += 1
            logits = model(f, inp)
            if cfg.loss == "eos":
                return selective_eos_nll(logits, tgt, mask, eos_id)
            return caption_nll(logits, tgt, mask.float(), weights)

        t0 = time.perf_counter()
        hist = train_epochs({"captioner": model}, [{"params": list(model.parameters())}], sel, batch_loss, tc,
                            progress=progress, desc=f"caption {cfg.loss}", log=log)
    hist["seconds"] = time.perf_counter() - t0
    hist["reweight_start_step"] = start if noisy is not None else None
    hist["total_steps"] = total_steps
    model.eval()
    return model, hist


# ----------------------------------------------------------------------------------------- evaluation
def generate(model: Captioner, scenes: SceneSet, split: str = "test", *, method: str = "greedy",
             vcd_noise_step: int = 500, vcd_alpha: float = 1.0, vcd_beta: float = 0.1,
             batch_size: int = 250, progress: bool = False) -> list[list[int]]:
    """Decoded token ids (without EOS) for every ``split`` scene; ``progress``: one bar for
    the decoding (and one per feature cache it has to fill first)."""
    from mmal.utils import progress_bar

    if method not in DECODES:
        raise ConfigError(f"--decode {method!r}: expected one of {', '.join(DECODES)}")
    feats = scene_features(scenes, split, 0, progress=progress)
    noisy = scene_features(scenes, split, vcd_noise_step, progress=progress) if method == "vcd" else None
    v = scenes.vocab
    out = []
    with progress_bar(progress, unit="captions") as bar:
        task = bar.add_task(f"decode {method} {split}", total=len(feats))
        for s in range(0, len(feats), batch_size):
            f = torch.from_numpy(np.asarray(feats[s:s + batch_size], np.float32))
            nf = None if noisy is None else torch.from_numpy(np.asarray(noisy[s:s + batch_size], np.float32))
            ids = decode(model, f, bos=v.bos, eos=v.eos, method=method, noisy_feats=nf, vcd_alpha=vcd_alpha,
                         vcd_beta=vcd_beta)
            for row in ids.tolist():
                out.append(row[:row.index(v.eos)] if v.eos in row else row)
            bar.advance(task, len(f))
    return out


def evaluate_captioner(model: Captioner, scenes: SceneSet, split: str = "test", *, method: str = "greedy",
                       vcd_noise_step: int = 500, vcd_alpha: float = 1.0, vcd_beta: float = 0.1,
                       progress: bool = False) -> dict:
    """CHAIR_S, CHAIR_I, recall, length (:func:`mmal.metrics.chair.chair`) of decoded captions,
    plus ``captions`` (words)."""
    ids = generate(model, scenes, split, method=method, vcd_noise_step=vcd_noise_step, vcd_alpha=vcd_alpha,
                   vcd_beta=vcd_beta, progress=progress)
    words = [scenes.vocab.decode(r) for r in ids]
    gt = [scenes.objects[i] for i in scenes.index(split)]
    m = chair(words, gt, scenes.object_words)
    m["captions"] = [" ".join(w) for w in words]
    return m


def language_prior_caption(scenes: SceneSet) -> list[str]:
    """The caption a language prior alone would write: the ``k`` most frequent training objects,
    ``k`` = the rounded mean object count of a training scene (ties broken by name)."""
    tr = scenes.index("train")
    cnt = Counter(o for i in tr for o in scenes.objects[i])
    k = max(1, round(float(np.mean([len(scenes.objects[i]) for i in tr]))))
    top = sorted(cnt, key=lambda o: (-cnt[o], o))[:k]
    return " and ".join(f"a small {o} in the middle" for o in top).split()


def evaluate_language_prior(scenes: SceneSet, split: str = "test") -> dict:
    """CHAIR metrics of :func:`language_prior_caption` written for every ``split`` image."""
    cap = language_prior_caption(scenes)
    idx = scenes.index(split)
    m = chair([cap] * len(idx), [scenes.objects[i] for i in idx], scenes.object_words)
    m["caption"] = " ".join(cap)
    return m


def dependence_analysis(model: Captioner, scenes: SceneSet, captions_ids: list[list[int]], split: str = "test", *,
                        noise_step: int = 900, positive: float = 0.25, negative: float = -0.25,
                        window: int = 3) -> dict:
    """Fig. 5.2 and Fig. 5.5 analogs over generated captions.

    d(y_t) of every generated token by teacher forcing on the model's own caption, clean
    vs ``noise_step``-noised image (eq. 5.1). Returns counts of grounded / hallucinated
    object tokens per group (``negative``, ``invariant``, ``positive``), the share of
    hallucinated object tokens with an image-invariant / image-positive token within
    ``window`` tokens (the token itself excluded), and the group shares of all tokens.
    """
    idx = scenes.index(split)
    feats = torch.from_numpy(np.asarray(scene_features(scenes, split, 0), np.float32))
    noisy = torch.from_numpy(np.asarray(scene_features(scenes, split, noise_step), np.float32))
    v = scenes.vocab
    L = model.cfg.max_len
    n = len(captions_ids)
    inp = torch.full((n, L), v.pad, dtype=torch.long)
    tgt = torch.full((n, L), v.pad, dtype=torch.long)
    for r, ids in enumerate(captions_ids):
        seq = (list(ids) + [v.eos])[:L]
        tgt[r, :len(seq)] = torch.tensor(seq)
        inp[r, 0] = v.bos
        inp[r, 1:len(seq)] = torch.tensor(seq[:-1], dtype=torch.long)
    mask = tgt != v.pad
    d = torch.cat([dependence_of(model, feats[s:s + 250], noisy[s:s + 250], inp[s:s + 250], tgt[s:s + 250])
                   for s in range(0, n, 250)])
    g = dependence_groups(d, positive, negative)
    names = {-1: "negative", 0: "invariant", 1: "positive"}
    obj_ids = {v.stoi[w]: w for w in scenes.object_words if w in v.stoi}
    counts = {k: {"grounded": 0, "hallucinated": 0} for k in names.values()}
    near_inv = near_pos = n_hal = 0
    tokens = Counter()
    for r in range(n):
        T = int(mask[r].sum())
        gt = set(scenes.objects[idx[r]])
        gr = g[r, :T].tolist()
        tokens.update(names[x] for x in gr)
        for t in range(T):
            w = obj_ids.get(int(tgt[r, t]))
            if w is None:
                continue
            hal = w not in gt
            counts[names[gr[t]]]["hallucinated" if hal else "grounded"] += 1
            if hal:
                n_hal += 1
                near = [gr[j] for j in range(max(0, t - window), min(T, t + window + 1)) if j != t]
                near_inv += 0 in near
                near_pos += 1 in near
    total = sum(tokens.values())
    return {"objects_by_group": counts, "hallucinated_objects": n_hal,
            "near_invariant": near_inv / n_hal if n_hal else float("nan"),
            "near_positive": near_pos / n_hal if n_hal else float("nan"),
            "token_share": {k: tokens[k] / total for k in names.values()} if total else {},
            "noise_step": noise_step, "window": window}


def score_training_pairs(model: Captioner, scenes: SceneSet, *, noise_step: int = 900,
                         progress: bool = False) -> np.ndarray:
    """``sum_t d(y_t)`` of every train pair under ``model`` (002 §5.4.5), ``[n_train]``;
    ``progress``: one bar for the scoring (and one per feature cache it has to fill first)."""
    from mmal.utils import progress_bar

    tr = scenes.index("train")
    feats = scene_features(scenes, "train", 0, progress=progress)
    noisy = scene_features(scenes, "train", noise_step, progress=progress)
    toks = token_arrays(scenes, tr, model.cfg.max_len)
    out = []
    with progress_bar(progress, unit="pairs") as bar:
        task = bar.add_task(f"score train pairs t={noise_step}", total=len(tr))
        for s in range(0, len(tr), 250):
            sl = slice(s, s + 250)
            d = dependence_of(model, torch.from_numpy(np.asarray(feats[sl], np.float32)),
                              torch.from_numpy(np.asarray(noisy[sl], np.float32)), toks["inp"][sl], toks["tgt"][sl])
            out.append(sequence_dependence(d.numpy(), toks["mask"][sl].numpy()))  # [b]
            bar.advance(task, len(out[-1]))
    return np.concatenate(out)


def filter_training_pairs(model: Captioner, scenes: SceneSet, rule: str, fraction: float, *, seed: int = 0,
                          noise_step: int = 900, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(kept positions among the train scenes, scores)`` of the §5.4.5 filter."""
    scores = score_training_pairs(model, scenes, noise_step=noise_step, progress=progress)
    keep = filter_by_visual_dependence(scores, rule, fraction, rng=np.random.default_rng(seed))
    return keep, scores


# ----------------------------------------------------------------------------------------- checkpoints
def save_captioner(path, model: Captioner, scenes: SceneSet, cfg: CaptionTrainConfig, history: dict) -> pathlib.Path:
    """Write the weights, config and vocabulary to ``path`` (a ``torch.save`` dict of plain types)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.cfg.to_dict(), "train": cfg.to_dict(), "vocab": scenes.vocab.itos,
                "state": model.state_dict(), "seconds": float(history.get("seconds", float("nan")))}, path)
    return path


def load_captioner(path, scenes: SceneSet | None = None) -> Captioner:
    """Read a :func:`save_captioner` file; with ``scenes`` the vocabularies must agree."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found (train one with `mmal caption train DATA --out {path}`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = Captioner(CaptionerConfig(**blob["model"]))
        model.load_state_dict(blob["state"])
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{path}: not a captioner file written by `mmal caption train` ({type(e).__name__})") from None
    if scenes is not None and list(blob["vocab"]) != scenes.vocab.itos:
        raise ConfigError(f"{path}: field 'vocab' does not match the captions of {scenes.dir}")
    return model.eval()


__all__ = ["LOSSES", "DECODES", "SceneSet", "load_scenes", "scene_features", "CaptionTrainConfig", "train_captioner",
           "evaluate_captioner", "generate", "language_prior_caption", "evaluate_language_prior", "dependence_analysis",
           "score_training_pairs", "filter_training_pairs", "save_captioner", "load_captioner", "dependence_of",
           "token_arrays"]
