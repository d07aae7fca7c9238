"""Query-video relevance (HCMRM, seed 003; METHODS.md G).

- :mod:`mmal.relevance.data` — relevance items validation (``query`` + ordinal ``label`` 0..3);
- :mod:`mmal.relevance.keywords` — keyword extraction (003 Alg. 1, TF-IDF x field weight);
- :mod:`mmal.relevance.heads` — hierarchical softmax (eq. 7-10, sign fixed), BCE, MSE, ordinal;
- :mod:`mmal.relevance.metrics` — AUC ({0,1} vs {2,3}), Spearman, Pearson, NDCG@10 per query;
- :mod:`mmal.relevance.model` — ALBEF-style dual stream (+ text-only / single-stream variants);
- :mod:`mmal.relevance.pretrain` — ITC, ITM (hard negatives), word-level MLM, PQVM; fine-tuning;
- :mod:`mmal.relevance.student` — distilled student over cached visual embeddings (003 App. A).

See ``docs/relevance.md``.
"""

LEVELS = (0, 1, 2, 3)
LEVEL_NAMES = ("bad", "less", "good", "excellent")
