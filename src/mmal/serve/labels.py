"""Label writes of the review page: parse a posted label, store it with the workspace's one label writer.

Storing is :func:`mmal.workspace.state.put_labels` (the same transaction as ``mmal label``;
concurrency and durability are described there: a label is on disk before its HTTP 200 is
sent); undo is :func:`mmal.workspace.state.undo_label`.
"""

from __future__ import annotations

from mmal.errors import LabelImportError
from mmal.workspace import state
from mmal.workspace.annotate import label_names
from mmal.workspace.workspace import Workspace


def class_names(ws: Workspace, n_classes: int | None = None) -> list[str]:
    """Names of the classes for display: the task's names (``label_names``, relevance levels), else ``"0".."C-1"``."""
    return ws.class_names(n_classes)


def parse_label(ws: Workspace, raw, *, n_classes: int | None = None) -> int:
    """A posted label (class index or class name) -> class index; LabelImportError if invalid."""
    names = label_names(ws) or []
    n = max(int(n_classes or 0), ws.n_classes, len(names))
    label = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        label = raw
    elif isinstance(raw, str):
        s = raw.strip()
        if s in names:
            label = names.index(s)
        elif s.lstrip("-").isdigit():
            label = int(s)
    if label is None:
        known = f" ({', '.join(names)})" if names else ""
        raise LabelImportError(f"label {raw!r} is not a class number or a known class name{known}")
    if label < 0 or (n and label >= n):
        raise LabelImportError(f"label {label} out of range 0..{n - 1}")
    return label


def import_label_rows(ws: Workspace, rows, *, source: str, annotator: str | None,
                      retries: int = 20, busy_timeout_s: float = 30.0) -> dict:
    """Store ``rows`` = [(item id, round, label int)] in one transaction (all or nothing), through
    the workspace's one label writer (:func:`mmal.workspace.state.put_labels`, same semantics as
    ``mmal label``). Returns ``{"inserted", "updated", "unchanged", "previous": [...]}``."""
    return state.put_labels(ws, rows, source=source, annotator=annotator, retries=retries, busy_timeout_s=busy_timeout_s)


undo_label = state.undo_label
