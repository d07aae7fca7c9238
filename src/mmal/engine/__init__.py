"""Execution engines for the stages that scale with the pool: ``local`` (default) and ``ray``.

``local`` runs everything in this process (what the CLI always did). ``ray`` runs
``encode`` and ``score`` as Ray Data ``map_batches`` with an actor pool (each actor loads
the tower / the round model once), LSB's kNN as one index shard per Ray actor with a global
top-k merge (:class:`mmal.engine.ray_engine.ShardedIndex`), and the per-item-score
strategies (uncertainty, BALD) as a distributed top-B (:func:`mmal.engine.ray_engine.distributed_top_b`).

Connection (:func:`mmal.engine.ray_engine.init_ray`): an explicit ``ray_address``
(``ray://host:10001`` or ``auto``) or the ``RAY_ADDRESS`` environment variable joins an
existing cluster; without either, Ray starts locally on this machine.

The workspace directory must be readable at the same path on every Ray node (shared
storage): actors read the items, the feature cache and the round's checkpoint from it; the
driver alone writes (cache chunks, the scored pool, the selection).
"""

from __future__ import annotations

from mmal.errors import ConfigError

ENGINES = ("local", "ray")


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def encode_workspace(directory, *, engine: str = "local", ray_address: str | None = None, **kw):
    """``mmal encode`` on the chosen engine (same cache layout and result dicts)."""
    if check_engine(engine) == "local":
        from mmal.workspace import Workspace

        ws = Workspace(directory)
        return ws.task.encode(ws, **kw)
    from mmal.engine import ray_engine

    ray_engine.init_ray(ray_address)
    return ray_engine.encode_workspace(directory, **kw)


def score_workspace(directory, *, engine: str = "local", ray_address: str | None = None, **kw):
    """``mmal score`` on the chosen engine (same ``rounds/<n>/pool`` output)."""
    if check_engine(engine) == "local":
        from mmal.loop.workspace_round import score_workspace as local

        return local(directory, **kw)
    from mmal.engine import ray_engine

    ray_engine.init_ray(ray_address)
    return ray_engine.score_workspace(directory, **kw)


def select_workspace(directory, spec: str, budget: int, *, engine: str = "local", ray_address: str | None = None, **kw):
    """``mmal select`` on the chosen engine (same batch, exports and selection file)."""
    if check_engine(engine) == "local":
        from mmal.loop.workspace_round import select_workspace as local

        return local(directory, spec, budget, **kw)
    from mmal.engine import ray_engine

    ray_engine.init_ray(ray_address)
    return ray_engine.select_workspace(directory, spec, budget, **kw)
