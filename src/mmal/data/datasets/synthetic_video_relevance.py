"""The ``synthetic-video-relevance`` dataset: (query, clip) pairs over the synthetic videos.

The clips are those of ``synthetic-video`` (:func:`build_synthetic_video`, same seed and
options): J frames, a title, and a speech track where espeak-ng says one word. Each clip
has a class c whose evidence is in exactly one modality (frames: ``SHAPES[c]`` drawn;
speech: ``WORDS[c]`` spoken; title: ``WORDS[c]`` written); the other two modalities carry
neutral words / scribbles.

Queries: the class words ``WORDS[:n_classes]`` and the neutral words ``NEUTRAL_WORDS``.
Level rule for a query q and a clip v:

- q = ``WORDS[c]`` (class query): 3 if v's class is c and the word is written in the title
  or spoken (the clip *names* it); 2 if v's class is c but only the frames show it (the
  shape, not named); 0 otherwise;
- q = a neutral word: 1 if v's title or speech uses that word (mentioned, not the topic);
  0 otherwise.

Every (query, clip) pair is kept, except that level-0 pairs are subsampled to at most
``max_zero_per_query`` per query. Splits are by clip (the synthetic-video split of the
clip), since there are only ``n_classes + 6`` queries. The ``asr`` column holds the
pocketsphinx transcript of the clip's audio (``asr=True``).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmal.data.datasets._common import progress_bar, write_items
from mmal.data.datasets.synthetic_video import NEUTRAL_WORDS, WORDS, build_synthetic_video
from mmal.errors import ConfigError


def synthetic_level(query: str, label: int, informative: str, title: str, spoken: str, n_classes: int) -> int:
    """The documented level rule (module docstring) for one (query, clip) pair."""
    if query in WORDS[:n_classes]:
        if WORDS.index(query) != label:
            return 0
        return 2 if informative == "video" else 3
    title_words = title.lower().replace(",", " ").replace(":", " ").split()
    return 1 if (query in title_words or query == spoken) else 0


def build_synthetic_video_relevance(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    n_classes: int = 4,
    n_frames: int = 3,
    duration: float = 1.5,
    size: int = 96,
    max_zero_per_query: int = 40,
    asr: bool = True,
    train_frac: float = 0.5,
    pool_frac: float = 0.25,
    test_frac: float = 0.25,
    progress: bool = True,
) -> pathlib.Path:
    """Build the synthetic relevance pairs; return the path of ``items.parquet``.

    ``n`` = number of clips (default 120). The clip table is kept as ``videos.parquet``.
    Columns: ``id`` (``<query>|<clip id>``), ``query``, ``query_id``, ``label`` (0..3),
    ``split``, ``video_id``, ``video``, ``audio``, ``text`` (title), ``asr``,
    ``informative_modality``, ``spoken_word``.
    """
    n = 120 if n is None else int(n)
    if max_zero_per_query < 0:
        raise ConfigError(f"max_zero_per_query must be >= 0, got {max_zero_per_query}")
    out_dir = pathlib.Path(out_dir)
    vpath = build_synthetic_video(out_dir, n=n, seed=seed, n_classes=n_classes, n_frames=n_frames,
                                  duration=duration, size=size, train_frac=train_frac, pool_frac=pool_frac,
                                  test_frac=test_frac, progress=progress)
    videos = pq.read_table(vpath)
    videos_path = out_dir / "videos.parquet"
    vpath.replace(videos_path)
    v = videos.to_pylist()
    transcripts: list[str | None] = [None] * len(v)
    if asr:
        from mmal.data.asr import transcribe

        with progress_bar("synthetic-video-relevance: pocketsphinx ASR", len(v), progress) as advance:
            transcripts = transcribe([out_dir / r["audio"] for r in v], progress=advance)
    rng = np.random.default_rng([seed, 7])
    queries = list(WORDS[:n_classes]) + list(NEUTRAL_WORDS)
    cols = ("id", "query", "query_id", "label", "split", "video_id", "video", "audio", "text", "asr",
            "informative_modality", "spoken_word")
    rows: dict[str, list] = {k: [] for k in cols}
    for qk, q in enumerate(queries):
        lv = np.array([synthetic_level(q, r["label"], r["informative_modality"], r["text"], r["spoken_word"],
                                       n_classes) for r in v])
        zeros = np.flatnonzero(lv == 0)
        keep = np.flatnonzero(lv > 0).tolist()
        keep += rng.choice(zeros, min(len(zeros), int(max_zero_per_query)), replace=False).tolist()
        for i in sorted(keep):
            r = v[i]
            rows["id"].append(f"{q}|{r['id']}")
            rows["query"].append(q)
            rows["query_id"].append(f"q{qk}")
            rows["label"].append(int(lv[i]))
            rows["split"].append(r["split"])
            rows["video_id"].append(r["id"])
            rows["video"].append(r["video"])
            rows["audio"].append(r["audio"])
            rows["text"].append(r["text"])
            rows["asr"].append(transcripts[i])
            rows["informative_modality"].append(r["informative_modality"])
            rows["spoken_word"].append(r["spoken_word"])
    schema = pa.schema([(c, pa.int64() if c == "label" else pa.string()) for c in cols])
    path = write_items(pa.table(rows, schema=schema), out_dir)
    asr_hits = sum(1 for t, r in zip(transcripts, v) if t is not None and r["spoken_word"] in t.split())
    meta = {"dataset": "synthetic-video-relevance", "seed": seed, "n_clips": len(v), "n_queries": len(queries),
            "n_pairs": len(rows["id"]), "label_counts": {str(k): rows["label"].count(k) for k in range(4)},
            "asr_spoken_word_recognised": asr_hits if asr else None}
    (out_dir / "relevance_meta.json").write_text(json.dumps(meta, indent=1))
    return path
