"""The relevance task: query–video pairs with ordered levels 0 bad, 1 less, 2 good, 3 excellent (003).

- **inputs**: :class:`~mmal.features.hcmrm.RelevanceData` (003 Alg. 1 keywords of each
  video, frozen MiniLM states of keyword text and queries, frozen EfficientNet patch tokens),
  built from the workspace's items and cached under ``features/relevance``;
- **learners** (:mod:`mmal.learners.relevance`): ``auto-relevance`` (default: the probe where it beats the untrained cosine on held-out folds, else the cosine), ``cosine``, ``probe`` and ``hcmrm``;
  ``probs`` is the four-level distribution, so the registry's uncertainty strategies,
  ``level-variance`` and LSB read it unchanged;
- **metrics** (:func:`mmal.metrics.relevance.relevance_metrics`): AUC of {0, 1} against
  {2, 3}, Spearman, Pearson, NDCG@10 per query; headline **Spearman**;
- **bad cases**: 000 eq. 11 as printed, ``|E[y] - y|`` (the levels are ordered);
- **pre-training**: ITC + ITM + MLM + PQVM (003 §3.2).
"""

from __future__ import annotations

import numpy as np

from mmal.errors import ConfigError
from mmal.metrics.relevance import N_LEVELS, relevance_metrics
from mmal.tasks.base import Task

LEVEL_NAMES = ("bad", "less", "good", "excellent")


class RelevanceTask(Task):
    name = "relevance"
    ordered = True
    headline = "spearman"
    curve_metrics = ("spearman", "auc", "ndcg@10", "pearson", "accuracy")
    report_metrics = (("auc", "AUC {0,1} vs {2,3}"), ("spearman", "Spearman"), ("pearson", "Pearson"),
                      ("ndcg@10", "NDCG@10"), ("accuracy", "level acc."))
    learners = ("probe", "auto-relevance", "cosine", "hcmrm")
    default_learner = "auto-relevance"
    pretraining = "hcmrm"
    badness_doc = "mean |E[y] − y| (000 eq. 11; the levels are ordered)"
    #: the query, its group, the video group and the keyword fields (:func:`mmal.features.hcmrm.prepare_relevance`)
    item_columns = ("query", "query_id", "video_id", "captions", "asr")

    def column_roles(self, table):
        """The relevance inputs (:func:`mmal.features.hcmrm.prepare_relevance`): the visual tokens
        come from ``video`` when the file has that column, else from ``image``; keywords from
        ``text``, ``captions``, ``asr``; ``audio`` is exported and shown, not read."""
        names = table.column_names
        visual = "video" if "video" in names else "image" if "image" in names else None
        out = [("query", "query text")] if "query" in names else []
        for c in ("text", "captions", "asr"):
            if c in names:
                out.append((c, "keywords"))
        for c in ("video", "image"):
            if c in names:
                out.append((c, "visual tokens (frames)" if c == visual == "video" else "visual tokens" if c == visual
                            else "not read: the video column is the visual input"))
        if "audio" in names:
            out.append(("audio", "not read by the relevance models (exported and shown)"))
        return out

    def check_items(self, table, path) -> None:
        from mmal.data.relevance import validate_relevance_table

        validate_relevance_table(table, path)

    def declared_classes(self, n_classes):
        return N_LEVELS if n_classes is None else n_classes

    def classes(self, n_classes, names):
        return N_LEVELS, list(LEVEL_NAMES)

    def check_n_classes(self, n_classes: int, where: str = "") -> None:
        if int(n_classes) not in (0, N_LEVELS):
            raise ConfigError(f"{where + ': ' if where else ''}the relevance task has the four levels 0..3, got "
                              f"{n_classes} classes")

    def class_names(self, n_classes, names=None):
        return list(LEVEL_NAMES)

    def groups(self, table):
        cols = table.column_names
        col = "query_id" if "query_id" in cols else "query"
        return np.asarray([str(v) for v in table.column(col).to_pylist()], dtype=object)

    def metrics(self, y_true, probs, *, scores=None, groups=None, names=None) -> dict:
        p = None if probs is None or not np.isfinite(np.asarray(probs, float)).all() else probs
        return relevance_metrics(y_true, scores, probs=p, query_ids=groups)

    def encode(self, ws, *, encoders=None, batch_size=None, progress=False):
        data = self.load_features(ws, progress=progress)
        return [{"modality": "relevance", "videos": len(data.video_ids), "pairs": len(data.query_text),
                 "cache": str(ws.dir / "features" / "relevance")}]

    def load_features(self, ws, ids=None, *, progress=False, read_only=False):
        from mmal.features.hcmrm import prepare_relevance

        if ids is not None and list(ids) != ws.items.column("id").to_pylist():
            raise ConfigError("relevance features are built for every pair of the workspace, in items order")
        n_frames = 1 if "video" not in ws.items.column_names else int(ws.setting("encode", "n_frames"))
        return prepare_relevance(ws.dir / "items.parquet", cache_dir=ws.dir / "features" / "relevance", n_frames=n_frames,
                                 cache_only=read_only)
