"""Inputs of the HCMRM relevance models (003): video keyword text, frozen MiniLM states, frozen visual tokens.

:func:`prepare_relevance` reads a relevance items file once and returns a
:class:`RelevanceData` with everything the models train on:

- per video (rows grouped by ``video_id``; without that column, by the media path):
  keywords (003 Alg. 1 over ``fields`` with weights ``alpha``), frozen MiniLM states of the
  keyword sequence, frozen EfficientNet patch tokens of J frames (``[J * grid^2, 1280]``)
  and the pooled visual embedding ``[1280]`` (mean of the frames' pooled vectors);
- per pair: query (with its own frozen MiniLM states), video index, level (-1 = unlabeled),
  split, query id.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch

from mmal.errors import ConfigError, ItemsError, WorkspaceError
from mmal.data.keywords import extract_keywords

TEXT_STATES = ("joint", "contextual", "static")


@dataclass
class Segment:
    """A tokenised text segment: wordpiece ids ``[L]``, word index per token ``[L]``, states ``[L, 384]``."""

    ids: torch.Tensor
    words: torch.Tensor
    states: torch.Tensor

    @property
    def n_words(self) -> int:
        return int(self.words.max()) + 1 if len(self.words) else 0

    def word_slice(self, start: int, stop: int | None = None) -> "Segment":
        """Tokens of words ``start <= w < stop`` (word indices renumbered from 0)."""
        stop = self.n_words if stop is None else stop
        m = (self.words >= start) & (self.words < stop)
        return Segment(self.ids[m], self.words[m] - start, self.states[m])


class TextStates:
    """Frozen MiniLM (``text:minilm``) states of word sequences, computed once per text.

    Segments (:meth:`encode`): ``mode="contextual"`` or ``"joint"``: last hidden states of
    ``[CLS] w1 .. wn [SEP]`` with the specials stripped; ``"static"``: the embedding layer's
    output only (word + position, no context). Also gives the input-space vectors of
    ``[CLS]`` and ``[SEP]``.

    ``mode="joint"`` (default of the models): :meth:`joint` runs the frozen tower over the
    whole assembled input ``[CLS] Q [SEP] T [SEP]`` (token types 0 / 1), so the query and
    the video text attend to each other inside MiniLM, and word-level MLM masks the input
    ids (``[MASK]``) before the tower sees them. Unmasked sequences are cached.
    """

    def __init__(self, mode: str = "contextual", max_length: int = 64):
        if mode not in TEXT_STATES:
            raise ConfigError(f"text_states must be one of {TEXT_STATES}, got {mode!r}")
        from mmal.encoders import load

        enc = load("text:minilm")
        self.mode, self.max_length = mode, int(max_length)
        self.tok, self.module = enc._tok, enc._module
        emb = self.module.embeddings.word_embeddings.weight.detach()
        self.cls_vec = emb[self.tok.cls_token_id].clone()
        self.sep_vec = emb[self.tok.sep_token_id].clone()
        self.vocab_size = int(emb.shape[0])
        self.mask_id = int(self.tok.mask_token_id)
        self._cache: dict = {}

    @torch.inference_mode()
    def joint(self, seqs: list[tuple[torch.Tensor, torch.Tensor]], cache: bool = True) -> list[torch.Tensor]:
        """Frozen MiniLM last hidden states of full input sequences ``(ids [L], token_type [L])``."""
        out: list = [None] * len(seqs)
        todo = []
        for i, (ids, tt) in enumerate(seqs):
            key = (ids.numpy().tobytes(), tt.numpy().tobytes()) if cache else None
            hit = self._cache.get(key) if cache else None
            if hit is not None:
                out[i] = hit
            else:
                todo.append((i, key))
        if todo:
            L = max(len(seqs[i][0]) for i, _ in todo)
            ids = torch.zeros(len(todo), L, dtype=torch.long)
            tt = torch.zeros(len(todo), L, dtype=torch.long)
            am = torch.zeros(len(todo), L, dtype=torch.long)
            for r, (i, _) in enumerate(todo):
                n = len(seqs[i][0])
                ids[r, :n], tt[r, :n], am[r, :n] = seqs[i][0], seqs[i][1], 1
            h = self.module(input_ids=ids, token_type_ids=tt, attention_mask=am).last_hidden_state.float()
            for r, (i, key) in enumerate(todo):
                st = h[r, : len(seqs[i][0])].clone()
                out[i] = st
                if cache:
                    self._cache[key] = st
        return out

    @torch.inference_mode()
    def encode(self, word_lists: list[list[str]], batch_size: int = 64) -> list[Segment]:
        out: list[Segment] = []
        for s in range(0, len(word_lists), batch_size):
            chunk = [w if w else ["[UNK]"] for w in word_lists[s : s + batch_size]]
            enc = self.tok(chunk, is_split_into_words=True, padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt")
            if self.mode == "contextual":
                h = self.module(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            else:
                h = self.module.embeddings(input_ids=enc["input_ids"])
            for b in range(len(chunk)):
                wid = enc.word_ids(b)
                keep = [i for i, w in enumerate(wid) if w is not None]
                idx = torch.tensor(keep, dtype=torch.long)
                out.append(Segment(enc["input_ids"][b, idx].clone(),
                                   torch.tensor([wid[i] for i in keep], dtype=torch.long),
                                   h[b, idx].float().clone()))
        return out


@dataclass
class RelevanceData:
    """Everything the relevance models read (see module docstring)."""

    video_ids: list[str]
    keywords: list[list[str]]
    video_text: list[Segment]
    visual: np.ndarray  # [V, N, 1280]
    visual_pooled: np.ndarray  # [V, 1280]
    text_pooled: np.ndarray  # [V, 384] L2-normalised mean of the keyword states
    queries: list[str]
    query_text: list[Segment]  # one per pair
    video_index: np.ndarray  # [P]
    labels: np.ndarray  # [P] int, -1 = unlabeled
    splits: np.ndarray  # [P] object
    query_ids: np.ndarray  # [P] object
    cls_vec: torch.Tensor = None
    sep_vec: torch.Tensor = None
    tower: "TextStates | None" = None  # set when text_states == "joint"
    vocab_size: int = 30522
    info: dict = field(default_factory=dict)

    def pairs(self, split: str | None = None, labeled: bool = True) -> np.ndarray:
        m = np.ones(len(self.labels), bool)
        if split is not None:
            m &= self.splits == split
        if labeled:
            m &= self.labels >= 0
        return np.flatnonzero(m)


def _pool_grid(seq: np.ndarray, grid: int) -> np.ndarray:
    """EfficientNet patch tokens ``[S*S, C]`` (row-major) -> ``[grid*grid, C]`` by average pooling."""
    side = int(round(np.sqrt(seq.shape[0])))
    fmap = torch.from_numpy(seq).T.reshape(1, -1, side, side)
    return torch.nn.functional.adaptive_avg_pool2d(fmap, grid)[0].flatten(1).T.numpy()


def encode_visual(media: list[tuple[str, str]], *, n_frames: int = 3, grid: int = 2, batch_size: int = 16):
    """Frozen EfficientNet-Lite0 (``resize="squash"``) tokens of each video.

    ``media``: (kind, path) per video, kind ``"image"`` (one frame, repeated to J) or ``"video"``
    (J frames sampled uniformly). Returns ``tokens [V, J*grid^2, 1280]`` and ``pooled [V, 1280]``.
    """
    from mmal.data.media import load_image, load_video_frames
    from mmal.encoders import load

    enc = load("image:efficientnet-lite0", resize="squash")
    frames = []
    for kind, path in media:
        if kind == "video":
            frames.append(load_video_frames(path, n_frames))
        else:
            frames.append([load_image(path)] * n_frames)
    flat = [f for fr in frames for f in fr]
    pooled, seqs = enc.encode(flat, batch_size=batch_size)
    tok = np.stack([_pool_grid(s, grid) for s in seqs]).reshape(len(media), n_frames * grid * grid, -1)
    return tok.astype(np.float32), pooled.reshape(len(media), n_frames, -1).mean(1).astype(np.float32)


def prepare_relevance(
    items,
    *,
    fields: tuple = ("text", "captions", "asr"),
    weights: tuple = (1.0, 0.5, 0.5),
    k: int = 16,
    entity_boost: float = 1.0,
    stop_words: str | None = "english",
    n_frames: int = 3,
    grid: int = 2,
    text_states: str = "joint",
    cache_dir=None,
    cache_only: bool = False,
) -> RelevanceData:
    """Read a relevance items file and build :class:`RelevanceData` (see module docstring).

    Fields absent from the file are skipped (their weights too). Visual tokens are cached
    under ``cache_dir`` (keyed by the items file's content hash, ``n_frames`` and ``grid``);
    ``cache_only`` refuses to encode them when they are not cached there (WorkspaceError).
    """
    from mmal.data.relevance import read_relevance_items

    path = pathlib.Path(items).resolve()
    table = read_relevance_items(path)
    cols = table.column_names
    rows = table.to_pylist()
    media_col = "video" if "video" in cols else "image" if "image" in cols else None
    if media_col is None:
        raise ItemsError("relevance items need a 'video' or 'image' column (the visual signal)", file=path)
    key_col = "video_id" if "video_id" in cols else media_col
    vindex: dict[str, int] = {}
    vrows = []
    for i, r in enumerate(rows, start=1):
        if not r.get(media_col):
            raise ItemsError(f"{media_col} is missing (relevance models need the visual signal)", file=path, row=i,
                             column=media_col)
        key = str(r[key_col])
        if key not in vindex:
            vindex[key] = len(vrows)
            vrows.append(r)
    use = [(f, w) for f, w in zip(fields, weights) if f in cols]
    if not use:
        raise ConfigError(f"none of the keyword fields {list(fields)} is a column of {path}")
    kws = extract_keywords(vrows, [f for f, _ in use], [w for _, w in use], k=k, entity_boost=entity_boost,
                           vectorizer_params={"stop_words": stop_words} if stop_words else None)
    media = [(media_col, str((path.parent / r[media_col]).resolve())) for r in vrows]
    tok = pooled = None
    cache = None
    if cache_dir is not None:
        h = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        cache = pathlib.Path(cache_dir) / f"visual-{h}-J{n_frames}-g{grid}.npz"
        if cache.exists():
            z = np.load(cache)
            tok, pooled = z["tokens"], z["pooled"]
    if tok is None and cache_only:  # read-only callers (`mmal simulate WS`) never encode into the workspace
        where = pathlib.Path(cache_dir).parent.parent if cache_dir is not None else path
        raise WorkspaceError(f"{where}: no cached visual features; run `mmal encode {where}` first")
    if tok is None:
        tok, pooled = encode_visual(media, n_frames=n_frames, grid=grid)
        if cache is not None:  # temp file + rename: a concurrent reader never sees half a file
            from mmal.utils import atomic_output

            with atomic_output(cache, suffix=".npz") as tmp:
                np.savez(tmp, tokens=tok, pooled=pooled)
    ts = TextStates("contextual" if text_states == "joint" else text_states)
    vtext = ts.encode(kws)
    tp = np.stack([s.states.mean(0).numpy() for s in vtext])
    tp /= np.linalg.norm(tp, axis=1, keepdims=True) + 1e-12
    queries = [r["query"].strip() for r in rows]
    uq = list(dict.fromkeys(queries))
    qseg = dict(zip(uq, ts.encode([q.split() for q in uq])))
    labels = np.array([-1 if r.get("label") is None else int(float(r["label"])) for r in rows], dtype=np.int64)
    splits = np.array([r.get("split") or ("train" if lb >= 0 else "pool") for r, lb in zip(rows, labels)], dtype=object)
    qids = np.array([str(r.get("query_id") or r["query"]) for r in rows], dtype=object)
    return RelevanceData(
        video_ids=list(vindex), keywords=kws, video_text=vtext, visual=tok, visual_pooled=pooled, text_pooled=tp,
        queries=queries, query_text=[qseg[q] for q in queries],
        video_index=np.array([vindex[str(r[key_col])] for r in rows], dtype=np.int64),
        labels=labels, splits=splits, query_ids=qids, cls_vec=ts.cls_vec, sep_vec=ts.sep_vec,
        vocab_size=ts.vocab_size, tower=ts if text_states == "joint" else None,
        info={"items": str(path), "fields": [f for f, _ in use], "weights": [w for _, w in use], "k": k,
              "n_frames": n_frames, "grid": grid, "text_states": text_states, "media": media_col},
    )


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


def pair_cosine(data: RelevanceData, idx) -> np.ndarray:
    """``cos(q, t)`` of pairs ``idx``: frozen MiniLM query vector against the video's keyword-text vector."""
    idx = np.asarray(idx)
    q = query_vectors(data)[idx].astype(np.float64)
    t = data.text_pooled[data.video_index[idx]].astype(np.float64)
    t = t / np.clip(np.linalg.norm(t, axis=1, keepdims=True), 1e-12, None)
    return (q * t).sum(1)


def describe(data: RelevanceData) -> str:
    return json.dumps({"videos": len(data.video_ids), "pairs": len(data.labels), **data.info})
