"""Workspace: the project folder and its SQLite state (DESIGN.md "Workspace").

Layout::

    DIR/mmal.toml        task, modalities -> columns, encoders, model, train, select defaults
    DIR/state.sqlite     WAL; items, rounds, batches, batch_items, labels, label_history — the source of truth
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
from mmal.utils import npy_problem
from mmal.workspace.state import HISTORY_SCHEMA, record_history

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


def default_config(task: str, modalities: list[str], n_classes: int, items_source: str,
                   label_names: list[str] | None = None) -> dict:
    """The ``mmal.toml`` written by ``mmal init``: only what differs per workspace.

    The task, its classes, the modalities and their encoders. Everything else (the learner,
    its settings, training, selection) takes the defaults that the code states once
    (:mod:`mmal.workspace.schema`, built from the learners' and the trainer's dataclasses;
    ``mmal config DIR`` prints the effective values); any key of the schema may be added to
    override them.
    """
    enc = {}
    if "text" in modalities:
        enc["text"] = "text:minilm"
    if "image" in modalities:
        enc["image"] = "image:efficientnet-lite0"
    if "audio" in modalities:
        enc["audio"] = "audio:whisper-tiny.en"
    task_cfg = {"type": task, "n_classes": n_classes, "items_source": items_source}
    if label_names:
        task_cfg["label_names"] = list(label_names)
    return {"task": task_cfg, "modalities": {m: True for m in modalities}, "encoders": enc}


def init_workspace(directory, items_file, *, task: str | None = None, force: bool = False, progress: bool = False,
                   n_classes: int | None = None, classes=None, extra_columns=None) -> "Workspace":
    """Validate ``items_file`` and create a workspace at ``directory``.

    ``task`` is ``binary``, ``multiclass`` or ``relevance`` (:mod:`mmal.tasks`); ``None``
    infers it (a ``query`` column -> relevance, two classes -> binary, else multiclass).
    Raises before writing anything if the items are invalid, or if ``directory`` already
    holds a workspace (unless ``force``; even then the old one is only replaced once the
    new one is complete). ``n_classes`` declares the class count of integer labels (see
    :func:`mmal.data.items.validate_items`); class names, from the items file or declared
    by ``classes`` (then every class name in the file must be one of them), go to
    ``[task] label_names``.

    Columns: the file may hold only the columns its task reads
    (:data:`mmal.data.items.KNOWN_COLUMNS` plus :attr:`mmal.tasks.base.Task.item_columns`),
    metadata columns the file declares itself (the dataset builders do), and those named
    in ``extra_columns`` (``True`` = keep every column); any other column is refused with a
    "did you mean" (:func:`mmal.data.items.check_columns`).
    """
    from mmal.data.items import (KNOWN_COLUMNS, check_class_names, check_columns, class_table,
                                 declared_extra_columns, modalities_of, read_table, validate_items)
    from mmal.tasks import TASKS, get_task, infer_task

    items_file = Path(items_file).resolve()
    chosen = None if task is None else get_task(task)
    directory = Path(directory).resolve()
    if (directory / "mmal.toml").exists() and not force:
        n = labels_since_init(directory / "state.sqlite")  # --force starts again from the items file
        if n == 0:
            raise WorkspaceError(f"{directory} is already a workspace (use --force to replace it)")
        lose = "every label imported since it was created" if n is None else f"its {n} label{'s' * (n != 1)} imported since"
        raise WorkspaceError(f"{directory} is already a workspace; choose another folder (--force would replace it and "
                             f"lose {lose})")
    if directory.exists() and not directory.is_dir():
        raise WorkspaceError(f"{directory} exists and is not a directory")
    if directory.exists() and any(directory.iterdir()) and not (directory / "mmal.toml").exists():
        raise WorkspaceError(f"{directory} exists and is not empty; choose a new folder")
    if classes is not None:
        classes = check_class_names(classes)
        if n_classes is not None and int(n_classes) != len(classes):
            raise ConfigError(f"--n-classes {n_classes} disagrees with the {len(classes)} names of --classes")
    raw = read_table(items_file)
    chosen = chosen or infer_task(raw.column_names, None)  # None: decided by the class count below
    reads = (chosen or TASKS["multiclass"]).item_columns  # binary and multiclass read the same columns
    check_columns(raw.column_names, items_file, known=(*KNOWN_COLUMNS, *reads), extra=extra_columns,
                  declared=declared_extra_columns(raw), all_known=[c for t in TASKS.values() for c in t.item_columns])
    if chosen is not None and classes is not None and list(chosen.classes(len(classes), classes)[1] or []) != classes:
        raise ConfigError(f"--classes does not apply to the {chosen.name} task: its classes are "
                          f"{', '.join(chosen.class_names(len(classes)))}")
    if chosen is not None:  # the task's own rules first (relevance: a query per row, levels 0..3)
        chosen.check_items(raw, items_file)
        n_classes = chosen.declared_classes(n_classes) if classes is None else n_classes
    table = validate_items(items_file, progress=progress, n_classes=n_classes, classes=classes)
    n_classes, label_names = class_table(table)
    chosen = chosen or infer_task(table.column_names, n_classes)
    chosen.check_n_classes(n_classes, str(items_file))
    n_classes, label_names = chosen.classes(n_classes, label_names)
    if classes is not None and list(label_names or []) != list(classes):
        raise ConfigError(f"--classes does not apply to the {chosen.name} task: its classes are "
                          f"{', '.join(chosen.class_names(n_classes, label_names))}")
    modalities = modalities_of(table)
    cfg = default_config(chosen.name, modalities, int(n_classes), str(items_file), label_names)

    from mmal.errors import MmalError
    from mmal.utils import guard_write, storage_error

    # a full or read-only disk: one line naming the folder and the free space; nothing is left behind
    # and an existing workspace is untouched
    done = "nothing was created" if not directory.exists() else "the existing workspace was not changed"
    with guard_write(directory, done=done):
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init.", dir=directory.parent))
    try:
        (tmp / "mmal.toml").write_text(tomli_w.dumps(cfg))
        pq.write_table(table, tmp / "items.parquet")
        con = sqlite3.connect(tmp / "state.sqlite")
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            con.executescript(HISTORY_SCHEMA)
            now = time.time()
            with con:
                con.execute("INSERT INTO meta VALUES ('version', '1')")
                con.executemany(
                    "INSERT INTO items (id, split) VALUES (?, ?)",
                    zip(table.column("id").to_pylist(), table.column("split").to_pylist()),
                )
                first = [(i, lab, now) for i, lab in zip(table.column("id").to_pylist(), table.column("label").to_pylist())
                         if lab is not None]
                con.executemany(
                    "INSERT INTO labels (item_id, round, label, source, annotator, imported_at) VALUES (?, 0, ?, 'items-file', NULL, ?)",
                    first,
                )
                record_history(con, [(i, 0, None, None, lab) for i, lab, _ in first], source="items-file",
                               annotator=None, at=now)
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
    except BaseException as e:
        # ask the disk why before removing what the failed write took
        err = None if isinstance(e, MmalError) or not isinstance(e, Exception) else storage_error(e, directory, done=done)
        shutil.rmtree(tmp, ignore_errors=True)
        if err is not None:
            raise err from None
        raise
    return Workspace(directory)


#: what to do about a missing or damaged database when nobody can tell what labels it held:
#: never "re-run `mmal init`" alone, which would throw away every label imported since
RESTORE = ("restore it from a backup (re-running `mmal init` would start again from the items file and lose "
           "every label imported since)")
#: tables every workspace database has (SCHEMA above)
TABLES = ("meta", "items", "rounds", "batches", "batch_items", "labels")


def _sqlite_uri(path: Path, mode: str = "rw") -> str:
    from urllib.parse import quote

    return "file:" + quote(str(path)) + f"?mode={mode}"


def labels_since_init(db: Path) -> int | None:
    """How many stored labels did not come from the items file (``mmal init`` would lose them),
    or None when the database cannot be read."""
    db = Path(db)
    # read only, creating nothing: without a -wal file every committed row is in the main file, which
    # SQLite then reads as immutable (no -shm / -wal of its own); with one, a plain read-only open
    mode = "ro" if db.with_name(db.name + "-wal").exists() else "ro&immutable=1"
    try:
        if not db.is_file():
            return None
        con = sqlite3.connect(_sqlite_uri(db, mode), uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM labels WHERE source != 'items-file'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return None


def restore_advice(db: Path) -> str:
    """What to do about a damaged part of a workspace whose database ``db`` is intact: re-running
    ``mmal init`` is offered only when every stored label came from the items file."""
    n = labels_since_init(db)
    if n == 0:
        return "restore it from a backup or re-run `mmal init --force` (every stored label came from the items file)"
    if n is None:
        return RESTORE
    return (f"restore it from a backup (re-running `mmal init` would lose the {n} label{'s' * (n != 1)} "
            "imported since the workspace was created)")


def db_error(path: Path, e: sqlite3.Error, *, done: str = "") -> WorkspaceError:
    """The one line for a SQLite error on the workspace database ``path``: locked by another
    command, cannot write (a full or read-only disk: :func:`mmal.utils.storage_error`, naming
    the free space), or damaged (restore it)."""
    from mmal.utils import storage_error

    msg = str(e)
    if "locked" in msg or "busy" in msg:
        return WorkspaceError(f"{path}: the workspace database is locked by another mmal command; try again")
    err = storage_error(e, path, done=done)
    if err is not None:
        return err
    return WorkspaceError(f"{path}: workspace database is damaged ({e}); {RESTORE}")


_CHECKED: set[tuple] = set()  # databases that passed check_database in this process


def check_database(path: Path) -> None:
    """WorkspaceError (one line, naming the file) unless ``path`` is an intact workspace database.

    Opens with ``mode=rw`` (never creates a file) and writes nothing: a missing, empty,
    zeroed, truncated or foreign file is refused before any command touches it. A database
    that cannot be opened because of its disk (read-only, full: SQLite needs room for its
    ``-wal`` / ``-shm`` files even to read) says so, with the free space, instead of calling
    it damaged.
    ``PRAGMA quick_check`` reads the whole file (about 0.5 s for 200 000 items and labels),
    so it runs once per process and database file (inode); later opens only check that the
    file is still there.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"{path}: workspace database is missing; {RESTORE}")
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino)
    if key in _CHECKED:
        return
    reading = "SQLite writes its -wal and -shm files beside the database even to read it"
    try:
        con = sqlite3.connect(_sqlite_uri(path), uri=True, timeout=30)
    except sqlite3.Error as e:
        raise db_error(path, e, done=reading) from None
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            raise WorkspaceError(f"{path}: workspace database is damaged ({rows[0][0]}); {RESTORE}")
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in TABLES if t not in have]
        if missing:
            raise WorkspaceError(f"{path}: not a workspace database (no table {missing[0]!r}); {RESTORE}")
        _CHECKED.add(key)
    except sqlite3.Error as e:
        raise db_error(path, e, done=reading) from None
    finally:
        con.close()


def check_npy_files(folder: Path, *, fix: str) -> None:
    """WorkspaceError naming the first ``.npy`` file under ``folder`` whose size does not match its header.

    A truncated array (disk full, a copy cut short) would otherwise fail deep inside a
    memmap with a traceback, or read garbage.
    """
    import numpy as np

    for p in sorted(Path(folder).rglob("*.npy")):
        problem = npy_problem(p)
        if problem:
            raise WorkspaceError(f"{p}: {problem}; {fix}")


def check_parquet_files(folder: Path, *, fix: str) -> None:
    """WorkspaceError naming the first ``.parquet`` file under ``folder`` whose footer cannot be read."""
    for p in sorted(Path(folder).rglob("*.parquet")):
        try:
            pq.read_metadata(p)
        except (pa.ArrowException, OSError) as e:
            raise WorkspaceError(f"{p}: truncated or damaged table ({type(e).__name__}: {e}); {fix}") from None


class Workspace:
    """Handle on an existing workspace folder.

    Opening checks, before anything else happens: ``mmal.toml`` parses and passes
    :func:`mmal.workspace.schema.validate_config`; ``state.sqlite`` exists and is an intact
    workspace database (:func:`check_database`); ``items.parquet`` exists. Any failure is one
    :class:`~mmal.errors.WorkspaceError` / :class:`~mmal.errors.ConfigError` line naming
    the file, and nothing is written.
    """

    def __init__(self, directory, *, check_db: bool = True):
        """``check_db=False`` skips :func:`check_database` (the file must still exist, and every
        connection still opens with ``mode=rw``)."""
        from mmal.workspace.schema import validate_config

        self.dir = Path(directory).resolve()
        toml_path = self.dir / "mmal.toml"
        if not toml_path.exists():
            raise WorkspaceError(f"{self.dir} is not a workspace (no mmal.toml); run `mmal init` first")
        try:
            self.config = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise WorkspaceError(f"{toml_path}: invalid TOML ({e}); fix it or restore it from a backup") from None
        except UnicodeDecodeError:
            raise WorkspaceError(f"{toml_path}: not UTF-8 text; restore it from a backup") from None
        validate_config(self.config, toml_path)
        if check_db:
            check_database(self.dir / "state.sqlite")
        elif not (self.dir / "state.sqlite").is_file():
            raise WorkspaceError(f"{self.dir / 'state.sqlite'}: workspace database is missing; {RESTORE}")
        if not (self.dir / "items.parquet").is_file():
            raise WorkspaceError(f"{self.dir / 'items.parquet'}: the workspace's items table is missing; "
                                 f"{restore_advice(self.dir / 'state.sqlite')}")
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
            path = self.dir / "items.parquet"
            try:
                table = pq.ParquetFile(path).read()  # (read_table would import pyarrow.dataset + pandas: ~1 s)
            except FileNotFoundError:
                raise WorkspaceError(f"{path}: the workspace's items table is missing; "
                                     f"{restore_advice(self.dir / 'state.sqlite')}") from None
            except (pa.ArrowException, OSError, ValueError) as e:
                raise WorkspaceError(f"{path}: unreadable items table ({type(e).__name__}: {e}); "
                                     f"{restore_advice(self.dir / 'state.sqlite')}") from None
            for col in ("id", "split", "label"):
                if col not in table.column_names:
                    raise WorkspaceError(f"{path}: items table has no '{col}' column; "
                                         f"{restore_advice(self.dir / 'state.sqlite')}")
            self._items = table
        return self._items

    @property
    def modalities(self) -> list[str]:
        return [m for m, on in self.config.get("modalities", {}).items() if on]

    @property
    def n_classes(self) -> int:
        return int(self.config["task"]["n_classes"])

    def setting(self, section: str, name: str):
        """``[section] name`` of ``mmal.toml``, else its default from the schema (stated once there)."""
        from mmal.workspace.schema import default

        value = self.config.get(section, {}).get(name)
        return default(section, name) if value is None else value

    @property
    def task(self):
        """The workspace's :class:`~mmal.tasks.Task` (``[task] type``)."""
        from mmal.tasks import task_of

        return task_of(self.config)

    def class_names(self, n_classes: int | None = None) -> list[str]:
        """Display names of the classes (index = class): the task's names, else ``"0"``, ``"1"``, ..."""
        return self.task.class_names(max(int(n_classes or 0), self.n_classes), self.label_names)

    @property
    def label_names(self) -> list[str] | None:
        """Class names (index = integer label) from ``[task] label_names``, or None."""
        names = self.config["task"].get("label_names")
        return list(names) if names else None

    # ---- state ----------------------------------------------------------------------
    @contextmanager
    def db(self):
        """A SQLite connection (WAL, foreign keys on); commits on success, rolls back on error.

        Opened with ``mode=rw``: a database deleted after the workspace was opened is an
        error, never silently re-created empty.
        """
        path = self.dir / "state.sqlite"
        try:
            con = sqlite3.connect(_sqlite_uri(path), uri=True, timeout=30)
        except sqlite3.Error as e:
            raise db_error(path, e) from None
        try:
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA foreign_keys=ON")
                con.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise db_error(path, e) from None
            yield con
        finally:
            con.close()

    def current_labels(self) -> dict[str, int]:
        """Latest label per item (highest round wins; later import in the same round replaces)."""
        from mmal.workspace.state import current_labels

        return current_labels(self)

    def counts(self) -> dict:
        from mmal.workspace.state import batch_counts

        return batch_counts(self)

    def save_config(self) -> None:
        """Validate ``self.config`` against the schema and rewrite ``mmal.toml`` atomically."""
        from mmal.utils import atomic_write_bytes
        from mmal.workspace.schema import validate_config

        validate_config(self.config, self.dir / "mmal.toml")
        atomic_write_bytes(self.dir / "mmal.toml", tomli_w.dumps(self.config).encode())  # a full disk: one line, old file kept
