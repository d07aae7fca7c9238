"""Batches and labels in the workspace: record a selection, export it, import labels.

Imports are transactions (one SQLite transaction per file: any bad row -> nothing
imported, and the error names the row) and idempotent by (item id, round): importing
the same file twice changes nothing. A ``kill -9`` at any point leaves the previous
state intact because SQLite (WAL, synchronous=FULL) only makes a committed
transaction visible.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

from mmal.errors import LabelImportError, WorkspaceError
from mmal.workspace.workspace import Workspace

EXPORT_MEDIA = ("text", "image", "video", "audio", "query")


def label_names(ws: Workspace) -> list[str] | None:
    names = ws.config.get("task", {}).get("label_names")
    return list(names) if names else None


def record_batch(ws: Workspace, selection, *, budget: int, round_: int | None = None, info: dict | None = None) -> int:
    """Store a :class:`~mmal.select.Selection` as a new batch; returns its batch id."""
    now = time.time()
    with ws.db() as con:
        with con:
            if round_ is None:
                round_ = (con.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0]) + 1
            con.execute(
                "INSERT OR IGNORE INTO rounds (round, created_at, status, info) VALUES (?, ?, 'selected', '{}')",
                (round_, now),
            )
            strategy_spec = (info or {}).get("spec") or ",".join(dict.fromkeys(str(s) for s in selection.strategy))
            cur = con.execute(
                "INSERT INTO batches (round, strategy, budget, created_at, info) VALUES (?, ?, ?, ?, ?)",
                (round_, strategy_spec, int(budget), now, json.dumps(info or selection.info, default=float)),
            )
            batch_id = cur.lastrowid
            con.executemany(
                "INSERT INTO batch_items (batch_id, item_id, rank, strategy, score, reason) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (batch_id, i, r, str(s), None if sc != sc else float(sc), str(re))
                    for r, (i, s, sc, re) in enumerate(zip(selection.ids.tolist(), selection.strategy, selection.score, selection.reason))
                ],
            )
    return int(batch_id)


def batch_rows(ws: Workspace, batch_id: int) -> list[dict]:
    with ws.db() as con:
        b = con.execute("SELECT round FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if b is None:
            raise WorkspaceError(f"no batch {batch_id} in {ws.dir}")
        rows = con.execute(
            "SELECT item_id, rank, strategy, score, reason FROM batch_items WHERE batch_id = ? ORDER BY rank", (batch_id,)
        ).fetchall()
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


def export_batch(ws: Workspace, batch_id: int, out_dir=None) -> dict[str, Path]:
    """Write the batch as ``batch-<id>.csv``, ``.jsonl`` and ``.labelstudio.json`` (Label Studio tasks)."""
    rows = batch_rows(ws, batch_id)
    out_dir = Path(out_dir or ws.dir / "exports")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"batch-{batch_id:04d}"
    paths = {"csv": stem.with_suffix(".csv"), "jsonl": stem.with_suffix(".jsonl"), "labelstudio": Path(f"{stem}.labelstudio.json")}
    cols = list(rows[0].keys()) if rows else ["id", "label"]
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = label_names(ws)
    tasks = []
    for r in rows:
        data = {"item_id": r["id"], "round": r["round"], "strategy": r["strategy"], "reason": r["reason"]}
        for c in EXPORT_MEDIA:
            if r.get(c):
                data[c] = r[c] if c in ("text", "query") else f"/data/local-files/?d={r[c]}"
                if c not in ("text", "query"):
                    data[f"{c}_path"] = r[c]
        tasks.append({"data": data, "meta": {"mmal_batch": batch_id}})
    paths["labelstudio"].write_text(json.dumps(tasks, indent=1))
    (out_dir / f"batch-{batch_id:04d}.labelstudio-config.xml").write_text(_ls_config(names, ws.n_classes))
    return paths


def _ls_config(names, n_classes) -> str:
    choices = names or [str(i) for i in range(max(n_classes, 2))]
    opts = "\n".join(f'    <Choice value="{c}"/>' for c in choices)
    return (
        "<View>\n  <Image name=\"image\" value=\"$image\"/>\n  <Text name=\"text\" value=\"$text\"/>\n"
        "  <Audio name=\"audio\" value=\"$audio\"/>\n"
        f"  <Choices name=\"label\" toName=\"text\" choice=\"single\">\n{opts}\n  </Choices>\n</View>\n"
    )


# ---- import ---------------------------------------------------------------------------
def _parse_rows(path: Path) -> list[tuple[int, dict]]:
    """(row number, {id, label, round?, annotator?}) from CSV / JSONL / Label Studio JSON."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise LabelImportError(f"{path}: label file does not exist")
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return [(i, dict(r)) for i, r in enumerate(csv.DictReader(f), start=1)]
        if suffix in (".jsonl", ".ndjson"):
            out = []
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            out.append((i, json.loads(line)))
                        except json.JSONDecodeError as e:
                            raise LabelImportError(f"{path}: row {i}: invalid JSON ({e.msg}); nothing imported") from None
            return out
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise LabelImportError(f"{path}: expected a Label Studio export (a JSON list of tasks); nothing imported")
            return [(i, _from_labelstudio(t, path, i)) for i, t in enumerate(data, start=1)]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelImportError(f"{path}: cannot parse ({e}); nothing imported") from None
    raise LabelImportError(f"{path}: unknown label file type '{suffix}' (expected .csv, .jsonl or Label Studio .json)")


def _from_labelstudio(task, path, i) -> dict:
    if not isinstance(task, dict) or "data" not in task:
        raise LabelImportError(f"{path}: row {i}: not a Label Studio task (no 'data'); nothing imported")
    data = task["data"]
    anns = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
    label, annotator = None, None
    if anns:
        ann = anns[-1]
        annotator = str(ann.get("completed_by", "")) or None
        for res in ann.get("result", []):
            choices = res.get("value", {}).get("choices")
            if choices:
                label = choices[0]
                break
    return {"id": data.get("item_id", data.get("id")), "label": label, "round": data.get("round"), "annotator": annotator}


def import_labels(ws: Workspace, path, *, source: str | None = None) -> dict:
    """Import a label file in one transaction. Returns ``{"rows", "inserted", "updated", "unchanged", "skipped"}``.

    Rows without a label (empty cell / no annotation) are skipped. Each label is stored
    under (item id, round), where round is the row's ``round`` column if present, else the
    round of the latest batch that contains the item, else 0.
    """
    path = Path(path).resolve()
    rows = _parse_rows(path)
    names = label_names(ws)
    n_classes = ws.n_classes
    with ws.db() as con:
        known = {r[0] for r in con.execute("SELECT id FROM items")}
        item_round = dict(con.execute(
            "SELECT bi.item_id, MAX(b.round) FROM batch_items bi JOIN batches b USING (batch_id) GROUP BY bi.item_id"
        ).fetchall())
    parsed = []
    skipped = 0
    for i, r in rows:
        item_id = r.get("id", r.get("item_id"))
        item_id = None if item_id is None else str(item_id)
        if not item_id:
            raise LabelImportError(f"{path}: row {i}: field 'id' is empty; nothing imported")
        if item_id not in known:
            raise LabelImportError(f"{path}: row {i}: field 'id': unknown item id {item_id!r}; nothing imported")
        raw = r.get("label")
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            skipped += 1
            continue
        label = _to_label(raw, names)
        if label is None:
            raise LabelImportError(f"{path}: row {i}: field 'label': {raw!r} is not an integer class or a known class name; nothing imported")
        if n_classes and not (0 <= label < n_classes):
            raise LabelImportError(f"{path}: row {i}: field 'label': {label} out of range 0..{n_classes - 1}; nothing imported")
        if label < 0:
            raise LabelImportError(f"{path}: row {i}: field 'label': {label} is negative; nothing imported")
        rnd = r.get("round")
        try:
            rnd = int(rnd) if rnd not in (None, "") else int(item_round.get(item_id, 0))
        except (TypeError, ValueError):
            raise LabelImportError(f"{path}: row {i}: field 'round': {rnd!r} is not an integer; nothing imported") from None
        parsed.append((item_id, rnd, label, r.get("annotator") or None))
    stats = {"rows": len(rows), "inserted": 0, "updated": 0, "unchanged": 0, "skipped": skipped}
    delay = float(os.environ.get("MMAL_TEST_IMPORT_DELAY", "0") or 0)  # test hook: widen the kill window
    src = source or str(path)
    now = time.time()
    with ws.db() as con:
        try:
            con.execute("BEGIN IMMEDIATE")
            if delay:
                Path(str(path) + ".importing").write_text("1")
            for item_id, rnd, label, annotator in parsed:
                old = con.execute("SELECT label FROM labels WHERE item_id = ? AND round = ?", (item_id, rnd)).fetchone()
                if old is not None and int(old[0]) == label:
                    stats["unchanged"] += 1
                    continue
                con.execute(
                    "INSERT INTO labels (item_id, round, label, source, annotator, imported_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(item_id, round) DO UPDATE SET label = excluded.label, source = excluded.source, "
                    "annotator = excluded.annotator, imported_at = excluded.imported_at",
                    (item_id, rnd, label, src, annotator, now),
                )
                stats["updated" if old is not None else "inserted"] += 1
                if delay:
                    time.sleep(delay)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return stats


def _to_label(raw, names):
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    s = str(raw).strip()
    if names and s in names:
        return names.index(s)
    try:
        return int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None
