"""Items files: read Parquet / CSV / JSONL, validate, normalise (DESIGN.md "Items").

Validation is all-or-nothing and happens before anything is written anywhere. Every
failure is an :class:`~mmal.errors.ItemsError` (or :class:`~mmal.errors.MediaError` for a
bad media file) naming the file, the 1-based data row and the column.

Normalised form (a ``pyarrow.Table``):

- ``id`` string, unique, non-empty (surrounding whitespace is an error, not trimmed);
- ``label`` int64, null = unlabeled;
- ``split`` string in ``train`` / ``pool`` / ``test``; when the column is absent, labeled
  rows become ``train`` and unlabeled rows ``pool``; a null split follows the same rule;
- modality columns ``text``, ``query`` (strings) and ``image``, ``video``, ``audio``
  (paths; relative paths resolve against the items file's folder and are stored
  absolute); a null / empty cell means the item lacks that modality (masked later);
- every other column rides along unchanged as metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmal.errors import ItemsError, MediaError

MEDIA_COLUMNS = ("image", "video", "audio")
TEXT_COLUMNS = ("text",)
MODALITY_COLUMNS = ("text", "image", "video", "audio")
SPLITS = ("train", "pool", "test")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def read_table(path) -> pa.Table:
    """Read an items file into an Arrow table without validating it.

    CSV cells are read as strings (so a bad label is reported, not coerced); JSONL is
    parsed line by line so a malformed line is reported by row.
    """
    path = Path(path)
    if not path.exists():
        raise ItemsError("items file does not exist", file=path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ItemsError(
            f"unknown items format '{path.suffix}'; expected one of {sorted(FORMATS)}", file=path
        )
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if fmt == "csv":
            import pyarrow.csv as pcsv

            with open(path, "rb") as f:
                header = f.readline().decode("utf-8", "replace").strip()
            if not header:
                raise ItemsError("file is empty (no header row)", file=path)
            names = next(iter(__import__("csv").reader([header])))
            return pcsv.read_csv(
                path,
                convert_options=pcsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ItemsError(f"invalid JSON ({e.msg})", file=path, row=i) from None
                if not isinstance(obj, dict):
                    raise ItemsError("each line must be a JSON object", file=path, row=i)
                rows.append(obj)
        if not rows:
            raise ItemsError("file has no rows", file=path)
        cols: dict[str, list] = {}
        for r in rows:
            for k in r:
                cols.setdefault(k, [])
        for r in rows:
            for k in cols:
                cols[k].append(r.get(k))
        out = {}
        for k, v in cols.items():
            try:
                out[k] = pa.array(v)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                out[k] = pa.array([None if x is None else json.dumps(x) if isinstance(x, (dict, list)) else str(x) for x in v], pa.string())
        return pa.table(out)
    except ItemsError:
        raise
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, ValueError) as e:
        raise ItemsError(f"cannot parse {fmt} ({type(e).__name__}: {e})", file=path) from None


def _label_value(v, path, row):
    """Return an int label or None; raise ItemsError for anything else."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ItemsError(f"label must be an integer or empty, got boolean {v!r}", file=path, row=row, column="label")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
        raise ItemsError(f"label must be an integer or empty, got {v!r}", file=path, row=row, column="label")
    s = str(v).strip()
    if s == "":
        return None
    try:
        return int(s)
    except ValueError:
        raise ItemsError(f"label must be an integer or empty, got {v!r}", file=path, row=row, column="label") from None


def validate_items(path, *, probe_media: bool = True, n_frames: int = 3, progress: bool = False) -> pa.Table:
    """Read and validate an items file; return the normalised table (see module docstring).

    Parameters
    ----------
    path : items file (.parquet, .csv, .jsonl)
    probe_media : decode every media file once to catch corrupt / truncated / empty files
        (images and audio fully, one frame of each video). Off = existence check only.
    """
    path = Path(path).resolve()
    table = read_table(path)
    names = table.column_names
    if table.num_rows == 0:
        raise ItemsError("file has no rows", file=path)
    if "id" not in names:
        raise ItemsError("required column 'id' is missing", file=path, column="id")
    present_modalities = [c for c in MODALITY_COLUMNS if c in names]
    if not present_modalities:
        raise ItemsError(
            f"no modality column: need at least one of {', '.join(MODALITY_COLUMNS)} (columns found: {', '.join(names)})",
            file=path,
        )
    cols = {n: table.column(n).to_pylist() for n in names}
    n = table.num_rows

    # ---- id -------------------------------------------------------------------------
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, v in enumerate(cols["id"], start=1):
        s = "" if v is None else str(v)
        if s.strip() == "":
            raise ItemsError("id is empty", file=path, row=i, column="id")
        if s != s.strip():
            raise ItemsError(f"id {s!r} has leading/trailing whitespace", file=path, row=i, column="id")
        if s in seen:
            raise ItemsError(f"duplicate id {s!r} (first seen in row {seen[s]})", file=path, row=i, column="id")
        seen[s] = i
        ids.append(s)

    # ---- label ----------------------------------------------------------------------
    labels = [None] * n
    if "label" in names:
        labels = [_label_value(v, path, i) for i, v in enumerate(cols["label"], start=1)]
        for i, lab in enumerate(labels, start=1):
            if lab is not None and lab < 0:
                raise ItemsError(f"label must be >= 0, got {lab}", file=path, row=i, column="label")

    # ---- split ----------------------------------------------------------------------
    splits = []
    for i in range(n):
        v = cols["split"][i] if "split" in names else None
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
            splits.append("train" if labels[i] is not None else "pool")
            continue
        s = str(v).strip()
        if s not in SPLITS:
            raise ItemsError(f"unknown split {s!r}; expected one of {', '.join(SPLITS)}", file=path, row=i + 1, column="split")
        splits.append(s)

    # ---- media paths ----------------------------------------------------------------
    base = path.parent
    media: dict[str, list] = {}
    for c in MEDIA_COLUMNS:
        if c not in names:
            continue
        out = []
        for i, v in enumerate(cols[c], start=1):
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
                out.append(None)
                continue
            p = Path(str(v))
            p = p if p.is_absolute() else (base / p)
            if not p.exists():
                raise ItemsError(f"media file not found: {v} (resolved to {p})", file=path, row=i, column=c)
            out.append(str(p.resolve()))
        media[c] = out
    if probe_media and media:
        _probe_all(path, media, progress)

    # ---- assemble -------------------------------------------------------------------
    out_cols = {
        "id": pa.array(ids, pa.string()),
        "label": pa.array(labels, pa.int64()),
        "split": pa.array(splits, pa.string()),
    }
    for c in ("text", "query"):
        if c in names:
            out_cols[c] = pa.array([None if v is None else str(v) for v in cols[c]], pa.string())
    for c, v in media.items():
        out_cols[c] = pa.array(v, pa.string())
    for c in names:
        if c not in out_cols:
            out_cols[c] = table.column(c)
    return pa.table(out_cols)


def _probe_all(path, media, progress):
    from mmal.data.media import probe
    from mmal.utils import progress_bar

    jobs = [(c, i, p) for c, vals in media.items() for i, p in enumerate(vals, start=1) if p is not None]
    with progress_bar(progress) as bar:
        task = bar.add_task("checking media", total=len(jobs))
        for c, i, p in jobs:
            kind = "video" if c == "video" else c
            try:
                probe(p, kind)
            except MediaError as e:
                raise ItemsError(f"bad media file: {e}", file=path, row=i, column=c) from None
            bar.advance(task)


def modalities_of(table: pa.Table) -> list[str]:
    """Model-level modalities available in a normalised items table.

    ``image`` comes from the ``image`` column, else from ``video`` frames; ``audio`` from the
    ``audio`` column; ``text`` from ``text``.
    """
    names = table.column_names
    out = []
    if "image" in names or "video" in names:
        out.append("image")
    if "text" in names:
        out.append("text")
    if "audio" in names:
        out.append("audio")
    return out
