"""Items files: read Parquet / CSV / JSONL, validate, normalise (DESIGN.md "Items").

Validation is all-or-nothing and happens before anything is written anywhere. Every
failure is an :class:`~mmal.errors.ItemsError` (or :class:`~mmal.errors.MediaError` for a
bad media file) naming the file, the 1-based data row and the column.

Normalised form (a ``pyarrow.Table``):

- ``id`` string, unique, non-empty, no control or line-separator characters (surrounding
  whitespace is an error, not trimmed);
- ``label`` int64, null = unlabeled. The items file's ``label`` column holds either integer
  classes (contiguous 0..C-1, C <= ``MAX_CLASSES``; an optional ``label_name`` column names
  them) or class names (strings; classes = sorted distinct names). The class count and
  names are stored in the table's schema metadata (:func:`class_table`);
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
#: Largest class count a workspace accepts (bounds memory: the heads are [d, C]).
MAX_CLASSES = 10_000
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
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                out[k] = pa.array([None if x is None else json.dumps(x) if isinstance(x, (dict, list)) else str(x) for x in v], pa.string())
        return pa.table(out)
    except ItemsError:
        raise
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, ValueError, OverflowError) as e:
        raise ItemsError(f"cannot parse {fmt} ({type(e).__name__}: {e})", file=path) from None


def _label_value(v, path, row):
    """Return an int label, a class-name string, or None; raise ItemsError for anything else.

    Integers must be in ``0 .. MAX_CLASSES - 1`` (a label of 2e9 would make the model
    allocate terabytes); a string that parses as a number is a number, anything else is
    a class name.
    """
    def bounded(x: int) -> int:
        if not 0 <= x < MAX_CLASSES:
            raise ItemsError(f"label {x} is out of range: integer labels must be 0..{MAX_CLASSES - 1} "
                             "(or use class names)", file=path, row=row, column="label")
        return x

    if v is None:
        return None
    if isinstance(v, bool):
        raise ItemsError(f"label must be an integer, a class name or empty, got boolean {v!r}", file=path, row=row, column="label")
    if isinstance(v, (int, np.integer)):
        return bounded(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return None
        if math.isfinite(v) and v.is_integer():
            return bounded(int(v))
        raise ItemsError(f"label must be an integer, a class name or empty, got {v!r}", file=path, row=row, column="label")
    s = str(v).strip()
    if s == "":
        return None
    try:
        return bounded(int(s))
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        f = None
    if f is not None:
        if math.isfinite(f) and f.is_integer():
            return bounded(int(f))
        raise ItemsError(f"label must be an integer, a class name or empty, got {v!r} (a number that is not an integer)",
                         file=path, row=row, column="label")
    bad = _control_char(s)
    if bad:
        raise ItemsError(f"class name {s!r} contains the control character {bad}", file=path, row=row, column="label")
    return s


def _control_char(s: str) -> str | None:
    """The first control / line-separator character of ``s`` as U+XXXX, or None."""
    import unicodedata

    for ch in s:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(ch):04X}"
    return None


def _resolve_labels(raw: list, names_col: list | None, path, n_classes: int | None = None) -> tuple[list, list[str] | None]:
    """Integer labels and the class-name table (or None) from per-row values of ``_label_value``.

    - all labels integers, no ``label_name`` column: they must be contiguous, 0..C-1 with
      every class present (a gap is almost always a typo, and C sizes the model);
    - all labels class names: classes are the sorted distinct names, label = index;
    - integer labels plus a ``label_name`` column: the (label, name) pairs must be one-to-one
      and the labels contiguous; the names become the class-name table;
    - a mix of integers and names is refused (row named).

    ``n_classes`` (``mmal init --n-classes``) declares the class count of integer labels:
    then gaps are allowed (few labels at the start of active learning) and every label
    must be below it.
    """
    ints = [(i, v) for i, v in enumerate(raw, start=1) if isinstance(v, int)]
    strs = [(i, v) for i, v in enumerate(raw, start=1) if isinstance(v, str)]
    if ints and strs:
        (ri, vi), (rs, vs) = ints[0], strs[0]
        row, what = (rs, f"class name {vs!r} but row {ri} has the integer label {vi}") if rs > ri else \
            (ri, f"integer label {vi} but row {rs} has the class name {vs!r}")
        raise ItemsError(f"label is the {what}; use class names for every label, or integers for every label "
                         "(with a 'label_name' column for their names)", file=path, row=row, column="label")
    if strs:
        if names_col is not None:
            raise ItemsError("a 'label_name' column is only used with integer labels; the 'label' column already holds names",
                             file=path, column="label_name")
        table = sorted({v for _, v in strs})
        index = {n: k for k, n in enumerate(table)}
        return [index[v] if isinstance(v, str) else None for v in raw], table
    labels = list(raw)
    present = sorted({v for _, v in ints})
    names = None
    if names_col is not None:
        by_label: dict[int, tuple[str, int]] = {}
        by_name: dict[str, tuple[int, int]] = {}
        for i, v in ints:
            n = names_col[i - 1]
            n = None if n is None or (isinstance(n, float) and math.isnan(n)) else str(n).strip()
            if not n:
                raise ItemsError(f"labeled row has no class name (label {v})", file=path, row=i, column="label_name")
            bad = _control_char(n)
            if bad:
                raise ItemsError(f"class name {n!r} contains the control character {bad}", file=path, row=i, column="label_name")
            if v in by_label and by_label[v][0] != n:
                raise ItemsError(f"label {v} is named {n!r} here but {by_label[v][0]!r} in row {by_label[v][1]}",
                                 file=path, row=i, column="label_name")
            if n in by_name and by_name[n][0] != v:
                raise ItemsError(f"class name {n!r} has label {v} here but {by_name[n][0]} in row {by_name[n][1]}",
                                 file=path, row=i, column="label_name")
            by_label.setdefault(v, (n, i))
            by_name.setdefault(n, (v, i))
        names = [by_label[k][0] for k in present]
    if n_classes is not None:
        over = [(i, v) for i, v in ints if v >= n_classes]
        if over:
            raise ItemsError(f"label {over[0][1]} is out of range for {n_classes} classes (--n-classes)", file=path,
                             row=over[0][0], column="label")
        if names is not None and len(present) != n_classes:
            raise ItemsError(f"'label_name' names {len(present)} classes but --n-classes is {n_classes}", file=path,
                             column="label_name")
    elif present and present != list(range(len(present))):
        missing = next(k for k in range(present[-1] + 1) if k not in set(present))
        raise ItemsError(f"integer labels must be contiguous from 0 with every class present: no item has label {missing} "
                         f"(labels go up to {present[-1]}); renumber them, use class names, or declare the class count (`mmal init --n-classes N`)",
                         file=path, column="label")
    return labels, names


def validate_items(path, *, probe_media: bool = True, n_frames: int = 3, progress: bool = False,
                   n_classes: int | None = None) -> pa.Table:
    """Read and validate an items file; return the normalised table (see module docstring).

    Parameters
    ----------
    path : items file (.parquet, .csv, .jsonl)
    probe_media : decode every media file once to catch corrupt / truncated / empty files
        (images and audio fully, one frame of each video). Off = existence check only.
    n_classes : declared class count for integer labels (allows gaps); None = labels must be
        contiguous from 0.
    """
    if n_classes is not None and not 1 <= n_classes <= MAX_CLASSES:
        raise ItemsError(f"--n-classes must be 1..{MAX_CLASSES}, got {n_classes}", file=path)
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
        bad = _control_char(s)
        if bad:
            raise ItemsError(f"id {s!r} contains the control character {bad} (ids must be one printable line)",
                             file=path, row=i, column="id")
        if s in seen:
            raise ItemsError(f"duplicate id {s!r} (first seen in row {seen[s]})", file=path, row=i, column="id")
        seen[s] = i
        ids.append(s)

    # ---- label ----------------------------------------------------------------------
    labels = [None] * n
    label_names = None
    if "label_name" in names and "label" not in names:
        raise ItemsError("a 'label_name' column needs a 'label' column", file=path, column="label_name")
    if "label" in names:
        raw = [_label_value(v, path, i) for i, v in enumerate(cols["label"], start=1)]
        labels, label_names = _resolve_labels(raw, cols.get("label_name"), path, n_classes)

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
        if c not in out_cols and c != "label_name":
            out_cols[c] = table.column(c)
    out = pa.table(out_cols)
    count = len(label_names) if label_names else (max((v for v in labels if v is not None), default=-1) + 1)
    if n_classes is not None and not label_names:
        count = n_classes
    meta = {b"mmal.n_classes": str(count).encode()}
    if label_names:
        meta[b"mmal.label_names"] = json.dumps(label_names).encode()
    return out.replace_schema_metadata(meta)


def class_table(table: pa.Table) -> tuple[int, list[str] | None]:
    """(class count, class names or None) recorded by :func:`validate_items` on its table."""
    meta = table.schema.metadata or {}
    names = json.loads(meta[b"mmal.label_names"]) if b"mmal.label_names" in meta else None
    if b"mmal.n_classes" in meta:
        return int(meta[b"mmal.n_classes"]), names
    labels = [v for v in table.column("label").to_pylist() if v is not None]
    return (max(labels) + 1 if labels else 0), names


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
