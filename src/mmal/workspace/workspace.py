"""Workspace: the project folder and its SQLite state (DESIGN.md "Workspace").

Layout::

    DIR/mmal.toml        task, modalities -> columns, encoders, model, train, select defaults
    DIR/state.sqlite     WAL; items, rounds, batches, batch_items, labels — the source of truth
    DIR/items.parquet    validated copy of the items table (media paths absolute)
    DIR/features/...     feature cache (mmal.features)
    DIR/rounds/<n>/...   model.pt, pool/, selection.parquet, metrics.json

``init_workspace`` validates everything first and builds the workspace in a temporary
sibling folder that is renamed into place, so a failure leaves nothing behind and an
existing workspace is never touched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tomli_w

from mmal.errors import ConfigError, WorkspaceError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    split TEXT NOT NULL CHECK (split IN ('train', 'pool', 'test'))
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    budget INTEGER NOT NULL,
    created_at REAL NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id INTEGER NOT NULL REFERENCES batches(batch_id),
    item_id TEXT NOT NULL REFERENCES items(id),
    rank INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    score REAL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (batch_id, item_id)
);
CREATE TABLE IF NOT EXISTS labels (
    item_id TEXT NOT NULL REFERENCES items(id),
    round INTEGER NOT NULL,
    label INTEGER NOT NULL,
    source TEXT NOT NULL,
    annotator TEXT,
    imported_at REAL NOT NULL,
    PRIMARY KEY (item_id, round)
);
"""


def default_config(task: str, modalities: list[str], n_classes: int, items_source: str) -> dict:
    """The ``mmal.toml`` written by ``mmal init``; every value is a documented default."""
    enc = {}
    if "text" in modalities:
        enc["text"] = "text:minilm"
    if "image" in modalities:
        enc["image"] = "image:efficientnet-lite0"
    if "audio" in modalities:
        enc["audio"] = "audio:whisper-tiny.en"
    return {
        "task": {"type": task, "n_classes": n_classes, "items_source": items_source},
        "modalities": {m: True for m in modalities},
        "encoders": enc,
        "encode": {"n_frames": 3, "batch_size": 16, "whisper_pad_to_30s": False},
        # the learner and its own settings (mmal.learners); [train] takes TrainConfig fields for torch learners
        "model": {"learner": "late-fusion", "fusion": "vlmae" if "audio" in modalities else "none"},
        "train": {"seed": 0},
        "select": {"strategy": "entropy", "budget": 50},
    }


def init_workspace(directory, items_file, *, task: str = "classify", force: bool = False, progress: bool = False) -> "Workspace":
    """Validate ``items_file`` and create a workspace at ``directory``.

    Raises before writing anything if the items are invalid, or if ``directory`` already
    holds a workspace (unless ``force``; even then the old one is only replaced once the
    new one is complete).
    """
    from mmal.data.items import modalities_of, validate_items

    if task not in ("classify", "relevance"):
        raise ConfigError(f"--task must be 'classify' or 'relevance', got {task!r}")
    directory = Path(directory).resolve()
    if (directory / "mmal.toml").exists() and not force:
        raise WorkspaceError(f"{directory} is already a workspace (use --force to replace it)")
    if directory.exists() and not directory.is_dir():
        raise WorkspaceError(f"{directory} exists and is not a directory")
    if directory.exists() and any(directory.iterdir()) and not (directory / "mmal.toml").exists():
        raise WorkspaceError(f"{directory} exists and is not empty; choose a new folder")
    table = validate_items(items_file, progress=progress)
    labels = [x for x in table.column("label").to_pylist() if x is not None]
    n_classes = (max(labels) + 1) if labels else 0
    if "n_classes" in table.schema.metadata_keys if table.schema.metadata else False:  # pragma: no cover
        pass
    modalities = modalities_of(table)
    cfg = default_config(task, modalities, int(n_classes), str(Path(items_file).resolve()))

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init.", dir=directory.parent))
    try:
        (tmp / "mmal.toml").write_text(tomli_w.dumps(cfg))
        pq.write_table(table, tmp / "items.parquet")
        con = sqlite3.connect(tmp / "state.sqlite")
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            now = time.time()
            with con:
                con.execute("INSERT INTO meta VALUES ('version', '1')")
                con.executemany(
                    "INSERT INTO items (id, split) VALUES (?, ?)",
                    zip(table.column("id").to_pylist(), table.column("split").to_pylist()),
                )
                con.executemany(
                    "INSERT INTO labels (item_id, round, label, source, annotator, imported_at) VALUES (?, 0, ?, 'items-file', NULL, ?)",
                    [(i, lab, now) for i, lab in zip(table.column("id").to_pylist(), table.column("label").to_pylist()) if lab is not None],
                )
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        for sub in ("features", "rounds", "reports"):
            (tmp / sub).mkdir()
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Workspace(directory)


class Workspace:
    """Handle on an existing workspace folder."""

    def __init__(self, directory):
        self.dir = Path(directory).resolve()
        if not (self.dir / "mmal.toml").exists():
            raise WorkspaceError(f"{self.dir} is not a workspace (no mmal.toml); run `mmal init` first")
        try:
            self.config = tomllib.loads((self.dir / "mmal.toml").read_text())
        except tomllib.TOMLDecodeError as e:
            raise WorkspaceError(f"{self.dir / 'mmal.toml'}: invalid TOML ({e})") from None
        self._items = None

    # ---- paths ----------------------------------------------------------------------
    @property
    def features_dir(self) -> Path:
        return self.dir / "features"

    def round_dir(self, n: int) -> Path:
        return self.dir / "rounds" / str(int(n))

    # ---- items ----------------------------------------------------------------------
    @property
    def items(self) -> pa.Table:
        if self._items is None:
            self._items = pq.read_table(self.dir / "items.parquet")
        return self._items

    @property
    def modalities(self) -> list[str]:
        return [m for m, on in self.config.get("modalities", {}).items() if on]

    @property
    def n_classes(self) -> int:
        return int(self.config["task"]["n_classes"])

    # ---- state ----------------------------------------------------------------------
    @contextmanager
    def db(self):
        """A SQLite connection (WAL, foreign keys on); commits on success, rolls back on error."""
        con = sqlite3.connect(self.dir / "state.sqlite", timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=FULL")
            yield con
        finally:
            con.close()

    def current_labels(self) -> dict[str, int]:
        """Latest label per item (highest round wins; later import in the same round replaces)."""
        with self.db() as con:
            rows = con.execute(
                "SELECT item_id, label FROM labels l WHERE round = (SELECT MAX(round) FROM labels WHERE item_id = l.item_id)"
            ).fetchall()
        return {i: int(lab) for i, lab in rows}

    def counts(self) -> dict:
        with self.db() as con:
            n_items = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            by_split = dict(con.execute("SELECT split, COUNT(*) FROM items GROUP BY split").fetchall())
            n_labeled = con.execute("SELECT COUNT(DISTINCT item_id) FROM labels").fetchone()[0]
            n_rounds = con.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
            n_batches = con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        return {"items": n_items, "splits": by_split, "labeled": n_labeled, "rounds": n_rounds, "batches": n_batches}

    def save_config(self) -> None:
        from mmal.utils import atomic_write_bytes

        atomic_write_bytes(self.dir / "mmal.toml", tomli_w.dumps(self.config).encode())
