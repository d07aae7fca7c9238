"""Keyword extraction for video text (003 Alg. 1; METHODS.md G).

For each video and each text field ``f_i`` (title, other-locale captions, ASR, ...)::

    d = {}
    for i, f_i in enumerate(fields):
        for w in Tokenize(f_i):                       # distinct words of the field
            d[w] = d.get(w, 0) + Importance(w, f_i) * alpha_i
    t = "|".join(sorted(d, key=d.get, reverse=True)[:k])

``Importance(w, f_i)`` = the TF-IDF weight of ``w`` in this video's field ``i`` computed by
scikit-learn's :class:`~sklearn.feature_extraction.text.TfidfVectorizer` fitted on field
``i`` over the whole corpus (one vectoriser per field; defaults: smooth idf, l2-normalised
rows), times ``entity_boost`` when ``is_entity(w, f_i)`` (the optional named-entity boost).

Choices the paper leaves open (all parameters):

- the tokenizer (``token_pattern``, lowercase) — scikit-learn's analyzer, so the words
  counted are exactly the vectoriser's features;
- each distinct word is added once per field: TF-IDF already counts repeats through tf
  (Alg. 1 iterates over the tokens; adding a repeated word again would count tf twice);
- ties keep first-seen order (field order, then position in the field) — Python's sort
  is stable over the dict's insertion order;
- the default named-entity test (:func:`capitalised_entity`) flags a word written with a
  capital letter somewhere other than at the start of a sentence; ``entity_boost = 1``
  (default) turns the boost off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mmal.errors import ConfigError

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w+\b"
SEP = "|"


def capitalised_entity(word: str, text: str) -> bool:
    """Heuristic NER: ``word`` appears capitalised in ``text`` not at a sentence start."""
    for m in re.finditer(r"\b(\w+)\b", text):
        tok = m.group(1)
        if tok.lower() != word or not tok[:1].isupper():
            continue
        before = text[: m.start()].rstrip()
        if before and before[-1] not in ".!?":
            return True
    return False


def extract_keywords(
    docs: Sequence[Mapping[str, str | None]],
    fields: Sequence[str],
    weights: Sequence[float] | None = None,
    *,
    k: int = 16,
    entity_boost: float = 1.0,
    is_entity: Callable[[str, str], bool] | None = capitalised_entity,
    token_pattern: str = DEFAULT_TOKEN_PATTERN,
    lowercase: bool = True,
    vectorizer_params: Mapping | None = None,
) -> list[list[str]]:
    """Top-``k`` keywords of every document, most important first (003 Alg. 1).

    Parameters
    ----------
    docs : one mapping per video, field name -> text (None / missing / "" = empty field).
    fields : the text fields ``f_1..f_l`` to use, in order.
    weights : field weights ``alpha_1..alpha_l`` (default all 1).
    k : maximum number of keywords per video.
    entity_boost : factor on the importance of words flagged by ``is_entity`` (1 = off).
    is_entity : ``(word, field_text) -> bool``; None = no entity test.
    token_pattern, lowercase, vectorizer_params : passed to ``TfidfVectorizer``.

    Returns
    -------
    list (one per doc) of keyword lists (length <= k), in descending importance.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    fields = list(fields)
    if not fields:
        raise ConfigError("keyword extraction needs at least one text field")
    alpha = np.ones(len(fields)) if weights is None else np.asarray(weights, dtype=np.float64)
    if alpha.shape != (len(fields),) or not np.isfinite(alpha).all():
        raise ConfigError(f"need one finite weight per field ({len(fields)}), got {weights}")
    if int(k) < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    n = len(docs)
    scores: list[dict[str, float]] = [{} for _ in range(n)]
    for i, name in enumerate(fields):
        texts = [(d.get(name) or "") if isinstance(d.get(name) or "", str) else str(d.get(name)) for d in docs]
        if not any(t.strip() for t in texts):
            continue
        vec = TfidfVectorizer(token_pattern=token_pattern, lowercase=lowercase, **dict(vectorizer_params or {}))
        try:
            mat = vec.fit_transform(texts).tocsr()  # [n, V]
        except ValueError:  # empty vocabulary (only stop words / no tokens)
            continue
        vocab = vec.vocabulary_
        analyze = vec.build_analyzer()
        for j, text in enumerate(texts):
            if not text.strip():
                continue
            row = mat.getrow(j)
            weight_of = dict(zip(row.indices.tolist(), row.data.tolist()))
            seen = set()
            for w in analyze(text):  # tokens in order of appearance
                if w in seen or w not in vocab:
                    continue
                seen.add(w)
                omega = weight_of.get(vocab[w], 0.0)
                if entity_boost != 1.0 and is_entity is not None and is_entity(w, text):
                    omega *= entity_boost
                scores[j][w] = scores[j].get(w, 0.0) + omega * float(alpha[i])
    return [sorted(d, key=d.get, reverse=True)[: int(k)] for d in scores]


def keyword_text(keywords: Sequence[str], sep: str = " ") -> str:
    """Join keywords in importance order (the paper joins with ``|``; the model reads spaces)."""
    return sep.join(keywords)
