"""Dataset builders: write an items file (``items.parquet``) plus media into a folder.

>>> from mmal.data.datasets import build, DATASETS
>>> path = build("synthetic-video", "out/video", n=24, seed=0)  # doctest: +SKIP

Every builder is deterministic by ``seed``, shows a rich progress bar unless
``progress=False``, and returns the path of the written ``items.parquet`` (DESIGN.md
"Items": ``id``, ``label``, ``split``, modality columns with paths relative to the items
file, other columns = metadata). See ``docs/datasets.md``.
"""

from __future__ import annotations

import inspect
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

from mmal.data.datasets.synthetic_embeddings import build_synthetic_embeddings, load_synthetic_embeddings
from mmal.data.datasets.synthetic_video import build_synthetic_video
from mmal.data.datasets.oxygen_icons import build_oxygen_icons
from mmal.data.datasets.oxygen_icons_relevance import build_oxygen_icons_relevance
from mmal.data.datasets.rare_positive import build_oxygen_icons_binary, build_tuxpaint_binary
from mmal.data.datasets.tuxpaint import build_tuxpaint
from mmal.data.datasets.tuxpaint_relevance import build_tuxpaint_relevance
from mmal.data.datasets.tuxpaint_scenes import build_tuxpaint_scenes
from mmal.data.datasets.synthetic_video_relevance import build_synthetic_video_relevance
from mmal.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: ``builder(out_dir, *, n, seed, **options) -> Path``."""

    name: str
    builder: Callable[..., pathlib.Path]
    description: str

    def options(self) -> dict[str, object]:
        """Keyword options of the builder (other than ``n``/``seed``) with defaults."""
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in ("n", "seed")}


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("tuxpaint", build_tuxpaint,
                    "Tux Paint stamps (Debian tuxpaint-stamps-default): image + caption + spoken "
                    "description, 16 categories"),
        DatasetSpec("tuxpaint-binary", build_tuxpaint_binary,
                    "Tux Paint, one category against the rest at 5 % positives (rare positives, 000)"),
        DatasetSpec("oxygen-icons", build_oxygen_icons,
                    "KDE Oxygen icons (Debian oxygen-icon-theme): image + icon-name text, one class per "
                    "icon context; about 2,000 items"),
        DatasetSpec("oxygen-icons-binary", build_oxygen_icons_binary,
                    "Oxygen icons, one context against the rest at 5 % positives"),
        DatasetSpec("synthetic-video", build_synthetic_video,
                    "mp4 clips (frames + espeak speech + tones) + titles; one informative modality "
                    "per item, 4 classes"),
        DatasetSpec("synthetic-embeddings", build_synthetic_embeddings,
                    "N x D clustered float32 vectors with planted label-noise regions (memmap, up "
                    "to 10M rows)"),
        DatasetSpec("tuxpaint-relevance", build_tuxpaint_relevance,
                    "(query, stamp) pairs with relevance levels 0..3 from the Tux Paint category tree; "
                    "caption / other-locale captions / pocketsphinx ASR text fields"),
        DatasetSpec("oxygen-icons-relevance", build_oxygen_icons_relevance,
                    "(query, icon) pairs with relevance levels 0..3 from Oxygen icon names, families and "
                    "contexts (Debian oxygen-icon-theme); held-out data for the relevance defaults"),
        DatasetSpec("synthetic-video-relevance", build_synthetic_video_relevance,
                    "(query, clip) pairs with relevance levels 0..3 over the synthetic videos; title + "
                    "pocketsphinx ASR text fields"),
        DatasetSpec("tuxpaint-scenes", build_tuxpaint_scenes,
                    "captioned scenes of 2-5 Tux Paint stamps with exact object lists; co-occurring pairs in "
                    "train, broken in test (002 ch. 5)"),
    )
}


def build(name: str, out_dir: str | os.PathLike, *, n: int | None = None, seed: int = 0,
          **options) -> pathlib.Path:
    """Build dataset ``name`` into ``out_dir``; return the path of its ``items.parquet``.

    Parameters
    ----------
    name :
        A key of :data:`DATASETS`.
    out_dir :
        Output folder (created; existing files of the same names are overwritten).
    n :
        Number of items (``None`` = the dataset's default / all).
    seed :
        Seed for every random choice.
    **options :
        Builder-specific keyword options (see ``DATASETS[name].options()``), e.g.
        ``progress=False``.

    Raises
    ------
    ConfigError
        Unknown dataset name or option.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(sorted(DATASETS))}")
    valid = spec.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(sorted(valid))}")
    if n is not None and int(n) < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    return spec.builder(pathlib.Path(out_dir), n=n, seed=seed, **options)


__all__ = ["DATASETS", "DatasetSpec", "build", "build_tuxpaint", "build_synthetic_video",
           "build_synthetic_embeddings", "load_synthetic_embeddings",
           "build_tuxpaint_relevance", "build_synthetic_video_relevance", "build_oxygen_icons",
           "build_tuxpaint_binary", "build_oxygen_icons_binary", "build_oxygen_icons_relevance"]
