"""The ``synthetic-embeddings`` dataset: clustered vectors with planted label-noise regions.

For kNN / selection benchmarks (no media columns). Written in chunks with
:func:`numpy.lib.format.open_memmap`, so N = 10 M rows x D = 384 (15 GB of float32) is
built without holding the matrix in RAM.

Generative model (C classes, dimension D):

- class centres ``mu_c ~ N(0, centre_std^2 I)``, ``c = 0..C-1`` (``centres.npy [C, D]``);
- ``n_regions`` planted regions r, each with a *host* class ``h_r`` and a different
  *planted* label ``p_r``; region centre
  ``m_r = mu_h + region_shift * (mu_p - mu_h) + region_jitter * N(0, cluster_std^2 I)``
  (``region_shift < 0.5`` keeps ``m_r`` nearest to ``mu_h``);
- exactly ``floor(N * planted_frac)`` rows are planted: row -> region r uniformly,
  ``x = m_r + N(0, (region_std * cluster_std)^2 I)``, ``label = p_r``, so its label
  disagrees with its nearest class centre ``h_r`` (``planted.npy = True``,
  ``region.npy = r``);
- every other row: ``label ~ U{0..C-1}``, ``x = mu_label + N(0, cluster_std^2 I)``
  (``region.npy = -1``).

Rows are generated in fixed blocks of ``GEN_BLOCK`` rows, block b seeded with
``default_rng([seed, b])``, so the data do not depend on ``chunk_size`` (which only
sets how many rows are buffered per write / parquet row group). ``split`` is drawn per
row (i.i.d. with the requested fractions, i.e. stratified in expectation).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.lib.format import open_memmap

from mmal.data.datasets._common import ITEMS_FILE, SPLITS, check_fractions, progress_bar
from mmal.errors import ConfigError, MmalError

GEN_BLOCK = 4096
ARRAYS = ("embeddings", "labels", "planted", "region", "centres")


def _block_counts(start: int, stop: int, frac: float) -> int:
    """Planted rows in [start, stop): floor(stop*f) - floor(start*f) (exact in total)."""
    return int(np.floor(stop * frac)) - int(np.floor(start * frac))


def _gen_block(b: int, n: int, d: int, seed: int, centres: np.ndarray, regions: dict,
               cluster_std: float, region_std: float, planted_frac: float,
               split_cdf: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of generation block ``b``: (x [B,D] f32, labels [B], planted [B], region [B], split [B])."""
    start, stop = b * GEN_BLOCK, min((b + 1) * GEN_BLOCK, n)
    size = stop - start
    rng = np.random.default_rng([seed, b])
    labels = rng.integers(0, len(centres), size).astype(np.int32)  # [B]
    region = np.full(size, -1, dtype=np.int32)
    k = _block_counts(start, stop, planted_frac)
    rows = rng.choice(size, k, replace=False) if k else np.zeros(0, dtype=np.int64)
    region[rows] = rng.integers(0, len(regions["label"]), k)
    planted = region >= 0  # [B]
    labels[planted] = regions["label"][region[planted]]
    mean = centres[labels].copy()  # [B, D]
    mean[planted] = regions["centre"][region[planted]]
    scale = np.where(planted, region_std * cluster_std, cluster_std).astype(np.float32)[:, None]
    x = mean + scale * rng.standard_normal((size, d), dtype=np.float32)  # [B, D]
    split = np.searchsorted(split_cdf, rng.random(size), side="right").astype(np.int8)  # [B]
    return x, labels, planted, region, split


def build_synthetic_embeddings(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    dim: int = 384,
    n_classes: int = 10,
    planted_frac: float = 0.02,
    n_regions: int = 20,
    centre_std: float = 1.0,
    cluster_std: float = 1.0,
    region_shift: float = 0.25,
    region_jitter: float = 0.5,
    region_std: float = 0.5,
    chunk_size: int = 262_144,
    train_frac: float = 0.1,
    pool_frac: float = 0.7,
    test_frac: float = 0.2,
    progress: bool = True,
) -> pathlib.Path:
    """Build the clustered-embeddings dataset; return the path of ``items.parquet``.

    Writes ``embeddings.npy [N, D] float32``, ``labels.npy [N] int32``,
    ``planted.npy [N] bool``, ``region.npy [N] int32``, ``centres.npy [C, D] float32``,
    ``meta.json`` and ``items.parquet`` (``id``, ``label``, ``split``, ``row``; one row
    group per chunk). See the module docstring for the generative model.

    Parameters
    ----------
    n :
        Rows N (default 100 000; tested up to 10 M).
    dim, n_classes :
        D and C.
    planted_frac :
        Fraction of rows in planted regions (exactly ``floor(N * planted_frac)``).
    n_regions :
        Number of planted regions.
    centre_std, cluster_std :
        Spread of class centres and of rows around their centre (per dimension).
    region_shift, region_jitter, region_std :
        Region centre = host centre moved ``region_shift`` of the way toward the planted
        label's centre plus ``region_jitter * cluster_std`` noise; rows spread
        ``region_std * cluster_std`` around it. ``region_shift`` must be < 0.5.
    chunk_size :
        Rows buffered per write and per parquet row group (memory is O(chunk_size * D)).
    train_frac, pool_frac, test_frac :
        Per-row split probabilities.
    progress :
        Show a rich progress bar.
    """
    n = 100_000 if n is None else int(n)
    if n < 1 or dim < 1 or n_classes < 2 or n_regions < 1 or chunk_size < 1:
        raise ConfigError(f"need n >= 1, dim >= 1, n_classes >= 2, n_regions >= 1, chunk_size >= 1; "
                          f"got n={n}, dim={dim}, n_classes={n_classes}, n_regions={n_regions}, "
                          f"chunk_size={chunk_size}")
    if not 0.0 <= planted_frac < 1.0:
        raise ConfigError(f"planted_frac must be in [0, 1), got {planted_frac}")
    if not 0.0 <= region_shift < 0.5:
        raise ConfigError(f"region_shift must be in [0, 0.5) so regions stay nearest their host, got {region_shift}")
    split_cdf = np.cumsum(check_fractions(train_frac, pool_frac, test_frac))[:2]

    rng = np.random.default_rng([seed, 2**31])  # global parameters; blocks use [seed, b]
    centres = (centre_std * rng.standard_normal((n_classes, dim))).astype(np.float32)  # [C, D]
    host = rng.integers(0, n_classes, n_regions)
    plant = (host + rng.integers(1, n_classes, n_regions)) % n_classes  # != host
    region_centre = (centres[host] + region_shift * (centres[plant] - centres[host])
                     + region_jitter * cluster_std * rng.standard_normal((n_regions, dim))).astype(np.float32)
    regions = {"host": host.astype(np.int32), "label": plant.astype(np.int32), "centre": region_centre}

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "centres.npy", centres)
    files = {"embeddings": (np.float32, (n, dim)), "labels": (np.int32, (n,)),
             "planted": (np.bool_, (n,)), "region": (np.int32, (n,))}
    for name, (dtype, shape) in files.items():  # header + sparse file; mapping dropped at once
        header = open_memmap(out_dir / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        del header
    schema = pa.schema([("id", pa.string()), ("label", pa.int64()), ("split", pa.string()), ("row", pa.int64())])
    split_names = np.array(SPLITS, dtype=object)
    width = len(str(n - 1))
    cache: tuple[int, tuple] | None = None
    writer = pq.ParquetWriter(out_dir / ITEMS_FILE, schema)
    try:
        with progress_bar("synthetic-embeddings: writing", n, progress) as advance:
            for a in range(0, n, chunk_size):
                z = min(a + chunk_size, n)
                # Map the files per chunk and unmap after flushing, so written pages leave
                # this process's resident set (RSS stays O(chunk_size * D), not O(N * D)).
                emb = open_memmap(out_dir / "embeddings.npy", mode="r+")
                parts = []  # per generation block: (labels, planted, region, split) slices
                for b in range(a // GEN_BLOCK, (z - 1) // GEN_BLOCK + 1):
                    if cache is None or cache[0] != b:
                        cache = (b, _gen_block(b, n, dim, seed, centres, regions, cluster_std,
                                               region_std, planted_frac, split_cdf))
                    b0 = b * GEN_BLOCK
                    lo, hi = max(a, b0), min(z, b0 + GEN_BLOCK)  # global rows taken from block b
                    x, *rest = cache[1]
                    emb[lo:hi] = x[lo - b0 : hi - b0]
                    parts.append([v[lo - b0 : hi - b0] for v in rest])
                emb.flush()
                del emb
                y, p, r, s = (np.concatenate(v) for v in zip(*parts))  # each [z - a]
                for name, values in (("labels", y), ("planted", p), ("region", r)):
                    arr = open_memmap(out_dir / f"{name}.npy", mode="r+")
                    arr[a:z] = values
                    arr.flush()
                    del arr
                rows = np.arange(a, z, dtype=np.int64)
                ids = pa.array(np.char.add("e", np.char.zfill(rows.astype(str), width)))
                writer.write_table(pa.table([ids, pa.array(y.astype(np.int64)), pa.array(split_names[s], pa.string()),
                                             pa.array(rows)], schema=schema), row_group_size=z - a)
                advance(z - a)
    finally:
        writer.close()
    meta = {"dataset": "synthetic-embeddings", "n": n, "dim": dim, "n_classes": n_classes, "seed": seed,
            "planted_frac": planted_frac, "n_planted": int(np.floor(n * planted_frac)), "n_regions": n_regions,
            "region_host": regions["host"].tolist(), "region_label": regions["label"].tolist(),
            "centre_std": centre_std, "cluster_std": cluster_std, "region_shift": region_shift,
            "region_jitter": region_jitter, "region_std": region_std, "gen_block": GEN_BLOCK,
            "split_fractions": [train_frac, pool_frac, test_frac]}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir / ITEMS_FILE


def load_synthetic_embeddings(out_dir: str | pathlib.Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Load the arrays of a built ``synthetic-embeddings`` folder.

    Returns ``{"embeddings" [N,D], "labels" [N], "planted" [N], "region" [N],
    "centres" [C,D]}``; with ``mmap=True`` the big arrays are read-only memmaps (no copy).

    Raises
    ------
    MmalError
        If a file is missing (names the file and how to build it).
    """
    out_dir = pathlib.Path(out_dir)
    result = {}
    for name in ARRAYS:
        path = out_dir / f"{name}.npy"
        if not path.is_file():
            raise MmalError(f"{path}: missing; build it with `mmal dataset synthetic-embeddings {out_dir}`")
        result[name] = np.load(path, mmap_mode="r" if mmap else None)
    return result
