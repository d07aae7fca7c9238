"""The Ray engine: encode, score, LSB kNN and per-item-score selection on a Ray cluster.

Every stage returns exactly what the local engine returns and writes the same files; only
the work is spread:

* **encode** -- :func:`encode_items`: Ray Data over the items still missing from the cache
  (``ray.data.from_arrow``), ``map_batches`` on an actor pool whose actors load the tower
  once (:class:`_EncodeActor`); the driver writes each returned batch as one cache chunk.
* **score** -- :func:`score_rows`: Ray Data over the pool's score batches (one dataset row
  per ``chunk`` items, so every actor scores the same item groups as the local engine and
  the probabilities are equal, not merely close); the actor builds its
  ``score_fn(batch_rows) -> dict of arrays`` once from a picklable factory.
* **LSB kNN** -- :class:`ShardedIndex`: one contiguous index shard per Ray actor (each
  builds its own :func:`mmal.index.build_index`), every query batch searched on all shards,
  and a global top-k merge (score, then smaller row id -- the convention of
  :func:`mmal.index.base.sort_topk`). With the ``exact`` backend the result equals one
  single index over all rows.
* **uncertainty / BALD** -- :func:`distributed_top_b`: each Ray task scores one shard of
  the selectable rows and returns its own top-B; the driver merges the ``n_shards * B``
  candidates by (score desc, row asc), the order of :func:`mmal.select.api.take_top`.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from mmal.errors import ConfigError
from mmal.loop.core import SCORE_EXTRA
from mmal.index.base import Index, check_metric, check_vectors, sort_topk

#: strategies that are a per-item score and run as :func:`distributed_top_b`


# ---- connection -------------------------------------------------------------------------
def init_ray(address: str | None = None, *, num_cpus: int | None = None, object_store_memory: int | None = None,
             **kw) -> str:
    """Connect to Ray once per process; returns ``"joined <address>"`` or ``"local"``.

    ``address`` (``ray://host:10001``, ``host:6379`` or ``auto``) or else the
    ``RAY_ADDRESS`` environment variable joins an existing cluster; with neither, Ray
    starts locally with ``num_cpus`` and ``object_store_memory`` (bytes; Ray's defaults
    when ``None``). A process that already called ``ray.init`` keeps its connection.
    """
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a setup dependency
        raise ConfigError("--engine ray needs the 'ray' package (scripts/setup.sh installs it)") from e
    if not ray.is_initialized():
        addr = address or os.environ.get("RAY_ADDRESS") or None
        if addr:
            ray.init(address=addr, log_to_driver=False, **kw)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                     log_to_driver=False, **kw)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # batches come back in input order
    ctx.enable_progress_bars = False
    addr = address or os.environ.get("RAY_ADDRESS")
    return f"joined {addr}" if addr else "local"


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _actor_pool(n_actors: int | None, cpus_per_actor: float | None):
    """(compute strategy, CPUs per actor): by default half the cluster's CPUs, 1 CPU each,
    leaving room for Ray Data's read tasks (an actor pool that takes every CPU deadlocks)."""
    import ray.data

    cpus = _cluster_cpus()
    size = int(n_actors) if n_actors else max(1, cpus // 2)
    per = float(cpus_per_actor) if cpus_per_actor else max(0.25, min(1.0, (cpus - 0.5) / size))
    return ray.data.ActorPoolStrategy(size=size), per


def _pack(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unpack(blob) -> dict:
    with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---- encode -----------------------------------------------------------------------------
class _EncodeActor:
    """Ray Data actor: loads the tower once, encodes batches of ``(id, kind, value)`` rows."""

    def __init__(self, spec: str, params: dict, n_frames: int):
        from mmal import encoders

        self.enc = encoders.load(spec, **params)
        self.n_frames = n_frames

    def __call__(self, batch: dict) -> dict:
        from mmal.features.cache import SEQ_DTYPE, encode_batch

        kinds, values = batch["kind"].tolist(), batch["value"].tolist()
        sources = [None if k == "" else (k, v) for k, v in zip(kinds, values)]
        dim = self.enc.dim
        pooled, seqs, present = encode_batch(self.enc, sources, dim, self.n_frames)
        lengths = np.array([len(s) for s in seqs], np.int64)
        seq = (np.concatenate([np.asarray(s, SEQ_DTYPE) for s in seqs if len(s)], 0) if lengths.sum()
               else np.zeros((0, dim), SEQ_DTYPE))
        blob = _pack({"ids": np.asarray(batch["id"], dtype=str), "pooled": pooled, "lengths": lengths, "seq": seq,
                      "present": present, "fingerprint": np.asarray(self.enc.fingerprint)})
        return {"npz": np.array([blob], dtype=object)}


def encode_items(cache, table, modality: str, encoder_spec: str, *, batch_size: int = 16, n_frames: int = 3,
                 encoder_params: dict | None = None, progress: bool = False, n_actors: int | None = None,
                 cpus_per_actor: float | None = None) -> dict:
    """Ray twin of :func:`mmal.features.cache.encode_items` (same cache chunks, same stats).

    The items still missing from the cache go through ``map_batches`` (``batch_size`` items
    per call) on ``n_actors`` actors (default: half the cluster's CPUs), each loading the
    tower once. When the cache has never seen this encoder the fingerprint comes back from
    the actors (the driver loads no model).
    """
    import pyarrow as pa
    import ray.data

    from mmal.features.cache import item_sources, remember_fingerprint, resolve_fingerprint

    encoder_params = dict(encoder_params or {})
    fp = resolve_fingerprint(cache, encoder_spec, encoder_params)
    ids = table.column("id").to_pylist()
    todo = cache.missing(fp, modality, ids) if fp else list(ids)
    stats = {"fingerprint": fp, "encoded": 0, "cached": len(ids) - len(todo), "absent": 0, "modality": modality,
             "encoder": encoder_spec, "engine": "ray"}
    if not todo:
        return stats
    source = item_sources(table, modality)
    src = [source[i] for i in todo]
    rows = pa.table({"id": pa.array(todo, pa.string()),
                     "kind": pa.array(["" if s is None else s[0] for s in src], pa.string()),
                     "value": pa.array(["" if s is None else str(s[1]) for s in src], pa.string())})
    compute, per = _actor_pool(n_actors, cpus_per_actor)
    ds = ray.data.from_arrow(rows).map_batches(
        _EncodeActor, fn_constructor_kwargs={"spec": encoder_spec, "params": encoder_params, "n_frames": int(n_frames)},
        batch_size=int(batch_size), batch_format="numpy", compute=compute, num_cpus=per)
    done = None
    for row in ds.iter_rows():
        part = _unpack(row["npz"])
        if fp is None:
            fp = str(part["fingerprint"])
            remember_fingerprint(cache, encoder_spec, encoder_params, fp)
            done = cache.done_ids(fp, modality)
            stats["fingerprint"] = fp
        keep = np.ones(len(part["ids"]), bool) if not done else np.array([i not in done for i in part["ids"].tolist()])
        if not keep.any():
            continue
        offs = np.r_[0, np.cumsum(part["lengths"])]
        seqs = [part["seq"][offs[j]:offs[j + 1]] for j in np.flatnonzero(keep)]
        cache.write_chunk(fp, modality, part["ids"][keep].tolist(), part["pooled"][keep], seqs, part["present"][keep])
        stats["encoded"] += int(part["present"][keep].sum())
        stats["absent"] += int((~part["present"][keep]).sum())
    stats["cached"] = len(ids) - stats["encoded"] - stats["absent"]
    return stats


def encode_workspace(directory, *, encoders: str | None = None, batch_size: int | None = None, progress: bool = False,
                     n_actors: int | None = None) -> list[dict]:
    """Ray twin of :func:`mmal.features.pipeline.encode_workspace`."""
    from mmal.features.cache import FeatureCache
    from mmal.features.pipeline import encoder_params, workspace_encoders
    from mmal.workspace import Workspace

    ws = Workspace(directory)
    cache = FeatureCache(ws.features_dir)
    return [encode_items(cache, ws.items, m, spec, batch_size=int(batch_size or ws.setting("encode", "batch_size")),
                         n_frames=int(ws.setting("encode", "n_frames")), encoder_params=encoder_params(ws, m),
                         n_actors=n_actors)
            for m, spec in workspace_encoders(ws, encoders).items()]


# ---- score ------------------------------------------------------------------------------
class _ScoreActor:
    """Ray Data actor: builds ``score_fn`` once (``factory()``), scores whole chunks of rows."""

    def __init__(self, factory, n: int, chunk: int):
        self.score_fn = factory()
        self.n, self.chunk = n, chunk

    def __call__(self, batch: dict) -> dict:
        blobs = []
        for c in batch["id"].tolist():
            rows = np.arange(c * self.chunk, min(self.n, (c + 1) * self.chunk), dtype=np.int64)
            out = self.score_fn(rows)
            blobs.append(_pack({k: np.asarray(v) for k, v in out.items()}))
        return {"chunk": np.asarray(batch["id"]), "npz": np.array(blobs, dtype=object)}


def score_rows(factory, n: int, *, chunk: int = 256, n_actors: int | None = None,
               cpus_per_actor: float | None = None) -> dict:
    """Run ``score_fn = factory(); score_fn(rows) -> {name: array [len(rows), ...]}`` over
    rows ``0..n-1`` on a Ray actor pool and concatenate the results in row order.

    The dataset has one row per ``chunk`` consecutive pool rows (``ray.data.range``), so
    ``score_fn`` always sees the same row groups whatever the cluster: with ``chunk`` equal
    to the local scorer's batch size the outputs equal the local engine's. ``factory``
    must be picklable (it is shipped to every actor).
    """
    import ray.data

    if n == 0:
        return {}
    compute, per = _actor_pool(n_actors, cpus_per_actor)
    n_chunks = math.ceil(n / chunk)
    ds = ray.data.range(n_chunks).map_batches(
        _ScoreActor, fn_constructor_kwargs={"factory": factory, "n": int(n), "chunk": int(chunk)},
        batch_size=1, batch_format="numpy", compute=compute, num_cpus=per)
    parts: dict[str, list] = {}
    expect = 0
    for row in ds.iter_rows():
        if int(row["chunk"]) != expect:
            raise RuntimeError(f"ray score: chunk {row['chunk']} arrived, expected {expect}")  # preserve_order broken
        expect += 1
        for k, v in _unpack(row["npz"]).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v, 0) for k, v in parts.items()}


def flat_model_scores(res: dict) -> dict:
    """Flatten a learner's ``score`` result into ``{name: [B, ...]}`` arrays."""
    out = {"probs": res["probs"], "embedding": res["embedding"], "penultimate": res["penultimate"]}
    for m, z in res["modality"].items():
        out[f"modality:{m}"] = z
    for m, p in res["unimodal_probs"].items():
        out[f"probs:{m}"] = p
    for k, p in (res.get("coalition_probs") or {}).items():
        out[f"coalition:{k}"] = p
    if res.get("scores") is not None:
        out[SCORE_EXTRA] = np.asarray(res["scores"], np.float64)
    return out


def pool_from_scores(flat: dict, ids, *, labels=None, split=None, fused_blocks: bool = False, ordered: bool = False):
    """:class:`ScoredPool` from flattened scores, laid out as :func:`mmal.loop.core.score_pool` does."""
    from mmal.pool import ScoredPool

    extras = {k: v for k, v in flat.items() if k in ("penultimate", SCORE_EXTRA) or k.startswith(("probs:", "coalition:"))}
    modality = {k.split(":", 1)[1]: v for k, v in flat.items() if k.startswith("modality:")}
    return ScoredPool(ids=np.asarray(ids), probs=flat["probs"], embedding=flat["embedding"], modality=modality,
                      labels=None if labels is None else np.asarray(labels), split=split, extras=extras,
                      fused_blocks=fused_blocks, ordered=ordered)


class WorkspaceScorer:
    """Picklable factory of a workspace round's ``score_fn`` (used by each score actor).

    ``WorkspaceScorer(dir)()`` loads the round's learner and the cached features once and
    returns ``score_fn(rows) -> dict`` (``learner.score(features, rows)``, flattened by
    :func:`flat_model_scores`); nothing here depends on the learner's internals.
    """

    def __init__(self, directory: str, coalitions=False):
        self.directory, self.coalitions = str(directory), coalitions

    def __call__(self):
        from mmal.loop.workspace_round import load_round_model
        from mmal.workspace import Workspace

        ws = Workspace(self.directory)
        _, learner, _ = load_round_model(ws)
        features = ws.task.load_features(ws)
        coalitions = self.coalitions

        def score_fn(rows):
            res = learner.score(features, rows, coalitions=coalitions, progress=False)
            return flat_model_scores(res)

        return score_fn


SCORE_CHUNK = 1024  # a multiple of the learners' score batches (256, 1024): chunks start where local batches do


def score_workspace(directory, *, coalitions=False, mc_samples=0, progress=False, n_actors: int | None = None) -> dict:
    """Ray twin of :func:`mmal.loop.workspace_round.score_workspace` (same ``rounds/<n>/pool``)."""
    from mmal.loop.workspace_round import at_selection_probs, load_round_model, workspace_arrays
    from mmal.workspace import Workspace

    ws = Workspace(directory)
    rnd, learner, extra = load_round_model(ws)
    if extra.get("towers_file"):
        raise ConfigError("--engine ray does not score with fine-tuned towers yet; use --engine local for this round")
    if mc_samples:
        raise ConfigError("--engine ray does not draw MC-dropout passes yet (--mc-samples); score them with --engine local "
                          "(BALD's selection itself runs distributed)")
    ids, split, labels = workspace_arrays(ws)
    flat = score_rows(WorkspaceScorer(str(ws.dir), coalitions), len(ids), chunk=SCORE_CHUNK, n_actors=n_actors)
    pool = pool_from_scores(flat, ids, labels=labels, split=split, fused_blocks=bool(getattr(learner, "fused_blocks", False)),
                            ordered=ws.task.ordered)
    at_sel = at_selection_probs(ws, ids, labels, pool.n_classes)
    if at_sel is not None:
        from mmal.select.lsb import AT_SELECTION

        pool.extras[AT_SELECTION] = at_sel
    from mmal.workspace.pool_io import replace_pool

    folder = replace_pool(pool, ws.round_dir(rnd) / "pool")
    return {"round": rnd, "pool": str(folder), "n": len(pool), "task": ws.task.name, "learner": learner.name,
            "tuned_towers": False, "engine": "ray"}


# ---- sharded kNN ------------------------------------------------------------------------
class _Shard:
    """Ray actor holding one index shard (rows ``[start, start + len(vectors))``)."""

    def __init__(self, vectors, start: int, metric: str, backend: str, index_params: dict):
        from mmal.index import build_index

        self.start = int(start)
        self.index = build_index(vectors, metric=metric, backend=backend, **index_params)

    def search(self, queries, k: int):
        s, r = self.index.search(queries, k)
        return s, np.where(r >= 0, r + self.start, -1)


class ShardedIndex(Index):
    """kNN index split into ``n_shards`` contiguous row shards, one Ray actor each.

    ``search`` sends the queries to every shard (one object-store copy), each returns its
    local top-k as global row ids, and the driver keeps the global top-k by score then
    smaller row id (:func:`mmal.index.base.sort_topk`). With ``backend="exact"`` this equals
    one :class:`mmal.index.ExactIndex` over all rows; with an approximate backend each shard
    is tuned on its own rows (``"auto"`` picks by shard size).

    Memory: a shard actor holds ``N / n_shards * D * 4`` bytes of float32 rows plus its
    index; a merge moves ``n_shards * Q * k * 12`` bytes (float32 score + int64 row).
    """

    def __init__(self, vectors, *, metric: str = "cosine", backend: str = "auto", n_shards: int | None = None,
                 cpus_per_shard: float | None = None, index_params: dict | None = None):
        import ray

        vectors = check_vectors(vectors)
        self.metric = check_metric(metric)
        self.ntotal, self.dim = (int(x) for x in vectors.shape)
        self.n_shards = int(n_shards) if n_shards else _cluster_cpus()
        if self.n_shards < 1:
            raise ConfigError(f"n_shards must be >= 1, got {n_shards}")
        self.n_shards = min(self.n_shards, self.ntotal)
        self.backend = f"sharded{self.n_shards}:{backend}"
        bounds = np.linspace(0, self.ntotal, self.n_shards + 1).astype(np.int64)
        self.bounds = bounds
        # every shard must be placeable at once (more shards than CPUs share them)
        per = float(cpus_per_shard) if cpus_per_shard else min(1.0, _cluster_cpus() / self.n_shards)
        actor = ray.remote(num_cpus=per)(_Shard)
        self.shards = [actor.remote(ray.put(np.ascontiguousarray(vectors[a:b], dtype=np.float32)), int(a), metric,
                                    backend, dict(index_params or {}))
                       for a, b in zip(bounds[:-1], bounds[1:])]

    def search(self, queries, k: int):
        import ray

        queries, k = self._check_queries(queries, k)
        q = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
        parts = ray.get([s.search.remote(q, k) for s in self.shards])
        scores = np.concatenate([p[0] for p in parts], axis=1)  # [Q, n_shards * k]
        rows = np.concatenate([p[1] for p in parts], axis=1)
        fill = -np.inf if self.larger_is_closer else np.inf
        scores = np.where(rows >= 0, scores, fill).astype(np.float32)
        return sort_topk(scores, rows, k, self.larger_is_closer)

    def close(self) -> None:
        import ray

        for s in getattr(self, "shards", []):
            ray.kill(s)
        self.shards = []


# ---- distributed top-B ------------------------------------------------------------------
def _shard_top_b(strategy: str, block, rows: np.ndarray, budget: int, params: dict):
    """Scores of one shard of selectable rows and its own top-``budget`` (score desc, row asc).

    The score function is the strategy's registry :class:`~mmal.select.registry.TopB`.
    """
    from mmal.select.registry import get_strategy

    top = get_strategy(strategy).top_b
    b = np.asarray(block, dtype=np.float64)
    if not np.isfinite(b).all():
        axes = tuple(a for a in range(b.ndim) if a != top.rows_axis)
        bad = ~np.isfinite(b).all(axis=axes)
        raise ConfigError(f"{strategy}: {int(bad.sum())} selectable rows have non-finite probabilities "
                          f"(first pool row {int(rows[np.flatnonzero(bad)[0]])})")
    if top.source_param is None and (b < 0).any():
        raise ConfigError(f"{strategy}: negative probabilities among pool rows {int(rows[0])}..{int(rows[-1])}")
    score = top.score(b, **params)
    order = np.argsort(-score, kind="stable")[:budget]  # rows ascending -> ties by smaller row
    return score[order], rows[order]


def distributed_top_b(strategy: str, pool, budget: int, labeled_mask, *, n_shards: int | None = None, **params):
    """Top-``budget`` selectable rows by a strategy's per-item score, one Ray task per shard.

    ``strategy`` is a registered strategy with a :class:`~mmal.select.registry.TopB` (the
    uncertainty scores of 000 eq. 8-10, the level variance, BALD's mutual information reading
    ``pool.extras[key]`` [T, N, C]); ``params`` are the strategy's parameters (those its
    score takes are passed on). Each task returns at most ``budget`` (score, row) pairs; the
    union holds the global top-B because every global top-B row is in its shard's top-B.
    Merge order: score desc, then row asc.

    Returns ``(scores float64 [B'], rows int64 [B'], n_selectable)``.
    """
    import ray

    from mmal.select.registry import MissingNeedError, get_strategy

    entry = get_strategy(strategy)
    top = entry.top_b
    if top is None:
        raise ConfigError(f"strategy '{strategy}' has no per-item score to rank on shards")
    entry.check_params(params)
    rows = np.flatnonzero(pool.selectable(labeled_mask))
    if budget == 0 or len(rows) == 0:
        return np.zeros(0), np.zeros(0, np.int64), len(rows)
    if top.source_param is not None:
        key = params.get(top.source_param, top.source_default)
        if key not in pool.extras:
            raise MissingNeedError(strategy, sorted(entry.needs)[0] if entry.needs else "embedding", f"no pool.extras['{key}']")
        src = pool.extras[key]
        take = (lambda r: np.asarray(src[:, r])) if top.rows_axis == 1 else (lambda r: np.asarray(src[r]))  # noqa: E731
    else:
        take = lambda r: np.asarray(pool.probs[r])  # noqa: E731
    score_params = {k: v for k, v in params.items() if k in top.params}
    n_shards = int(n_shards) if n_shards else _cluster_cpus()
    task = ray.remote(num_cpus=1)(_shard_top_b)
    futures = [task.remote(strategy, take(r), r, int(budget), score_params)
               for r in np.array_split(rows, min(n_shards, len(rows))) if len(r)]
    parts = ray.get(futures)
    scores = np.concatenate([p[0] for p in parts])
    cand = np.concatenate([p[1] for p in parts])
    order = np.lexsort((cand, -scores))[:budget]  # score desc, then row asc
    return scores[order], cand[order], len(rows)


def ray_select(spec: str, pool, budget: int, *, labeled_mask=None, seed: int = 0, n_shards: int | None = None,
               **params):
    """:func:`mmal.select.select` with the pool-sized work on Ray.

    What runs where comes from the strategy registry: a strategy that takes a kNN ``index``
    gets a :class:`ShardedIndex` over the whole pool embedding (its ``index``/``index_params``
    choose each shard's backend); one with a per-item score runs :func:`distributed_top_b`;
    anything else (mixes, BADGE, k-center, BMMAL) runs the local :func:`mmal.select.select`
    and says so in ``info["engine"]``. Parameters are checked by the registry in every case.
    """
    from mmal.select import select
    from mmal.select.api import check_budget, check_labeled_mask
    from mmal.select.registry import STRATEGIES
    from mmal.pool import Selection

    budget = check_budget(budget)
    mask = check_labeled_mask(pool, labeled_mask)
    name = spec.strip()
    entry = STRATEGIES.get(name)
    if entry is not None and entry.knn_index and not isinstance(params.get("index"), Index):
        entry.check_params(params)
        if pool.embedding is None:
            raise ConfigError(f"{name} needs pool.embedding (the fused CLS embedding)")
        backend = params.pop("index", "auto")
        index = ShardedIndex(pool.embedding, metric=params.get("metric", "cosine"), backend=backend,
                             n_shards=n_shards, index_params=params.pop("index_params", None))
        try:
            sel = select(name, pool, budget, labeled_mask=mask, seed=seed, index=index, **params)
        finally:
            index.close()
        sel.info = {**(sel.info or {}), "engine": "ray", "n_shards": index.n_shards}
        return sel
    if entry is not None and entry.top_b is not None:
        scores, rows, n_sel = distributed_top_b(name, pool, budget, mask, n_shards=n_shards, **params)
        info = {"n_selectable": int(n_sel), "engine": "ray"}
        if entry.top_b.source_param is not None:
            key = params.get(entry.top_b.source_param, entry.top_b.source_default)
            info = {"n_candidates": int(n_sel), "n_passes": int(pool.extras[key].shape[0]), "engine": "ray"}
        return Selection(ids=pool.ids[rows], strategy=name, score=scores, reason=None, info=info)
    sel = select(spec, pool, budget, labeled_mask=mask, seed=seed, **params)
    sel.info = {**(sel.info or {}), "engine": "local (no distributed form of this strategy)"}
    return sel


def select_workspace(directory, spec: str, budget: int, *, seed: int = 0, params: dict | None = None,
                     n_shards: int | None = None, **kw) -> dict:
    """Ray twin of :func:`mmal.loop.workspace_round.select_workspace` (same batch and files);
    ``kw`` (``dry_run``, ``append``, ``lock_timeout``) goes to it unchanged."""
    from functools import partial

    from mmal.loop.workspace_round import select_workspace as local

    return local(directory, spec, budget, seed=seed, params=params, select_fn=partial(ray_select, n_shards=n_shards), **kw)
