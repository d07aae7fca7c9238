"""The ``tuxpaint-relevance`` dataset: (query, stamp) pairs with a 4-level relevance label.

Built from the Debian package ``tuxpaint-stamps-default`` (via :func:`scan_stamps` of the
``tuxpaint`` dataset). A stamp plays the short video: its image is the single frame
(J = 1), its text fields are the English caption (``text``), captions in a few other
locales (``captions``) and the pocketsphinx transcript of its English spoken description
(``asr``, only the stamps that have ``NAME_desc.ogg``; null elsewhere).

Queries (each cleaned: lower case, punctuation removed, a leading article dropped):

- ``caption``: the English caption of a stamp ("A blackbird." -> "blackbird");
- ``locale``: the caption of a stamp in one of ``query_locales`` ("Une merle." -> "merle");
- ``subcategory``: a subcategory folder name ("animals/birds" -> "birds");
- ``category``: a top-level folder name ("animals").

Level rule for a query q and a stamp s (the issue's rule):

- caption / locale query from stamp s0: 3 if s's cleaned caption in that locale equals q
  (s0 itself, or another stamp with the same caption); else 2 if s is in s0's subcategory;
  1 if in s0's category; 0 otherwise;
- subcategory query: 2 for the stamps of that subcategory, 1 for the rest of its category,
  0 otherwise (it names no single stamp, so no 3);
- category query: 1 for the stamps of that category, 0 otherwise.

Candidates per query: every level-3 stamp plus up to ``per_level`` = (n0, n1, n2) random
stamps of levels 0, 1, 2. Splits are by query (a query's pairs share a split), so test
queries are unseen in training.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import numpy as np
import pyarrow as pa

from mmal.data.datasets._common import MEDIA_DIR, candidates_by_level, check_fractions, pick_queries, progress_bar, write_items
from mmal.data.datasets.tuxpaint import STAMPS_DIR, _render_svg, parse_caption, scan_stamps
from mmal.errors import ConfigError, MmalError

ARTICLES = ("a", "an", "the", "un", "une", "le", "la", "les", "l", "ein", "eine", "der", "die", "das",
            "el", "los", "las", "una", "uno", "lo", "il")
QUERY_SOURCES = ("caption", "locale", "subcategory", "category")


def clean_query(text: str, articles=ARTICLES) -> str:
    """Lower case, drop punctuation, collapse spaces, drop one leading article."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    if len(words) > 1 and words[0] in articles:
        words = words[1:]
    return " ".join(words)


def relevance_level(source: str, anchor: str, stamp_rel: str, stamp_caption: str | None, query: str) -> int:
    """The documented level rule (module docstring) for one (query, stamp) pair.

    ``anchor``: the source stamp's relative path (caption/locale), the subcategory path
    (subcategory) or the category name (category).
    """
    sub, cat = os.path.dirname(stamp_rel), stamp_rel.split("/", 1)[0]
    if source in ("caption", "locale"):
        if stamp_caption is not None and stamp_caption == query:
            return 3
        if sub == os.path.dirname(anchor):
            return 2
        return 1 if cat == anchor.split("/", 1)[0] else 0
    if source == "subcategory":
        if sub == anchor:
            return 2
        return 1 if cat == anchor.split("/", 1)[0] else 0
    return 1 if cat == anchor else 0


def build_tuxpaint_relevance(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    n_stamps: int | None = 300,
    query_sources: tuple = QUERY_SOURCES,
    query_locales: tuple = ("fr", "de", "es"),
    text_locales: tuple = ("fr", "de", "es"),
    per_level: tuple = (3, 2, 2),
    asr: bool = True,
    train_frac: float = 0.5,
    pool_frac: float = 0.25,
    test_frac: float = 0.25,
    svg: str = "skip",
    svg_width: int = 256,
    stamps_dir: str | os.PathLike = STAMPS_DIR,
    progress: bool = True,
) -> pathlib.Path:
    """Build the Tux Paint relevance pairs; return the path of ``items.parquet``.

    Columns: ``id`` (``q<k>|<stamp id>``), ``query``, ``query_id``, ``query_source``,
    ``label`` (0..3), ``split`` (by query), ``video_id`` (stamp id), ``image``, ``text``
    (English caption), ``captions`` (``text_locales`` captions, space-joined), ``asr``
    (transcript or null), ``audio`` (English spoken description or null), ``category``,
    ``subcategory``.

    Parameters
    ----------
    n : number of queries (``None`` = every distinct query of the chosen stamps).
    n_stamps : stamps used as videos, a random subset (``None`` = all).
    query_sources : which query kinds to make (subset of :data:`QUERY_SOURCES`).
    query_locales : locales whose captions become ``locale`` queries (first present one per stamp).
    text_locales : locales whose captions fill the ``captions`` field.
    per_level : random candidates of level 0, 1, 2 per query (all level-3 stamps are kept).
    asr : transcribe English spoken descriptions with pocketsphinx (else ``asr`` is null).
    train_frac, pool_frac, test_frac : split fractions over queries.
    svg : ``"skip"`` (default) leaves SVG-only stamps out; ``"convert"`` rasterises them.
    """
    fractions = check_fractions(train_frac, pool_frac, test_frac)
    bad = set(query_sources) - set(QUERY_SOURCES)
    if bad or not query_sources:
        raise ConfigError(f"query_sources must be a non-empty subset of {QUERY_SOURCES}, got {query_sources}")
    if len(per_level) != 3 or min(per_level) < 0:
        raise ConfigError(f"per_level must be three counts >= 0 (levels 0, 1, 2), got {per_level}")
    if svg not in ("convert", "skip"):
        raise ConfigError(f"svg must be 'convert' or 'skip', got {svg!r}")
    rng = np.random.default_rng(seed)
    stamps = scan_stamps(pathlib.Path(stamps_dir))
    if svg == "skip":
        stamps = [s for s in stamps if s.png is not None]
    if n_stamps is not None:
        if not 2 <= int(n_stamps) <= len(stamps):
            raise ConfigError(f"n_stamps must be in 2..{len(stamps)}, got {n_stamps}")
        keep = np.sort(rng.choice(len(stamps), int(n_stamps), replace=False))
        stamps = [stamps[i] for i in keep]
    if not stamps:
        raise MmalError(f"no stamps found under {stamps_dir}")
    captions = [parse_caption(s.txt) for s in stamps]  # (english, {loc: caption})
    clean_en = [clean_query(en) for en, _ in captions]
    clean_loc = {loc: [clean_query(c[1][loc]) if loc in c[1] else None for c in captions] for loc in query_locales}

    # ---- queries -------------------------------------------------------------------------------
    queries: dict[tuple[str, str], tuple[str, str, str | None]] = {}  # (text, source) -> (anchor, locale)
    for i, s in enumerate(stamps):
        if "caption" in query_sources and clean_en[i]:
            queries.setdefault((clean_en[i], "caption"), (s.rel, "en"))
        if "locale" in query_sources:
            for loc in query_locales:
                q = clean_loc[loc][i]
                if q:
                    queries.setdefault((q, "locale"), (s.rel, loc))
                    break
        if "subcategory" in query_sources and s.subcategory != s.category:
            name = s.subcategory.rsplit("/", 1)[-1].replace("_", " ")
            queries.setdefault((name, "subcategory"), (s.subcategory, None))
        if "category" in query_sources:
            queries.setdefault((s.category.replace("_", " "), "category"), (s.category, None))
    qlist, qsplit = pick_queries(list(queries.items()), n, fractions, rng)

    # ---- media + ASR ------------------------------------------------------------------------------
    out_dir = pathlib.Path(out_dir)
    media = out_dir / MEDIA_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    images, audios = [], []
    for s in stamps:
        dst = media / s.subcategory
        dst.mkdir(parents=True, exist_ok=True)
        name = pathlib.PurePosixPath(s.rel).name
        img = dst / f"{name}.png"
        if s.png is not None:
            shutil.copyfile(s.png, img)
        else:
            _render_svg(s.svg, img, svg_width)
        images.append(img.relative_to(out_dir).as_posix())
        aud = None
        if "en" in s.desc:
            aud = dst / s.desc["en"].name
            shutil.copyfile(s.desc["en"], aud)
        audios.append(aud)
    transcripts: list[str | None] = [None] * len(stamps)
    if asr:
        from mmal.data.asr import transcribe

        todo = [i for i, a in enumerate(audios) if a is not None]
        with progress_bar("tuxpaint-relevance: pocketsphinx ASR", len(todo), progress) as advance:
            for i, t in zip(todo, transcribe([audios[i] for i in todo], progress=advance)):
                transcripts[i] = t

    # ---- pairs --------------------------------------------------------------------------------------
    cols = ("id", "query", "query_id", "query_source", "label", "split", "video_id", "image", "text", "captions",
            "asr", "audio", "category", "subcategory")
    rows: dict[str, list] = {k: [] for k in cols}
    for k, ((qtext, source), (anchor, loc)) in enumerate(qlist):
        cap = clean_en if loc == "en" else clean_loc.get(loc)
        levels = np.array([relevance_level(source, anchor, s.rel, cap[i] if cap is not None else None, qtext)
                           for i, s in enumerate(stamps)])
        for i in candidates_by_level(levels, per_level, rng):
            s, (en, other) = stamps[i], captions[i]
            vid = s.rel.replace("/", ".")
            rows["id"].append(f"q{k}|{vid}")
            rows["query"].append(qtext)
            rows["query_id"].append(f"q{k}")
            rows["query_source"].append(source if source != "locale" else f"locale:{loc}")
            rows["label"].append(int(levels[i]))
            rows["split"].append(str(qsplit[k]))
            rows["video_id"].append(vid)
            rows["image"].append(images[i])
            rows["text"].append(en)
            rows["captions"].append(" ".join(other[x] for x in text_locales if x in other) or None)
            rows["asr"].append(transcripts[i])
            rows["audio"].append(audios[i].relative_to(out_dir).as_posix() if audios[i] is not None else None)
            rows["category"].append(s.category)
            rows["subcategory"].append(s.subcategory)
    schema = pa.schema([(c, pa.int64() if c == "label" else pa.string()) for c in cols])
    path = write_items(pa.table(rows, schema=schema), out_dir)
    meta = {"dataset": "tuxpaint-relevance", "seed": seed, "n_stamps": len(stamps), "n_queries": len(qlist),
            "n_pairs": len(rows["id"]), "label_counts": {str(lv): rows["label"].count(lv) for lv in range(4)},
            "asr_stamps": sum(t is not None for t in transcripts)}
    (out_dir / "relevance_meta.json").write_text(json.dumps(meta, indent=1))
    return path
