"""The task contract: what a labeling task is, asked by every other layer.

A workspace has exactly one task, chosen at ``mmal init`` (``--task``, else inferred by
:func:`mmal.tasks.infer_task`) and stored in ``mmal.toml`` (``[task] type``). The task owns
every decision that differs between tasks, so the shared loop, ``simulate``, the CLI, the
review page, the reports and the Ray engine never test which task they run; they ask:

- **labels**: :meth:`Task.check_n_classes`, :meth:`Task.class_names` (class or level names);
- **items columns**: :attr:`Task.item_columns` (what it reads besides the common columns),
  :meth:`Task.column_roles` (what each media column feeds, as ``mmal init`` prints it);
- **learners**: :attr:`Task.learners`, :attr:`Task.default_learner`, :meth:`Task.check_learner`;
- **inputs**: :meth:`Task.encode`, :meth:`Task.load_features` (what a learner fits on);
- **metrics**: :meth:`Task.metrics` (each task in its own language), :attr:`Task.headline`
  (the metric that summarises a model) and :attr:`Task.curve_metrics` (those whose area
  under the budget curve ``simulate`` can report; ``--metric`` picks one, the headline by
  default);
- **bad cases** (LSB seeds, the batch table): :meth:`Task.badness` — 000 eq. 11
  ``|E_p[y] - y|`` where labels are ordered, ``1 - p_y`` where they are not;
- **Label Studio**: :meth:`Task.labelstudio_config`;
- **reports**: :attr:`Task.report_metrics`, the columns of the metric tables.

Subclasses: :class:`~mmal.tasks.classification.BinaryTask`,
:class:`~mmal.tasks.classification.MulticlassTask`, :class:`~mmal.tasks.relevance.RelevanceTask`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mmal.errors import ConfigError
from mmal.metrics.core import badness


class Task:
    """Base class of the three tasks (module docstring). Instances are stateless singletons."""

    #: ``binary`` | ``multiclass`` | ``relevance`` (the value of ``[task] type``)
    name: str = ""
    #: True when the label values are ordered (000 eq. 11 applies)
    ordered: bool = False
    #: the metric that summarises a model (and the default AUBC metric of ``simulate``)
    headline: str = ""
    #: scalar test metrics whose area under the budget curve ``simulate`` can report
    curve_metrics: tuple = ()
    #: ``(metric key, column label)`` of the report tables, in order
    report_metrics: tuple = ()
    #: learner names this task accepts, and its default
    learners: tuple = ()
    default_learner: str = ""
    #: which pre-training ``mmal pretrain`` runs (a key of :data:`mmal.loop.pretrain.PRETRAINERS`)
    pretraining: str = ""
    #: what :meth:`badness` computes, for table captions
    badness_doc: str = ""
    #: items-file columns the task reads besides :data:`mmal.data.items.KNOWN_COLUMNS`
    item_columns: tuple = ()

    # ---- items columns -------------------------------------------------------------
    def column_roles(self, table) -> list[tuple[str, str]]:
        """``(column, what it feeds)`` for each modality column of a normalised items table.

        The towers' rule (:func:`mmal.features.cache.item_sources`): ``text`` -> text tower,
        ``image`` -> image tower, ``video`` -> the image tower on its frames, for the items
        that have no image (an item with both is encoded from its image; its video is only
        shown), ``audio`` -> audio tower.
        """
        names = table.column_names
        out = []
        if "text" in names:
            out.append(("text", "text tower"))
        if "image" in names:
            out.append(("image", "image tower"))
        if "video" in names:
            if "image" in names:
                img, vid = table.column("image").to_pylist(), table.column("video").to_pylist()
                both = sum(1 for a, b in zip(img, vid) if a and b)
                out.append(("video", "image tower (its frames) for items without an image"
                            + (f" ({both} item(s) have both and are encoded from the image)" if both else "")))
            else:
                out.append(("video", "image tower (its frames)"))
        if "audio" in names:
            out.append(("audio", "audio tower"))
        return out

    # ---- labels --------------------------------------------------------------------
    def check_items(self, table, path) -> None:
        """The task's own rules for a raw items table, checked before the generic ones (ItemsError)."""

    def declared_classes(self, n_classes: int | None) -> int | None:
        """The class count to validate integer labels against (``--n-classes``, or the task's own)."""
        return n_classes

    def check_n_classes(self, n_classes: int, where: str = "") -> None:
        """ConfigError when ``n_classes`` does not fit the task (``where`` names the source)."""

    def classes(self, n_classes: int, names: Sequence[str] | None) -> tuple[int, list[str] | None]:
        """``(class count, stored class names or None)`` of a new workspace."""
        return int(n_classes), (list(names) if names else None)

    def class_names(self, n_classes: int, names: Sequence[str] | None = None) -> list[str]:
        """Display names, index = class: the given names, padded with ``"0"``, ``"1"``, …"""
        names = [str(x) for x in (names or [])]
        return names + [str(i) for i in range(len(names), max(int(n_classes), len(names)))]

    # ---- learners ------------------------------------------------------------------
    def check_learner(self, name: str | None) -> str:
        """The learner ``name`` (default :attr:`default_learner`); ConfigError if the task has no such learner."""
        name = name or self.default_learner
        if name not in self.learners:
            raise ConfigError(f"learner '{name}' does not fit the {self.name} task; choose one of {', '.join(self.learners)}")
        return name

    # ---- inputs (edge hooks: ``ws`` is a :class:`mmal.workspace.Workspace`) ----------------
    def encode(self, ws, *, encoders: str | None = None, batch_size: int | None = None, progress: bool = False) -> list[dict]:
        raise NotImplementedError

    def load_features(self, ws, ids=None, *, progress: bool = False, read_only: bool = False):
        """What a learner fits on. ``read_only``: from what ``mmal encode`` cached, writing
        nothing into the workspace (a WorkspaceError telling to run ``mmal encode`` when it is
        not cached)."""
        raise NotImplementedError

    def groups(self, table) -> np.ndarray | None:
        """Per item, the group its metric is taken within (relevance: the query), or None."""
        return None

    # ---- metrics -------------------------------------------------------------------
    def metrics(self, y_true, probs, *, scores=None, groups=None, names=None) -> dict:
        raise NotImplementedError

    def check_metric(self, metric: str | None) -> str:
        """``metric`` (default :attr:`headline`) if it is one of :attr:`curve_metrics`, else ConfigError."""
        metric = metric or self.headline
        if metric not in self.curve_metrics:
            raise ConfigError(f"--metric {metric!r} is not a metric of the {self.name} task; choose one of "
                              f"{', '.join(self.curve_metrics)}")
        return metric

    def curve_value(self, metrics: Mapping, metric: str) -> float:
        """The value of ``metric`` for a point of a budget curve (NaN stays NaN)."""
        return float(metrics.get(metric, float("nan")))

    def badness(self, probs, labels) -> np.ndarray:
        """How badly the prediction misses the label, per item ``[N]`` (LSB seeds, batch table).

        Ordered labels: 000 eq. 11, ``|E_p[y] - y|``. Unordered classes: ``1 - p_y`` (eq. 11
        would call a 50/50 prediction of classes 4 and 6 for label 5 perfect). For two classes
        both are ``|p_1 - y|``.
        """
        return badness(probs, labels, self.ordered)

    # ---- Label Studio --------------------------------------------------------------
    def labelstudio_config(self, modalities, class_names) -> str:
        from mmal.data.labelstudio import labeling_config

        return labeling_config(modalities, class_names, ordered=self.ordered)

    def __repr__(self) -> str:
        return f"<task {self.name}>"
