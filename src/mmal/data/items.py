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
- every other column rides along unchanged as metadata (``mmal init`` accepts only the
  columns it reads unless they are declared metadata: :func:`check_columns`).

Values keep their type or are refused (one line: file, row, column): ``id`` is a string or
an integer (stored as its decimal string; a float, a boolean, bytes or a JSON object is
refused); ``text`` / ``query`` and the media paths are strings (bytes are refused, never
decoded by guess); ``label`` is an integer (an integral float such as ``2.0`` counts), a
class name or empty.
"""

from __future__ import annotations

import difflib
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
#: Columns every task reads (a task adds its own: :attr:`mmal.tasks.base.Task.item_columns`).
KNOWN_COLUMNS = ("id", "label", "label_name", "split", "text", "image", "video", "audio")
#: Parquet schema-metadata key listing the columns a file declares as metadata (the dataset
#: builders of :mod:`mmal.data.datasets` write it), so ``mmal init`` keeps them without a flag.
EXTRA_COLUMNS_KEY = b"mmal.extra_columns"
#: Names people use for a known column: the "did you mean" of :func:`check_columns`.
SYNONYMS = {
    "class": "label", "classes": "label", "labels": "label", "category": "label", "target": "label", "y": "label",
    "class_name": "label_name", "classname": "label_name", "label_names": "label_name",
    "img": "image", "image_path": "image", "picture": "image", "photo": "image", "video_path": "video",
    "clip": "video", "audio_path": "audio", "sound": "audio", "wav": "audio",
    "caption": "text", "description": "text", "title": "text", "sentence": "text",
    "item_id": "id", "uid": "id", "key": "id", "set": "split", "subset": "split", "fold": "split",
    "queries": "query", "search": "query",
}


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
                first = f.readline()
            try:
                header = first.decode("utf-8-sig").strip()
            except UnicodeDecodeError as e:
                raise ItemsError(f"the header row is not UTF-8 text (byte 0x{first[e.start]:02x} at offset {e.start}); "
                                 "save the file as UTF-8", file=path) from None
            if not header:
                raise ItemsError("file is empty (no header row)", file=path)
            names = next(iter(__import__("csv").reader([header])))
            try:
                return pcsv.read_csv(
                    path,
                    convert_options=pcsv.ConvertOptions(
                        column_types={n: pa.string() for n in names},
                        strings_can_be_null=True,
                        null_values=[""],
                    ),
                )
            except pa.ArrowInvalid:
                _raise_if_not_utf8(path)  # pyarrow names no row for a bad byte: find it
                raise
        rows = []
        with open(path, "rb") as f:
            for i, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise ItemsError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1} of line {i}); "
                                     "save the file as UTF-8", file=path, row=i) from None
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
        for k in (*KNOWN_COLUMNS, "query"):
            if k in cols:
                check_types(k, cols[k], path)  # before a mixed column is turned into strings below
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


def _raise_if_not_utf8(path: Path) -> None:
    """ItemsError naming the line (and data row) of the first byte of ``path`` that is not UTF-8; else return."""
    import csv
    import io

    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return
    except UnicodeDecodeError as e:
        start = e.start
    prefix = data[:start].decode("utf-8")
    line = prefix.count("\n") + 1
    # the data row and cell holding the byte: the CSV records before it (a quoted cell may span lines)
    records = list(csv.reader(io.StringIO(prefix, newline="")))
    at_start = prefix.endswith("\n") or not prefix
    record = len(records) + 1 if at_start else len(records)
    header = records[0] if records and (len(records) > 1 or at_start) else None
    field = 0 if at_start else len(records[-1]) - 1
    column = header[field] if header and record > 1 and field < len(header) else None
    col = start - (prefix.rfind("\n") + 1) + 1
    if record <= 1:
        raise ItemsError(f"the header row is not UTF-8 text (byte 0x{data[start]:02x} at column {col}); save the file "
                         "as UTF-8", file=path)
    raise ItemsError(f"not UTF-8 text (byte 0x{data[start]:02x} at line {line}, character {col}); save the file as UTF-8",
                     file=path, row=record - 1, column=column)


def _type_name(v) -> str:
    return {bool: "boolean", int: "integer", float: "float", bytes: "bytes", dict: "JSON object",
            list: "JSON list", str: "string"}.get(type(v), type(v).__name__)


def check_types(column: str, values, path) -> None:
    """ItemsError (file, row, column) for the first value of a known column whose type mmal would
    otherwise rewrite: ids are strings or integers; text, query, split, label_name and media
    paths are strings; labels are numbers or strings. Null cells pass."""
    for i, v in enumerate(values, start=1):
        if v is None or (isinstance(v, float) and math.isnan(v) and column != "id"):
            continue
        if column == "id":
            if isinstance(v, str) or (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))):
                continue
            if isinstance(v, (float, np.floating)):
                raise ItemsError(f"id {v!r} is a floating-point number; ids are strings or integers (a float id "
                                 "column usually comes from integer ids with a missing value: fill it, then write the "
                                 "column as integers or strings)", file=path, row=i, column=column)
        elif column == "label":
            if isinstance(v, (str, int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                continue
            if isinstance(v, (bool, np.bool_)):
                continue  # reported by _label_value with its own message
        elif isinstance(v, str):
            continue
        if isinstance(v, bytes):
            raise ItemsError(f"{column} is bytes ({v[:20]!r}), not a string; mmal does not guess an encoding: "
                             "write the column as UTF-8 strings", file=path, row=i, column=column)
        want = {"id": "a string or an integer", "label": "an integer, a class name or empty"}.get(column, "a string")
        raise ItemsError(f"{column} must be {want}, got {_type_name(v)} {_short(v)}", file=path, row=i, column=column)


def _short(v) -> str:
    s = json.dumps(v) if isinstance(v, (dict, list)) else repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def declared_extra_columns(table: pa.Table) -> list[str]:
    """Columns the file declares as metadata (:data:`EXTRA_COLUMNS_KEY` in its Parquet schema metadata)."""
    meta = table.schema.metadata or {}
    if EXTRA_COLUMNS_KEY not in meta:
        return []
    try:
        names = json.loads(meta[EXTRA_COLUMNS_KEY])
    except (ValueError, UnicodeDecodeError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def suggest(name: str, choices) -> str | None:
    """The known column (or class) ``name`` most likely means: same name in another case, a
    usual synonym (:data:`SYNONYMS`), else the closest by :func:`difflib.get_close_matches`."""
    choices = list(choices)
    low = {c.lower(): c for c in choices}
    key = name.strip().lower()
    if key in low:
        return low[key]
    if SYNONYMS.get(key) in choices:
        return SYNONYMS[key]
    close = difflib.get_close_matches(key, list(low), n=1, cutoff=0.6)
    return low[close[0]] if close else None


def _hint(name: str, choices) -> str:
    s = suggest(name, choices)
    return f" (did you mean '{s}'?)" if s else ""


def _no_modality(names, path) -> ItemsError:
    hints = [f"'{n}'{_hint(n, MODALITY_COLUMNS)}" for n in names if n not in KNOWN_COLUMNS and suggest(n, MODALITY_COLUMNS)]
    tail = f"; {', '.join(hints)} is not a modality column" if hints else ""
    return ItemsError(f"no modality column: need at least one of {', '.join(MODALITY_COLUMNS)} "
                      f"(columns found: {', '.join(names)}){tail}", file=path)


def check_columns(names, path, *, known=KNOWN_COLUMNS, extra=None, declared=(), all_known=()) -> list[str]:
    """The metadata columns of an items file (those ``mmal`` does not read), or ItemsError.

    ``known`` are the columns the workspace's task reads; ``extra`` the columns the user keeps
    as metadata on purpose (``mmal init --extra-columns``; ``True`` = every column); ``declared``
    those the file itself declares (:func:`declared_extra_columns`). Any other column is
    refused in one line, each with a "did you mean" among ``known`` and ``all_known`` (the
    columns of every task) where one is close: a ``class`` column is not silently ignored
    while the items stay unlabeled. A file with no modality column is refused first.
    """
    names = list(names)
    known = list(dict.fromkeys(known))
    if not [c for c in MODALITY_COLUMNS if c in names and c in known]:
        raise _no_modality(names, path)
    choices = list(dict.fromkeys([*known, *all_known]))
    if extra is not None and extra is not True:
        extra = list(extra)
        for c in extra:
            if c in known:
                raise ItemsError(f"--extra-columns names '{c}', a column mmal reads; list only metadata columns",
                                 file=path, column=c)
            if c not in names:
                raise ItemsError(f"--extra-columns names '{c}', which is not a column of the file{_hint(c, names)} "
                                 f"(columns: {', '.join(names)})", file=path)
    meta = [c for c in names if c not in known]
    if extra is True:
        return meta
    allowed = set(extra or ()) | set(declared)
    unknown = [c for c in meta if c not in allowed]
    if unknown:
        keep = ",".join(unknown)
        if len(unknown) == 1:  # the prefix names the column
            what, it = f"unknown column{_hint(unknown[0], choices)}", "it"
        else:
            what, it = "unknown columns " + ", ".join(f"'{c}'{_hint(c, choices)}" for c in unknown), "them"
        raise ItemsError(f"{what}: mmal reads {', '.join(known)}; rename {it}, or keep {it} as metadata with "
                         f"`mmal init --extra-columns {keep}` (or --all-extra-columns)",
                         file=path, column=unknown[0] if len(unknown) == 1 else None)
    return meta


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
    if not isinstance(v, (str, int, float, np.integer, np.floating)):  # bytes, a JSON object or list
        raise ItemsError(f"label must be an integer, a class name or empty, got {_type_name(v)} {_short(v)}",
                         file=path, row=row, column="label")
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


def _resolve_labels(raw: list, names_col: list | None, path, n_classes: int | None = None,
                    classes: list[str] | None = None) -> tuple[list, list[str] | None]:
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

    ``classes`` (``mmal init --classes``) declares the class names, in class-id order: a
    class name in the file must be one of them (a misspelt name is refused with a "did you
    mean", never added as a new class), integer labels index them, and a ``label_name``
    column must agree with them.
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
        if classes is not None:
            for i, v in strs:
                if v not in classes:
                    near = suggest(v, classes)
                    raise ItemsError(f"class {v!r} is not a declared class (--classes {','.join(classes)})"
                                     + (f"; did you mean {near!r}?" if near else ""), file=path, row=i, column="label")
        table = list(classes) if classes is not None else sorted({v for _, v in strs})
        index = {n: k for k, n in enumerate(table)}
        return [index[v] if isinstance(v, str) else None for v in raw], table
    labels = list(raw)
    present = sorted({v for _, v in ints})
    names = None
    if classes is not None:
        n_classes = len(classes)
        for i, v in ints:
            if v >= n_classes:
                raise ItemsError(f"label {v} is out of range for the {n_classes} declared classes (--classes "
                                 f"{','.join(classes)}: ids 0..{n_classes - 1})", file=path, row=i, column="label")
            n = None if names_col is None else names_col[i - 1]
            if n is not None and not (isinstance(n, float) and math.isnan(n)) and str(n).strip() != classes[v]:
                raise ItemsError(f"label {v} is named {str(n).strip()!r} here but the declared class {v} is "
                                 f"{classes[v]!r} (--classes)", file=path, row=i, column="label_name")
        return labels, list(classes)
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
                   n_classes: int | None = None, classes=None) -> pa.Table:
    """Read and validate an items file; return the normalised table (see module docstring).

    Parameters
    ----------
    path : items file (.parquet, .csv, .jsonl)
    probe_media : decode every media file once to catch corrupt / truncated / empty files
        (images and audio fully, one frame of each video). Off = existence check only.
    n_classes : declared class count for integer labels (allows gaps); None = labels must be
        contiguous from 0.
    classes : declared class names in class-id order (``mmal init --classes``); a label
        outside them is refused. None = the classes are the labels found.
    """
    if n_classes is not None and not 1 <= n_classes <= MAX_CLASSES:
        raise ItemsError(f"--n-classes must be 1..{MAX_CLASSES}, got {n_classes}", file=path)
    if classes is not None:
        classes = check_class_names(classes)
        if n_classes is not None and n_classes != len(classes):
            raise ItemsError(f"--n-classes {n_classes} disagrees with the {len(classes)} names of --classes", file=path)
    path = Path(path).resolve()
    table = read_table(path)
    names = table.column_names
    if table.num_rows == 0:
        raise ItemsError("file has no rows", file=path)
    if "id" not in names:
        raise ItemsError("required column 'id' is missing", file=path, column="id")
    present_modalities = [c for c in MODALITY_COLUMNS if c in names]
    if not present_modalities:
        raise _no_modality(names, path)
    cols = {n: table.column(n).to_pylist() for n in names}
    n = table.num_rows
    for c in (*KNOWN_COLUMNS, "query"):
        if c in cols:
            check_types(c, cols[c], path)

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
        labels, label_names = _resolve_labels(raw, cols.get("label_name"), path, n_classes, classes)
    elif classes is not None:
        label_names = list(classes)

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
            out_cols[c] = pa.array([None if v is None or isinstance(v, float) else v for v in cols[c]], pa.string())
    for c, v in media.items():
        out_cols[c] = pa.array(v, pa.string())
    for c in names:
        if c not in out_cols and c != "label_name":
            out_cols[c] = table.column(c)
    out = pa.table(out_cols)
    count = len(label_names) if label_names else (max((v for v in labels if v is not None), default=-1) + 1)
    if n_classes is not None and not label_names:
        count = n_classes
    if classes is not None:
        count = len(classes)
    meta = {b"mmal.n_classes": str(count).encode()}
    if label_names:
        meta[b"mmal.label_names"] = json.dumps(label_names).encode()
    return out.replace_schema_metadata(meta)


def check_class_names(classes) -> list[str]:
    """Declared class names (``--classes``) as a list, or ConfigError: non-empty, distinct, one
    printable line each, not integers (an integer label is a class id), at most ``MAX_CLASSES``."""
    from mmal.errors import ConfigError

    out = [str(c).strip() for c in classes]
    if not out:
        raise ConfigError("--classes: give at least one class name, e.g. --classes cat,dog")
    if len(out) > MAX_CLASSES:
        raise ConfigError(f"--classes: {len(out)} names, at most {MAX_CLASSES}")
    seen = set()
    for c in out:
        if not c:
            raise ConfigError("--classes: an empty class name (two commas in a row?)")
        bad = _control_char(c)
        if bad:
            raise ConfigError(f"--classes: class name {c!r} contains the control character {bad}")
        try:
            float(c)
            raise ConfigError(f"--classes: {c!r} is a number; class names are words (integer labels are the "
                              "class ids 0..C-1 and --classes names them in that order)")
        except ValueError:
            pass
        if c in seen:
            raise ConfigError(f"--classes: {c!r} is named twice")
        seen.add(c)
    return out


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
