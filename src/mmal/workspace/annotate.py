"""Batches and labels in the workspace: record a selection, export it, import labels.

Imports are transactions (one SQLite transaction per file: any bad row -> nothing
imported, and the error names the file, row and field) and idempotent by (item id,
round): importing the same file twice changes nothing. A ``kill -9`` at any point leaves
the previous state intact because SQLite (WAL, synchronous=FULL) only makes a committed
transaction visible. Every writer holds the workspace lock (:mod:`mmal.workspace.lock`),
so a ``select`` never runs while an import is half done.

What an import refuses (each: one line, exit 2 from the CLI, nothing imported) is listed
in docs/labelstudio.md ("Importing labels") and docs/reliability.md. A file with several bad
rows is refused with all of them in that one line (the first :data:`MAX_REPORTED`, then
"and N more"), so one round of fixes is enough.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import urllib.parse
from pathlib import Path

import numpy as np

from mmal.errors import LabelImportError, WorkspaceError
from mmal.data import labelstudio as ls
from mmal.workspace import state
from mmal.workspace.lock import workspace_lock
from mmal.workspace.workspace import Workspace

EXPORT_MEDIA = ("text", "image", "video", "audio", "query")
MEDIA_COLUMNS = ("image", "video", "audio")
#: First characters that make a spreadsheet evaluate a cell (OWASP "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: Bad rows of a label file named in its refusal; the rest are counted ("and N more").
MAX_REPORTED = 20


# ---- classes ---------------------------------------------------------------------------------
def label_names(ws: Workspace) -> list[str] | None:
    """The workspace's class names (index = class id), or None when classes are plain integers.

    Reads the workspace's class table when it has one (``Workspace.class_names``), else the
    ``[task] label_names`` list of ``mmal.toml``.
    """
    table = getattr(ws, "class_names", None)
    if callable(table):
        table = table()
    if table:
        return [str(x) for x in table]
    names = ws.config.get("task", {}).get("label_names")
    return [str(x) for x in names] if names else None


def class_choices(ws: Workspace) -> list[str]:
    """What an annotator picks from: the task's class (or level) names, else ``"0"`` .. ``str(n_classes - 1)``."""
    return ws.class_names(max(int(ws.n_classes), 2))


def _add_classes(ws: Workspace, names: list[str] | None, new: list[str], n_classes: int) -> str:
    """Store new classes (after their labels committed) and mark the round's model stale."""
    add = getattr(ws, "add_class_names", None)
    if callable(add) and names is not None:
        add(new)
    else:
        task = ws.config.setdefault("task", {})
        if names is not None:
            task["label_names"] = list(names) + list(new)
        task["n_classes"] = int(n_classes)
        ws.save_config()
    rnd = state.current_round(ws)
    msg = (f"added class(es) {', '.join(repr(x) for x in new)}: the model of round {rnd} no longer matches the "
           f"classes; run `mmal train {ws.dir}` and `mmal score {ws.dir}` before the next select")
    from mmal.utils import atomic_write_bytes

    atomic_write_bytes(ws.round_dir(rnd) / "STALE.json", json.dumps({"reason": msg, "at": time.time()}).encode())
    return msg


# ---- batches ---------------------------------------------------------------------------------
insert_batch = state.insert_batch


def record_batch(ws: Workspace, selection, *, budget: int, round_: int | None = None, info: dict | None = None) -> int:
    """Store a :class:`~mmal.pool.Selection` as a new batch (no exports); returns its batch id."""
    return state.record_batch(ws, selection, budget=budget, round_=round_, info=info)


def batch_rows(ws: Workspace, batch_id: int, con=None) -> list[dict]:
    """The rows of a batch (rank order) with the item's modality values (media paths absolute)."""
    if con is None:
        with ws.db() as c:
            return batch_rows(ws, batch_id, c)
    b = (state.get_batch(ws, batch_id, con).round,)
    rows = state.batch_items(ws, batch_id, con)
    items = ws.items
    pos = {k: i for i, k in enumerate(items.column("id").to_pylist())}
    cols = {c: items.column(c).to_pylist() for c in EXPORT_MEDIA if c in items.column_names}
    out = []
    for item_id, rank, strategy, score, reason in rows:
        r = {"id": item_id, "round": b[0], "batch": batch_id, "rank": rank, "strategy": strategy, "score": score, "reason": reason}
        for c, vals in cols.items():
            r[c] = vals[pos[item_id]]
        r["label"] = None
        out.append(r)
    return out


# ---- exports ---------------------------------------------------------------------------------
#: what a spreadsheet skips before it looks for a formula's first character
FORMULA_LEAD = " \t\r\n"


def _formula_like(v: str) -> bool:
    return v.startswith(FORMULA_PREFIXES) or v.lstrip(FORMULA_LEAD).startswith(FORMULA_PREFIXES)


def neutralise_cell(v):
    """OWASP CSV-injection defence: a string cell starting with ``= + - @ TAB CR``, also after
    leading spaces, tabs or line breaks (``"  =1+1"``, which spreadsheets still evaluate), gets
    a leading ``'`` so spreadsheets show it as text. The importer strips that quote again."""
    if isinstance(v, str) and _formula_like(v):
        return "'" + v
    return v


def unneutralise_cell(v):
    if isinstance(v, str) and len(v) > 1 and v[0] == "'" and _formula_like(v[1:]):
        return v[1:]
    return v


def media_settings(ws: Workspace, media_root=None, media_url=None) -> tuple[Path, bool, str]:
    """(media root, whether it was set explicitly, URL template) from arguments or ``[export]``."""
    cfg = ws.config.get("export", {}) or {}
    root = media_root if media_root is not None else cfg.get("media_root")
    explicit = root is not None
    if root is None:
        src = ws.config.get("task", {}).get("items_source")
        root = Path(src).parent if src else ws.dir
    if media_url is not None:  # the [export] media_url of mmal.toml was checked when the workspace was opened
        from mmal.workspace.schema import check_value

        check_value("export", "media_url", str(media_url), where="--media-url")
    url = media_url if media_url is not None else ws.setting("export", "media_url")
    return Path(root).resolve(), explicit, str(url)


def media_relpath(path: str, root: Path, explicit: bool, item_id: str) -> str:
    """``path`` relative to the media root (POSIX). Outside the root: refused when the root was
    set explicitly (no ``../`` escape), else the absolute path the user gave (default policy)."""
    p = Path(path)
    p = p if p.is_absolute() else (root / p)
    p = Path(os.path.normpath(p))
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        if explicit:
            raise WorkspaceError(f"item {item_id!r}: media path {path} is outside the media root {root}; "
                                 f"move the file under it or set another media_root") from None
        return p.as_posix()


NO_PREDICTIONS = ("no scored pool yet: the Label Studio tasks carry no predictions (pre-annotations); after "
                  "`mmal train` and `mmal score`, `mmal export WS --round N` writes them")


def latest_scored_round(ws: Workspace) -> int | None:
    """The highest round with a scored pool (``rounds/<n>/pool``), or None when nothing is scored yet."""
    d = ws.dir / "rounds"
    have = [int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "pool" / "ids.parquet").exists()] if d.is_dir() else []
    return max(have) if have else None


def model_version(round_: int) -> str:
    """The ``model_version`` of the predictions made by the model of ``round_``."""
    return f"mmal-round-{int(round_)}"


def batch_predictions(ws: Workspace, rows: list[dict]) -> tuple[list[dict | None], str | None]:
    """Per batch row, a Label Studio prediction from the latest scored pool (None without one),
    and the ``model_version`` used (None when nothing is scored yet).

    The result is the pool's most probable class (relevance: level) by name. ``score`` is the
    row's rank scaled into [0, 1) (``rank / len(rows)``): Label Studio's ordering by
    prediction score, ascending, shows the batch in mmal's order.
    """
    n = len(rows)
    return scored_predictions(ws, [(r["id"], r["rank"] / n) for r in rows])


def scored_predictions(ws: Workspace, items: list[tuple[str, float]]) -> tuple[list[dict | None], str | None]:
    """Per ``(item id, score)``, a Label Studio prediction (:func:`mmal.data.labelstudio.prediction`)
    of the latest scored pool's most probable class, carrying ``score`` (None for an item the
    pool lacks), and the ``model_version`` used (None when nothing is scored yet)."""
    rnd = latest_scored_round(ws)
    if rnd is None or not items:
        return [None] * len(items), None
    from mmal.workspace.pool_io import load_pool

    pool = load_pool(ws.round_dir(rnd) / "pool")
    pos = {k: i for i, k in enumerate(pool.ids.tolist())}
    names = class_choices(ws)
    present = [c for c in EXPORT_MEDIA if c in ws.items.column_names]
    version = model_version(rnd)
    out = []
    for item_id, score in items:
        i = pos.get(item_id)
        if i is None:
            out.append(None)
            continue
        k = int(np.argmax(np.asarray(pool.probs[i], dtype=np.float64)))
        out.append(ls.prediction(names[k] if k < len(names) else str(k), score, version, present))
    return out, version


def export_batch(ws: Workspace, batch_id: int, out_dir=None, *, media_root=None, media_url=None, con=None) -> dict[str, Path]:
    """Write the batch as ``batch-<id>.csv``, ``.jsonl``, ``.labelstudio.json`` (tasks) and
    ``.labelstudio-config.xml``. Each file is written to a temp file and renamed into place.

    Media paths are relative to the media root (``[export] media_root``, default: the items
    file's folder); Label Studio media URLs come from the template ``[export] media_url``
    (``{path}``: relative path, URL-quoted; ``{id}``: item id), default
    ``/data/local-files/?d={path}``.
    """
    rows = batch_rows(ws, batch_id, con)
    root, explicit, url_tpl = media_settings(ws, media_root, media_url)
    out_dir = Path(out_dir or ws.dir / "exports")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise WorkspaceError(f"{out_dir}: cannot write exports there (a file is in the way); move it and retry") from None
    rel_rows = []
    for r in rows:
        r2 = dict(r)
        for c in MEDIA_COLUMNS:
            if r2.get(c):
                r2[c] = media_relpath(r2[c], root, explicit, r["id"])
        rel_rows.append(r2)

    def url(col, relpath, item_id):
        return url_tpl.format(path=urllib.parse.quote(relpath), id=urllib.parse.quote(str(item_id), safe=""), column=col)

    present = [c for c in EXPORT_MEDIA if c in ws.items.column_names]
    stem = f"batch-{batch_id:04d}"
    paths = {"csv": out_dir / f"{stem}.csv", "jsonl": out_dir / f"{stem}.jsonl",
             "labelstudio": out_dir / f"{stem}.labelstudio.json", "labelstudio_config": out_dir / f"{stem}.labelstudio-config.xml"}
    cols = list(rel_rows[0].keys()) if rel_rows else ["id", "round", "batch", "rank", "strategy", "score", "reason", *present, "label"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, quoting=csv.QUOTE_ALL, lineterminator="\r\n")  # RFC 4180; OWASP: quote every cell
    w.writeheader()
    for r in rel_rows:
        w.writerow({k: "" if v is None else neutralise_cell(v) for k, v in r.items()})
    preds, _ = batch_predictions(ws, rel_rows)
    tasks = [ls.task(r, present, url, p) for r, p in zip(rel_rows, preds)]
    contents = {
        "csv": buf.getvalue(),
        "jsonl": "".join(json.dumps(r) + "\n" for r in rel_rows),
        "labelstudio": json.dumps(tasks, indent=1),
        "labelstudio_config": ws.task.labelstudio_config(present, class_choices(ws)),
    }
    from mmal.utils import atomic_write_bytes, storage_error

    new = [p for p in paths.values() if not p.exists()]
    try:
        for k, p in paths.items():
            atomic_write_bytes(p, contents[k].encode("utf-8"))  # a full disk: StorageError naming the file
    except BaseException as e:
        for p in new:  # no partial set of a batch's files (a re-export keeps the old complete ones)
            p.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise (storage_error(e, out_dir) or WorkspaceError(f"{out_dir}: cannot write exports ({e.strerror or e})")) from None
        raise
    return paths


def remove_orphan_exports(ws: Workspace) -> list[Path]:
    """Delete export files of batch ids that are not in the database (left by a select killed
    before its commit) and temp files of interrupted writes. Call with the lock held."""
    d = ws.dir / "exports"
    if not d.is_dir():
        return []
    have = state.batch_ids(ws)
    gone = []
    for p in d.iterdir():
        name = p.name
        bid = None
        if name.startswith("batch-") and name[6:10].isdigit():
            bid = int(name[6:10])
        if (bid is not None and bid not in have) or (name.startswith(".batch-") and name.endswith(".tmp")):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def export_round(ws_dir, round_: int, *, media_root=None, media_url=None, out_dir=None) -> dict:
    """Re-export every batch of round ``round_`` (``mmal export WS --round N``); returns
    ``{"round", "batches": {batch_id: {format: path}}}``. Holds the workspace lock."""
    ws = Workspace(ws_dir)
    if isinstance(round_, bool) or not isinstance(round_, int):
        raise WorkspaceError(f"--round must be an integer, got {round_!r}")
    media_settings(ws, media_root, media_url)  # a bad --media-url fails before anything else
    with workspace_lock(ws.dir, f"export --round {round_}"):
        ids = [b.batch_id for b in state.batches(ws, round_)]
        if not ids:
            have = sorted({b.round for b in state.batches(ws)})
            raise WorkspaceError(f"{ws.dir}: round {round_} has no batch (rounds with batches: "
                                 f"{', '.join(map(str, have)) or 'none'}); run `mmal select` first")
        out = {b: {k: str(v) for k, v in export_batch(ws, b, out_dir, media_root=media_root, media_url=media_url).items()}
               for b in ids}
    return {"round": round_, "batches": out, **predictions_info(ws)}


def predictions_info(ws: Workspace) -> dict:
    """What a command that wrote exports reports about their predictions: ``predictions``
    (the ``model_version``, or None) and, when nothing is scored yet, a line in ``notes``."""
    rnd = latest_scored_round(ws)
    if rnd is None:
        return {"predictions": None, "notes": [NO_PREDICTIONS]}
    return {"predictions": model_version(rnd), "notes": []}


# ---- import ----------------------------------------------------------------------------------
def _fail(path, i, msg):
    """A problem of the whole file (``i`` None: LabelImportError now) or of row ``i`` (:class:`RowError`,
    collected by the import so that every bad row is reported)."""
    if i is not None:
        raise ls.RowError(path, i, msg)
    raise LabelImportError(f"{path}: {msg}; nothing imported")


def _refuse(path, problems: list) -> None:
    """Raise one LabelImportError naming every bad row (``problems``: :class:`RowError`), if any.

    One bad row keeps the single-row form ``FILE: row N: what; nothing imported``; several
    give ``FILE: K bad rows; nothing imported: row N: what | row M: what | ... | and J more``.
    """
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    raise LabelImportError(f"{path}: {len(problems)} bad rows; nothing imported: {bad_rows(problems)}")


def bad_rows(problems: list) -> str:
    """``row N: what | row M: what | ... | and J more``: the first :data:`MAX_REPORTED` of
    ``problems`` (:class:`RowError`) in row order."""
    problems = sorted(problems, key=lambda e: e.row)
    shown = " | ".join(f"row {e.row}: {e.detail}" for e in problems[:MAX_REPORTED])
    return shown + (f" | and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else "")


def _parse_csv(path: Path, text: str, problems: list) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    id_col = "item_id" if "item_id" in header else ("id" if "id" in header else None)
    if id_col is None or ls.CONTROL_NAME not in header:
        _fail(path, None, f"header has columns {', '.join(repr(h) for h in header) or 'none'}; expected 'id' (or Label "
                          f"Studio's 'item_id') and 'label', plus optional 'round' and 'annotator'")
    out = []
    for i, r in enumerate(reader, start=1):
        try:
            if None in r:
                _fail(path, i, f"has {len(header) + len(r[None])} fields, the header has {len(header)}")
            r = {k: unneutralise_cell(v) for k, v in r.items()}
            if id_col == "item_id":  # a Label Studio CSV export: 'id' is Label Studio's own task id
                out.append((i, ls.from_min(r, path, i)))
            else:
                out.append((i, {"id": r.get("id"), "label": r.get("label"), "round": r.get("round"),
                                "annotator": r.get("annotator"), "_id_field": "id"}))
        except ls.RowError as e:
            problems.append(e)
    return out


def _parse_rows(path: Path, problems: list) -> list[tuple[int, dict]]:
    """(row number, {id, label, round, annotator, _id_field}) from CSV / JSONL / Label Studio JSON or JSON_MIN.

    A problem of the file raises; a bad row is appended to ``problems`` (:class:`RowError`) and skipped."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        _fail(path, None, f"unknown label file type '{suffix}' (expected .csv, .jsonl, or a Label Studio .json export)")
    if not path.is_file():
        _fail(path, None, "label file does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        _fail(path, None, f"not UTF-8 text (byte {e.start})")
    if not text.strip():
        _fail(path, None, "label file is empty")
    if suffix == ".csv":
        return _parse_csv(path, text, problems)
    if suffix in (".jsonl", ".ndjson"):
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    _fail(path, i, f"invalid JSON ({e.msg})")
                if not isinstance(obj, dict):
                    _fail(path, i, f"expected a JSON object with 'id' and 'label', got {type(obj).__name__}")
                if ls.is_task(obj):
                    out.append((i, ls.from_task(obj, path, i)))
                else:
                    out.append((i, {"id": obj.get("id", obj.get("item_id")), "label": obj.get("label"),
                                    "round": obj.get("round"), "annotator": obj.get("annotator"), "_id_field": "id"}))
            except ls.RowError as e:
                problems.append(e)
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        _fail(path, None, f"invalid JSON at line {e.lineno} ({e.msg})")
    if not isinstance(data, list):
        _fail(path, None, f"expected a Label Studio export (a JSON list of tasks), got a JSON {type(data).__name__}")
    out = []
    for i, t in enumerate(data, start=1):
        try:
            if ls.is_task(t):
                out.append((i, ls.from_task(t, path, i)))
            elif ls.is_min(t):
                out.append((i, ls.from_min(t, path, i)))
            else:
                _fail(path, i, "not a Label Studio task (no 'data') nor a JSON_MIN row (no 'item_id')")
        except ls.RowError as e:
            problems.append(e)
    return out


def _to_label(raw):
    """int class id, a str to look up as a class name, or None when ``raw`` is neither."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    s = str(raw).strip()
    try:
        return int(s)
    except ValueError:
        return s


def _parse_round(raw, path, i, field="round"):
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        _fail(path, i, f"field '{field}': {raw!r} is not a round number")
    try:
        f = float(raw)
    except (TypeError, ValueError):
        _fail(path, i, f"field '{field}': {raw!r} is not an integer")
    if not f.is_integer():
        _fail(path, i, f"field '{field}': {raw!r} is not an integer")
    return int(f)


def import_labels(ws: Workspace, path, *, source: str | None = None, allow_unbatched: bool = False,
                  allow_new_classes: bool = False, lock: bool = True, on_row=None) -> dict:
    """Import a label file in one transaction.

    Returns ``{"rows", "inserted", "updated", "unchanged", "skipped", "new_classes", "warnings"}``.

    A row's label is stored under (item id, round): the row's ``round`` when given (it
    must be a round with a batch holding the item), else the latest round whose batch
    holds the item. Labels for items in no batch are refused unless ``allow_unbatched``
    (then stored under the row's ``round`` if it is an existing round, else round 0, the
    items file's round). Test-split items are always
    refused (their gold labels feed ``evaluate``). A label is a class id or a class name
    of the workspace; an unknown name is refused unless ``allow_new_classes``, which adds
    it to the class table and marks the round's model stale. Rows without a label are
    skipped. Two rows for one item: identical ones count once, conflicting ones are refused.
    Item ids are strings or integers (a float id is refused); an annotator is a string or an
    integer user id (an object is refused, never stored as its string form). Every bad row
    is reported, in one error. The rows are stored by the workspace's one label writer
    (:func:`mmal.workspace.state.put_labels`, one transaction, which keeps the label history);
    ``on_row(i)`` is called inside it after each stored row. Replacing a gold label (one
    from the items file, or of a train item) adds a warning naming the items and their old
    and new labels.
    """
    path = Path(path).resolve()
    if lock:
        with workspace_lock(ws.dir, f"label {path.name}"):
            return import_labels(ws, path, source=source, allow_unbatched=allow_unbatched,
                                 allow_new_classes=allow_new_classes, lock=False, on_row=on_row)
    problems: list = []
    rows = _parse_rows(path, problems)
    return import_rows(ws, rows, where=path, source=source or str(path), problems=problems,
                       allow_unbatched=allow_unbatched, allow_new_classes=allow_new_classes, on_row=on_row)


def import_rows(ws: Workspace, rows: list[tuple[int, dict]], *, where, source: str, problems: list | None = None,
                allow_unbatched: bool = False, allow_new_classes: bool = False, on_row=None) -> dict:
    """The checks and the store of :func:`import_labels` for rows already parsed, e.g. by
    :func:`mmal.data.labelstudio.from_task` from a Label Studio webhook: ``rows`` =
    ``[(row number, {"id", "label", "round", "annotator", "_id_field"})]``, ``where`` names
    their origin in errors (a file, a request). The caller holds the workspace lock.
    Returns what :func:`import_labels` returns."""
    path = where
    problems = [] if problems is None else problems
    names = label_names(ws)
    n_classes = int(ws.n_classes)
    new_names: list[str] = []
    split = state.item_splits(ws)
    batch_rounds: dict[str, set] = {}
    for rnd, items in state.batched_items(ws).items():
        for item_id in items:
            batch_rounds.setdefault(item_id, set()).add(int(rnd))
    max_round = state.current_round(ws)
    parsed: dict[tuple[str, int], tuple[int, int, str | None]] = {}
    skipped = 0
    for i, r in rows:
        try:
            skipped += _check_row(path, i, r, names=names, new_names=new_names, n_classes=n_classes, split=split,
                                  batch_rounds=batch_rounds, max_round=max_round, parsed=parsed,
                                  allow_unbatched=allow_unbatched, allow_new_classes=allow_new_classes)
        except ls.RowError as e:
            problems.append(e)
    _refuse(path, problems)
    stats = {"rows": len(rows), "inserted": 0, "updated": 0, "unchanged": 0, "skipped": skipped,
             "new_classes": list(new_names), "warnings": []}
    new_int_classes = 0
    if allow_new_classes and names is None and parsed:
        top = max(v[0] for v in parsed.values()) + 1
        if top > n_classes:
            new_int_classes = top
    res = state.put_labels(ws, [(item_id, rnd, label, annotator) for (item_id, rnd), (label, _, annotator) in parsed.items()],
                           source=source, on_row=on_row)
    for k in ("inserted", "updated", "unchanged"):
        stats[k] = res[k]
    gold = gold_replaced(ws, res["replaced"], split)
    if gold:
        stats["warnings"].append(gold)
    if new_names:
        stats["warnings"].append(_add_classes(ws, names, new_names, len(names) + len(new_names)))
    elif new_int_classes:
        stats["warnings"].append(_add_classes(ws, None, [str(k) for k in range(n_classes, new_int_classes)], new_int_classes))
    return stats


def gold_replaced(ws: Workspace, replaced: list[dict], split: dict[str, str] | None = None, *, limit: int = 5) -> str | None:
    """The warning for :func:`mmal.workspace.state.put_labels`' ``replaced`` rows that overwrote a
    gold label (from the items file, or of a train item), or None."""
    split = state.item_splits(ws) if split is None else split
    hit = [r for r in replaced if r["old_source"] == "items-file" or split.get(r["id"]) == "train"]
    if not hit:
        return None
    names = ws.class_names()

    def name(k):
        return repr(names[k]) if 0 <= k < len(names) and names[k] != str(k) else str(k)

    shown = ", ".join(f"{r['id']!r} {name(r['old'])} -> {name(r['new'])}" for r in hit[:limit])
    more = f" and {len(hit) - limit} more" if len(hit) > limit else ""
    return (f"replaced the gold (items-file / train) label of {len(hit)} item(s): {shown}{more}; the old values are "
            f"kept in the label history (`mmal info {ws.dir} --history ID`)")


def _check_row(path, i, r, *, names, new_names, n_classes, split, batch_rounds, max_round, parsed,
               allow_unbatched, allow_new_classes) -> int:
    """Check one parsed row and add it to ``parsed``; 1 when it is skipped (no label), else 0.
    A bad row raises :class:`RowError` (the caller collects them)."""
    fid = r.get("_id_field", "id")
    item_id = r.get("id")
    if isinstance(item_id, float):
        _fail(path, i, f"field '{fid}': item ids are strings or integers, got the float {item_id!r}")
    if isinstance(item_id, (dict, list, bool)):
        _fail(path, i, f"field '{fid}': expected an item id, got {type(item_id).__name__}")
    item_id = None if item_id is None else str(item_id).strip()
    if not item_id:
        _fail(path, i, f"field '{fid}' is empty")
    if item_id not in split:
        _fail(path, i, f"field '{fid}': unknown item id {item_id!r}")
    raw = r.get("label")
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return 1
    if split[item_id] == "test":
        _fail(path, i, f"field '{fid}': item {item_id!r} is in the test split; its gold label is not overwritten by imports")
    label = _to_label(raw)
    if label is None:
        _fail(path, i, f"field 'label': {raw!r} is not a class id or a class name")
    if isinstance(label, str):
        if names and label in names:
            label = names.index(label)
        elif names and label in new_names:
            label = len(names) + new_names.index(label)
        elif allow_new_classes and names is not None:
            new_names.append(label)
            label = len(names) + len(new_names) - 1
        else:
            known = ", ".join(repr(x) for x in (names or [])) or f"integers 0..{n_classes - 1}"
            _fail(path, i, f"field 'label': {raw!r} is not a class of this workspace (classes: {known}); "
                           f"to add a class use `mmal label --allow-new-classes`")
    n_now = len(names) + len(new_names) if names else n_classes
    if label < 0:
        _fail(path, i, f"field 'label': {label} is negative")
    if n_now and label >= n_now and not (allow_new_classes and names is None):
        _fail(path, i, f"field 'label': {label} out of range 0..{n_now - 1}"
                       + ("" if names else "; to add a class use `mmal label --allow-new-classes`"))
    rnd = _parse_round(r.get("round"), path, i)
    have = batch_rounds.get(item_id, set())
    if rnd is None:
        if have:
            rnd = max(have)
        elif allow_unbatched:
            rnd = 0
        else:
            _fail(path, i, f"field '{fid}': item {item_id!r} is in no batch; label only selected items, "
                           f"or pass `--allow-unbatched` to store it under round 0")
    elif rnd not in have and not (allow_unbatched and not have and 0 <= rnd <= max_round):
        where = f"its batches are in round(s) {', '.join(map(str, sorted(have)))}" if have else "it is in no batch"
        _fail(path, i, f"field 'round': {rnd} is not a round in which item {item_id!r} was selected ({where})")
    annotator = ls.annotator_value(r.get("annotator"), path, i)
    key = (item_id, rnd)
    if key in parsed and parsed[key][0] != label:
        _fail(path, i, f"field 'label': item {item_id!r} already has label {parsed[key][0]} in row {parsed[key][1]} "
                       f"of this file, now {label}; keep one row per item")
    parsed.setdefault(key, (label, i, annotator))
    return 0
