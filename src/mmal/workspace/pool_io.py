"""Files of the core types: a :class:`~mmal.pool.ScoredPool` folder and a selection table.

A pool folder holds ``probs.npy``, optional ``embedding.npy``, ``modality.<name>.npy``,
``extra.<name>.npy``, ``labels.npy``, ``split.npy`` (memory-mapped on load), ``ids.parquet``
and ``meta.json`` (``{"fused_blocks": bool, "ordered": bool}``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError
from mmal.pool import ScoredPool, Selection


def save_pool(pool: ScoredPool, folder) -> Path:
    """Write ``pool`` to ``folder`` (created); returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "probs.npy", np.asarray(pool.probs, dtype=np.float32))
    if pool.embedding is not None:
        np.save(folder / "embedding.npy", np.asarray(pool.embedding, dtype=np.float32))
    for name, arr in pool.modality.items():
        np.save(folder / f"modality.{name}.npy", np.asarray(arr, dtype=np.float32))
    for name, arr in pool.extras.items():
        np.save(folder / f"extra.{name}.npy", np.asarray(arr))
    if pool.labels is not None:
        np.save(folder / "labels.npy", np.asarray(pool.labels, dtype=np.int64))
    if pool.split is not None:
        np.save(folder / "split.npy", np.asarray(pool.split).astype("U8"))
    (folder / "meta.json").write_text(json.dumps({"fused_blocks": bool(pool.fused_blocks), "ordered": bool(pool.ordered)}))
    pq.write_table(pa.table({"id": pa.array(pool.ids.tolist(), pa.string())}), folder / "ids.parquet")
    return folder


def replace_pool(pool: ScoredPool, folder) -> Path:
    """Write ``pool`` to ``folder`` atomically: into a temporary sibling first, then swapped in.

    A crash (``kill -9``) at any moment leaves either the old pool or the new one, never a
    mix of the two's files (a re-score over an existing pool would otherwise pair new
    ``probs.npy`` with old ids).
    """
    import os
    import shutil

    from mmal.utils import guard_write

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.new.{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with guard_write(folder, cleanup=[tmp], done="the previous pool is kept"):  # a full disk: one line, no half pool left
        save_pool(pool, tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_pool(folder, mmap: bool = True) -> ScoredPool:
    """Read a pool folder written by :func:`save_pool` (arrays memory-mapped when ``mmap``)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not (folder / "ids.parquet").exists():
        raise ConfigError(f"{folder}: not a ScoredPool folder (no ids.parquet)")
    mode = "r" if mmap else None
    ids = np.asarray(pq.read_table(folder / "ids.parquet").column("id").to_pylist())

    def opt(name):
        return np.load(folder / name, mmap_mode=mode) if (folder / name).exists() else None

    modality = {p.name[len("modality."):-4]: np.load(p, mmap_mode=mode) for p in sorted(folder.glob("modality.*.npy"))}
    extras = {p.name[len("extra."):-4]: np.load(p, mmap_mode=mode) for p in sorted(folder.glob("extra.*.npy"))}
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
    return ScoredPool(
        ids=ids,
        probs=np.load(folder / "probs.npy", mmap_mode=mode),
        embedding=opt("embedding.npy"),
        modality=modality,
        labels=opt("labels.npy"),
        split=opt("split.npy"),
        extras=extras,
        fused_blocks=bool(meta.get("fused_blocks", False)),
        ordered=bool(meta.get("ordered", False)),
    )


def selection_table(sel: Selection):
    """A :class:`~mmal.pool.Selection` as an Arrow table: id, strategy, score, reason, round."""
    import pyarrow as pa

    return pa.table(
        {
            "id": pa.array(sel.ids.tolist(), pa.string()),
            "strategy": pa.array([str(s) for s in sel.strategy], pa.string()),
            "score": pa.array(sel.score.tolist(), pa.float64()),
            "reason": pa.array([str(r) for r in sel.reason], pa.string()),
            "round": pa.array([sel.round] * len(sel), pa.int64()),
        }
    )


def save_selection(sel: Selection, path) -> Path:
    """Write :func:`selection_table` of ``sel`` to a Parquet file ``path``."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(selection_table(sel), path)
    return path
