"""The ``oxygen-icons-relevance`` dataset: (query, icon) pairs with a 4-level relevance label.

Built from the Debian package ``oxygen-icon-theme`` (via :func:`scan_icons` of the
``oxygen-icons`` dataset), as data the relevance defaults were not developed on. An icon
plays the short video: its image is the single frame (J = 1) and its text field is the
icon name with ``-``/``_`` as spaces (``document save as``); no audio.

Icon names are hierarchical: the first word is the icon's *family* (``document-open``,
``document-save-as``), and every icon sits in one theme *context* (``actions``, ``apps``,
``mimetypes``, ...). Queries:

- ``name``: the text of an icon, minus its last word when it has three or more
  (``document save as`` -> ``document save``: a user types a shorter query than the
  file name);
- ``family``: a family word shared by at least ``min_family`` of the chosen icons;
- ``context``: a context name (``places``).

Level rule for a query and an icon (the graded relevance of 003, levels 0-3):

- name query made from icon a: 3 if the icon's text starts with the query (a itself, or
  a sibling such as ``document save`` for ``document save``); else 2 if the icon is in
  a's family; 1 if in a's context; 0 otherwise;
- family query f: 2 for the icons of family f, 1 for the other icons of the context
  holding most of the family, 0 otherwise (it names no single icon, so no 3);
- context query c: 1 for the icons of context c, 0 otherwise.

Candidates per query: every level-3 icon plus up to ``per_level`` = (n0, n1, n2) random
icons of levels 0, 1, 2. Splits are by query (a query's pairs share a split), so test
queries are unseen in training.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections import Counter

import numpy as np
import pyarrow as pa

from mmal.data.datasets._common import MEDIA_DIR, candidates_by_level, check_fractions, pick_queries, progress_bar, write_items
from mmal.data.datasets.oxygen_icons import ICONS_DIR, copy_icon, icon_text, scan_icons
from mmal.errors import ConfigError, MmalError

QUERY_SOURCES = ("name", "family", "context")


def name_query(text: str) -> str:
    """An icon's text as a user's query: the last word dropped when there are three or more."""
    words = text.split()
    return " ".join(words[:-1] if len(words) >= 3 else words)


def icon_relevance_level(source: str, anchor: tuple[str, str], icon: tuple[str, str], query: str,
                         family_context: str | None = None) -> int:
    """The documented level rule (module docstring) for one (query, icon) pair.

    ``anchor``: ``(context, text)`` of the icon a name query was made from, ``(None, family)``
    for a family query, ``(context, None)`` for a context query; ``icon``: ``(context, text)``;
    ``family_context``: the context holding most of a family query's icons.
    """
    ctx, text = icon
    if source == "name":
        if text == query or text.startswith(query + " "):
            return 3
        if text.split()[0] == anchor[1].split()[0]:
            return 2
        return 1 if ctx == anchor[0] else 0
    if source == "family":
        if text.split()[0] == anchor[1]:
            return 2
        return 1 if ctx == family_context else 0
    return 1 if ctx == anchor[0] else 0


def build_oxygen_icons_relevance(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    n_icons: int | None = 500,
    query_sources: tuple = QUERY_SOURCES,
    min_family: int = 3,
    per_level: tuple = (3, 2, 2),
    image_size: int = 128,
    train_frac: float = 0.5,
    pool_frac: float = 0.25,
    test_frac: float = 0.25,
    icons_dir: str | os.PathLike = ICONS_DIR,
    progress: bool = True,
) -> pathlib.Path:
    """Build the Oxygen icons relevance pairs; return the path of ``items.parquet``.

    Columns: ``id`` (``q<k>|<icon id>``), ``query``, ``query_id``, ``query_source``,
    ``label`` (0..3), ``split`` (by query), ``video_id`` (icon id), ``image``, ``text``
    (icon name as words), ``context``, ``family``.

    Parameters
    ----------
    n : number of queries (``None`` = every distinct query of the chosen icons).
    n_icons : icons used as videos, a random subset (``None`` = all, about 2,500 names).
    query_sources : which query kinds to make (subset of :data:`QUERY_SOURCES`).
    min_family : a family word becomes a query when at least this many chosen icons share it.
    per_level : random candidates of level 0, 1, 2 per query (all level-3 icons are kept).
    image_size : the copied PNG is resized to this square size.
    train_frac, pool_frac, test_frac : split fractions over queries.
    icons_dir : root of the installed theme.
    """
    fractions = check_fractions(train_frac, pool_frac, test_frac)
    bad = set(query_sources) - set(QUERY_SOURCES)
    if bad or not query_sources:
        raise ConfigError(f"query_sources must be a non-empty subset of {QUERY_SOURCES}, got {query_sources}")
    if len(per_level) != 3 or min(per_level) < 0:
        raise ConfigError(f"per_level must be three counts >= 0 (levels 0, 1, 2), got {per_level}")
    if int(min_family) < 2 or int(image_size) < 8:
        raise ConfigError(f"min_family must be >= 2 and image_size >= 8, got {min_family}, {image_size}")
    rng = np.random.default_rng(seed)
    seen, icons = set(), []
    for (ctx, name), path in sorted(scan_icons(pathlib.Path(icons_dir)).items()):
        text = icon_text(name)
        if name in seen or not text.strip():
            continue
        seen.add(name)
        icons.append((ctx, name, text, path))
    if n_icons is not None:
        if not 2 <= int(n_icons) <= len(icons):
            raise ConfigError(f"n_icons must be in 2..{len(icons)}, got {n_icons}")
        keep = np.sort(rng.choice(len(icons), int(n_icons), replace=False))
        icons = [icons[i] for i in keep]
    if len(icons) < 2:
        raise MmalError(f"{icons_dir}: fewer than two Oxygen icons found")
    texts = [t for _, _, t, _ in icons]
    families = [t.split()[0] for t in texts]

    # ---- queries -------------------------------------------------------------------------------
    # one query per text (the first kind that makes it: name, family, context), so a test query's
    # text is never also a training query of another kind
    queries: dict[str, tuple[str, tuple]] = {}  # query -> (source, anchor)
    for ctx, _, text, _ in icons:
        if "name" in query_sources:
            queries.setdefault(name_query(text), ("name", (ctx, text)))
    fam_count = Counter(families)
    fam_ctx = {f: Counter(c for (c, _, _, _), g in zip(icons, families) if g == f).most_common(1)[0][0] for f in fam_count}
    if "family" in query_sources:
        for f in sorted(f for f, k in fam_count.items() if k >= int(min_family)):
            queries.setdefault(f, ("family", (None, f)))
    if "context" in query_sources:
        for c in sorted({ctx for ctx, _, _, _ in icons}):
            queries.setdefault(c, ("context", (c, None)))
    qlist, qsplit = pick_queries(list(queries.items()), n, fractions, rng)

    # ---- media -------------------------------------------------------------------------------------
    out_dir = pathlib.Path(out_dir)
    images = []
    with progress_bar("oxygen-icons-relevance: copying icons", len(icons), progress) as advance:
        for ctx, name, _, path in icons:
            dst = out_dir / MEDIA_DIR / ctx / f"{name}.png"
            copy_icon(path, dst, image_size)
            images.append(dst.relative_to(out_dir).as_posix())
            advance()

    # ---- pairs -------------------------------------------------------------------------------------
    cols = ("id", "query", "query_id", "query_source", "label", "split", "video_id", "image", "text", "context", "family")
    rows: dict[str, list] = {k: [] for k in cols}
    for k, (qtext, (source, anchor)) in enumerate(qlist):
        fc = fam_ctx.get(anchor[1]) if source == "family" else None
        levels = np.array([icon_relevance_level(source, anchor, (ctx, text), qtext, fc)
                           for ctx, _, text, _ in icons])
        for i in candidates_by_level(levels, per_level, rng):
            ctx, name, text, _ = icons[i]
            vid = f"{ctx}.{name}"
            rows["id"].append(f"q{k}|{vid}")
            rows["query"].append(qtext)
            rows["query_id"].append(f"q{k}")
            rows["query_source"].append(source)
            rows["label"].append(int(levels[i]))
            rows["split"].append(str(qsplit[k]))
            rows["video_id"].append(vid)
            rows["image"].append(images[i])
            rows["text"].append(text)
            rows["context"].append(ctx)
            rows["family"].append(families[i])
    schema = pa.schema([(c, pa.int64() if c == "label" else pa.string()) for c in cols])
    path = write_items(pa.table(rows, schema=schema), out_dir)
    meta = {"dataset": "oxygen-icons-relevance", "seed": seed, "n_icons": len(icons), "n_queries": len(qlist),
            "n_pairs": len(rows["id"]), "label_counts": {str(lv): rows["label"].count(lv) for lv in range(4)}}
    (out_dir / "relevance_meta.json").write_text(json.dumps(meta, indent=1))
    return path
