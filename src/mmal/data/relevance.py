"""Relevance items: validation of the ``query`` column and the ordinal ``label`` (0..3).

A relevance items file is a classification items file (DESIGN.md "Items") with two more
rules:

- ``query``: a non-empty string on every row (surrounding whitespace allowed, not empty);
- ``label``: an integer level in 0..3 (0 bad, 1 less, 2 good, 3 excellent, 003 §3.3) or
  empty (unlabeled).

:func:`validate_relevance_table` is pure (table in, error or nothing out); the
relevance task (:mod:`mmal.tasks.relevance`) runs it at ``mmal init``. Every failure is one
:class:`~mmal.errors.ItemsError` naming file, 1-based data row and column.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from mmal.errors import ItemsError

N_LEVELS = 4
QUERY_COLUMN = "query"
VIDEO_KEY_COLUMN = "video_id"


def _level(v, path, row):
    if v is None:
        return None
    if isinstance(v, bool):
        raise ItemsError(f"relevance label must be an integer level 0..3 or empty, got boolean {v!r}",
                         file=path, row=row, column="label")
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if not v.is_integer():
            raise ItemsError(f"relevance label must be an integer level 0..3 or empty, got {v!r}",
                             file=path, row=row, column="label")
        v = int(v)
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            v = int(s)
        except ValueError:
            raise ItemsError(f"relevance label must be an integer level 0..3 or empty, got {v!r}",
                             file=path, row=row, column="label") from None
    try:
        iv = int(v)
    except (TypeError, ValueError):
        raise ItemsError(f"relevance label must be an integer level 0..3 or empty, got {v!r}",
                         file=path, row=row, column="label") from None
    if not 0 <= iv < N_LEVELS:
        raise ItemsError(f"relevance label must be a level in 0..3 (0 bad, 1 less, 2 good, 3 excellent), "
                         f"got {iv}", file=path, row=row, column="label")
    return iv


def validate_relevance_table(table: pa.Table, path=None) -> None:
    """Check the relevance-specific columns of an items table; raise on the first bad cell.

    Parameters
    ----------
    table : the items table (raw, as read, or normalised by the items validator).
    path : the items file, only for the message.

    Raises
    ------
    ItemsError
        ``query`` column missing; a row with a null / empty / non-string query; a label that
        is not an integer in 0..3 (one line: file, row, column).
    """
    names = table.column_names
    if QUERY_COLUMN not in names:
        raise ItemsError("relevance items need a 'query' column (the user's search query)",
                         file=path, column=QUERY_COLUMN)
    for i, q in enumerate(table.column(QUERY_COLUMN).to_pylist(), start=1):
        if q is None or (isinstance(q, float) and math.isnan(q)):
            raise ItemsError("query is missing (every relevance row needs a query)", file=path, row=i,
                             column=QUERY_COLUMN)
        if not isinstance(q, str):
            raise ItemsError(f"query must be a string, got {type(q).__name__} {q!r}", file=path, row=i,
                             column=QUERY_COLUMN)
        if not q.strip():
            raise ItemsError("query is empty (every relevance row needs a query)", file=path, row=i,
                             column=QUERY_COLUMN)
    if "label" in names:
        for i, v in enumerate(table.column("label").to_pylist(), start=1):
            _level(v, path, i)


def read_relevance_items(path) -> pa.Table:
    """Read an items file (Parquet/CSV/JSONL) and validate its relevance columns.

    Only the relevance rules are checked here (``query``, ``label`` 0..3); the generic
    rules (ids, splits, media) belong to :func:`mmal.data.items.validate_items`.
    """
    from mmal.data.items import read_table

    path = Path(path)
    table = read_table(path)
    validate_relevance_table(table, path)
    return table
