"""Shared helpers for the dataset builders: stratified splits, subsets, items writing.

All randomness goes through an explicit :class:`numpy.random.Generator` so that two
builds with the same seed write byte-identical items tables.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmal.errors import ConfigError

SPLITS = ("train", "pool", "test")
ITEMS_FILE = "items.parquet"
MEDIA_DIR = "media"


def check_fractions(train_frac: float, pool_frac: float, test_frac: float) -> np.ndarray:
    """Validate split fractions and return them as an array ``[3]`` that sums to 1.

    Raises
    ------
    ConfigError
        If a fraction is negative or the three do not sum to 1 (within 1e-6).
    """
    fr = np.array([train_frac, pool_frac, test_frac], dtype=np.float64)
    if np.any(fr < 0) or not np.isfinite(fr).all():
        raise ConfigError(
            f"split fractions must be finite and >= 0, got train={train_frac}, "
            f"pool={pool_frac}, test={test_frac}"
        )
    if abs(fr.sum() - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, got train={train_frac} + pool={pool_frac} "
            f"+ test={test_frac} = {fr.sum():g}"
        )
    return fr


def largest_remainder(total: int, weights: Sequence[float]) -> np.ndarray:
    """Split the integer ``total`` into parts proportional to ``weights``.

    Hamilton's largest-remainder method: floor every quota, then hand the leftover units
    to the largest fractional remainders (ties broken by lower index, so the result is
    deterministic). Returns an int64 array ``[len(weights)]`` summing to ``total``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    quota = total * w / w.sum()  # [K]
    base = np.floor(quota).astype(np.int64)
    left = int(total - base.sum())
    if left > 0:
        order = np.lexsort((np.arange(len(w)), -(quota - base)))
        base[order[:left]] += 1
    return base


def stratified_subset(
    strata: Sequence[int], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Pick ``n`` row indices, proportionally per stratum, deterministically by ``rng``.

    Every stratum keeps at least one row when ``n`` is at least the number of strata
    (so a small subset still covers every class); the rest is allocated by
    :func:`largest_remainder` of the stratum sizes. Returns sorted indices ``[n]``.

    Raises
    ------
    ConfigError
        If ``n`` is not in ``1..len(strata)``.
    """
    strata = np.asarray(strata)
    if not 1 <= n <= len(strata):
        raise ConfigError(f"n must be between 1 and {len(strata)} (items available), got {n}")
    keys, counts = np.unique(strata, return_counts=True)
    if n >= len(keys):
        take = 1 + largest_remainder(n - len(keys), counts - 1)
    else:
        take = largest_remainder(n, counts)
    take = np.minimum(take, counts)
    # Rare overflow after the min(): give the excess to strata with spare rows.
    short = n - int(take.sum())
    while short > 0:
        spare = np.flatnonzero(take < counts)
        take[spare[:short]] += 1
        short = n - int(take.sum())
    chosen = []
    for key, k in zip(keys, take):
        rows = np.flatnonzero(strata == key)
        chosen.append(rng.choice(rows, size=int(k), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def stratified_split(
    strata: Sequence[int], fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Assign ``train``/``pool``/``test`` per row, stratified by ``strata``.

    Within each stratum the rows are shuffled by ``rng`` and cut into
    ``largest_remainder(size, fractions)`` consecutive parts, so every stratum gets the
    requested fractions up to rounding (a stratum of 1-2 rows may land entirely in the
    largest split). Returns an object array of split names ``[N]``.
    """
    strata = np.asarray(strata)
    out = np.empty(len(strata), dtype=object)
    for key in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == key))
        sizes = largest_remainder(len(rows), fractions)
        start = 0
        for name, size in zip(SPLITS, sizes):
            out[rows[start : start + size]] = name
            start += size
    return out


def pick_queries(qlist: list, n: int | None, fractions, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """A relevance set's queries: ``n`` of ``qlist`` at random (``None`` = all, order kept) and
    a split per query (``train`` / ``pool`` / ``test`` by largest remainder of ``fractions``)."""
    from mmal.errors import ConfigError

    if n is not None:
        if not 1 <= int(n) <= len(qlist):
            raise ConfigError(f"n (queries) must be in 1..{len(qlist)}, got {n}")
        pick = np.sort(rng.choice(len(qlist), int(n), replace=False))
        qlist = [qlist[i] for i in pick]
    order = rng.permutation(len(qlist))
    sizes = largest_remainder(len(qlist), fractions)
    qsplit = np.empty(len(qlist), dtype=object)
    qsplit[order[: sizes[0]]] = "train"
    qsplit[order[sizes[0]: sizes[0] + sizes[1]]] = "pool"
    qsplit[order[sizes[0] + sizes[1]:]] = "test"
    return qlist, qsplit


def candidates_by_level(levels: np.ndarray, per_level, rng: np.random.Generator) -> list[int]:
    """A query's candidates, sorted: every level-3 video plus up to ``per_level[l]`` random ones of
    each level ``l`` in 0, 1, 2."""
    chosen = list(np.flatnonzero(levels == 3))
    for lv, m in enumerate(per_level):
        cand = np.flatnonzero(levels == lv)
        if len(cand) and m:
            chosen.extend(rng.choice(cand, min(int(m), len(cand)), replace=False).tolist())
    return sorted(int(i) for i in chosen)


def write_items(table: pa.Table, out_dir: pathlib.Path) -> pathlib.Path:
    """Write the items table as ``out_dir/items.parquet`` and return its path.

    The columns no task reads are declared as metadata in the file's schema metadata
    (:data:`mmal.data.items.EXTRA_COLUMNS_KEY`), so ``mmal init`` keeps them without
    ``--extra-columns``.
    """
    import json

    from mmal.data.items import EXTRA_COLUMNS_KEY, KNOWN_COLUMNS

    path = out_dir / ITEMS_FILE
    extra = [c for c in table.column_names if c not in KNOWN_COLUMNS]  # (a task's own columns are read, not refused)
    meta = dict(table.schema.metadata or {})
    meta[EXTRA_COLUMNS_KEY] = json.dumps(extra).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator:
    """Yield an ``advance(k=1)`` callable backed by mmal's rich progress bar (or a no-op)."""
    from mmal.utils import progress_bar as bar

    with bar(enabled) as prog:
        task = prog.add_task(description, total=total)
        yield lambda k=1: prog.advance(task, k)
