"""Rare-positive binary variants of a classification dataset (the setting of 000: few positives).

One class (``positive``) against the rest, subsampled so that positives are ``pos_rate``
of the items: every item of the other classes is kept and ``round(pos_rate / (1 - pos_rate)
· N_rest)`` positives are drawn (all of them when the class has fewer). Items keep their
split and media (paths rewritten relative to the new items file); ``label`` 1 = the
positive class, 0 = the rest, with names in ``label_name``.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmal.data.datasets._common import ITEMS_FILE, write_items
from mmal.errors import ConfigError

MEDIA_COLUMNS = ("image", "audio", "video", "sfx")


def rare_positive_variant(source_items: str | os.PathLike, out_dir: str | os.PathLike, *, positive: str | int,
                          pos_rate: float = 0.05, seed: int = 0) -> pathlib.Path:
    """Write ``out_dir/items.parquet``: ``positive`` against the rest at ``pos_rate`` positives."""
    if not 0.0 < float(pos_rate) < 0.5:
        raise ConfigError(f"pos_rate must lie in (0, 0.5), got {pos_rate}")
    src = pathlib.Path(source_items)
    t = pq.read_table(src)
    labels = np.array(t.column("label").to_pylist())
    name_col = next((c for c in ("label_name", "category") if c in t.column_names), None)
    names = t.column(name_col).to_pylist() if name_col else None
    if isinstance(positive, str) and not positive.lstrip("-").isdigit():
        if names is None:
            raise ConfigError(f"{src}: positive={positive!r} is a class name but the items have no 'label_name' or 'category' column")
        pos_mask = np.array([n == positive for n in names])
        pos_name = positive
    else:
        pos_mask = labels == int(positive)
        pos_name = names[int(np.flatnonzero(pos_mask)[0])] if names and pos_mask.any() else str(positive)
    if not pos_mask.any():
        raise ConfigError(f"{src}: no item of the positive class {positive!r}")
    rest = np.flatnonzero(~pos_mask)
    pos = np.flatnonzero(pos_mask)
    k = min(len(pos), int(round(float(pos_rate) / (1 - float(pos_rate)) * len(rest))))
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rest, rng.choice(pos, size=k, replace=False)]))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sub = t.take(pa.array(keep))
    cols = {c: sub.column(c).to_pylist() for c in sub.column_names}
    rel = os.path.relpath(src.parent.resolve(), out.resolve())
    for c in MEDIA_COLUMNS:
        if c in cols:
            cols[c] = [None if v is None else pathlib.PurePosixPath(rel, v).as_posix() for v in cols[c]]
    y = pos_mask[keep].astype(np.int64)
    cols["source_label"] = cols["label"]
    cols["label"] = y.tolist()
    cols["label_name"] = [pos_name if v else f"not {pos_name}" for v in y]
    return write_items(pa.table(cols), out)


def build_variant(build_source, out_dir, *, positive, pos_rate: float, seed: int, progress: bool, **source_opts):
    """Build the source dataset under ``out_dir/source`` (once) and its variant in ``out_dir``."""
    out = pathlib.Path(out_dir)
    src_items = out / "source" / ITEMS_FILE
    if not src_items.exists():
        build_source(out / "source", seed=seed, progress=progress, **source_opts)
    return rare_positive_variant(src_items, out, positive=positive, pos_rate=pos_rate, seed=seed)




def build_tuxpaint_binary(out_dir, *, n: int | None = None, seed: int = 0, positive: str = "animals",
                          pos_rate: float = 0.05, progress: bool = True) -> pathlib.Path:
    """Tux Paint, one category (``positive``) against the rest at ``pos_rate`` positives."""
    from mmal.data.datasets.tuxpaint import build_tuxpaint

    return build_variant(build_tuxpaint, out_dir, positive=positive, pos_rate=pos_rate, seed=seed, progress=progress,
                         n=n)


def build_oxygen_icons_binary(out_dir, *, n: int | None = None, seed: int = 0, positive: str = "apps",
                              pos_rate: float = 0.05, progress: bool = True) -> pathlib.Path:
    """Oxygen icons, one context (``positive``) against the rest at ``pos_rate`` positives."""
    from mmal.data.datasets.oxygen_icons import build_oxygen_icons

    return build_variant(build_oxygen_icons, out_dir, positive=positive, pos_rate=pos_rate, seed=seed,
                         progress=progress, n=n)


__all__ = ["rare_positive_variant", "build_variant", "build_tuxpaint_binary", "build_oxygen_icons_binary"]
