"""The task contract (:mod:`mmal.tasks.base`) and the three tasks.

>>> from mmal.tasks import get_task
>>> get_task("binary").headline
'r_at_p80'

:func:`task_of` reads the task of a workspace configuration (``[task] type``; the older
value ``classify`` means ``binary`` with two classes, else ``multiclass``);
:func:`infer_task` chooses one for an items table at ``mmal init`` (a ``query`` column ->
relevance, two classes -> binary, else multiclass).
"""

from __future__ import annotations

from mmal.errors import ConfigError
from mmal.tasks.base import Task
from mmal.tasks.classification import BinaryTask, ClassificationTask, MulticlassTask
from mmal.tasks.relevance import LEVEL_NAMES, RelevanceTask

TASKS: dict[str, Task] = {t.name: t for t in (BinaryTask(), MulticlassTask(), RelevanceTask())}
#: ``[task] type`` values of workspaces made before the task contract
LEGACY = ("classify",)
QUERY_COLUMN = "query"


def get_task(name: str) -> Task:
    """The task called ``name``; ConfigError naming the tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def task_of(config: dict) -> Task:
    """The task of a parsed ``mmal.toml`` (see the module docstring for ``classify``)."""
    t = config.get("task", {})
    name = t.get("type")
    if name in LEGACY:
        name = "binary" if int(t.get("n_classes", 0)) == 2 else "multiclass"
    return get_task(name)


def infer_task(column_names, n_classes: int | None) -> Task | None:
    """The task of an items table: ``relevance`` with a ``query`` column, ``binary`` with two
    classes, else ``multiclass``; ``None`` when that depends on a class count not known yet."""
    if QUERY_COLUMN in column_names:
        return TASKS["relevance"]
    if n_classes is None:
        return None
    return TASKS["binary"] if int(n_classes) == 2 else TASKS["multiclass"]


__all__ = ["Task", "TASKS", "get_task", "task_of", "infer_task", "BinaryTask", "MulticlassTask", "ClassificationTask",
           "RelevanceTask", "LEVEL_NAMES"]
