"""The ``tuxpaint`` dataset: Tux Paint stamps as image + caption + spoken description.

Built at run time from the Debian package ``tuxpaint-stamps-default`` (GPL; the data is
copied into the output folder and never shipped with mmal).

File naming inside ``/usr/share/tuxpaint/stamps/<category>/.../`` (learned from the
package itself):

- ``NAME.txt``: first non-empty line = English caption, then ``LOCALE.utf8=caption``
  lines for other locales;
- ``NAME.png`` and/or ``NAME.svg``: the stamp image (``NAME_mirror.png`` = pre-mirrored
  variant, no ``.txt``, not a stamp of its own);
- ``NAME.ogg`` / ``NAME.wav``: a sound effect;
- ``NAME_desc.ogg``: English spoken description; ``NAME_desc_LOCALE.ogg`` (or ``.wav``):
  spoken description in another locale (``fr``, ``ru``, ``ro``, ``ca``, ``pt_BR`` ...).

A stamp is a ``.txt`` with a ``.png`` or ``.svg`` beside it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmal.data.datasets._common import (
    MEDIA_DIR,
    check_fractions,
    progress_bar,
    stratified_split,
    stratified_subset,
    write_items,
)
from mmal.errors import ConfigError, MediaError, MmalError

STAMPS_DIR = pathlib.Path("/usr/share/tuxpaint/stamps")
_DESC_RE = re.compile(r"^(?P<stem>.+)_desc(?:_(?P<loc>[A-Za-z]{2,3}(?:_[A-Z]{2})?(?:@\w+)?))?\.(?:ogg|wav)$")
_CAPTION_RE = re.compile(r"^\s*(?P<loc>[^=\s]+)\.utf8\s*=(?P<text>.*)$")


@dataclass
class Stamp:
    """One stamp found on disk (paths absolute, ``rel`` relative to the stamps root)."""

    rel: str  # e.g. "animals/birds/blackbird"
    txt: pathlib.Path
    png: pathlib.Path | None
    svg: pathlib.Path | None
    sfx: pathlib.Path | None
    desc: dict[str, pathlib.Path] = field(default_factory=dict)  # locale -> file

    @property
    def category(self) -> str:
        return self.rel.split("/", 1)[0]

    @property
    def subcategory(self) -> str:
        return os.path.dirname(self.rel)


def parse_caption(path: pathlib.Path) -> tuple[str, dict[str, str]]:
    """Read a stamp ``.txt``: return (English caption, {locale: caption})."""
    english, other = None, {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        m = _CAPTION_RE.match(line)
        if m:
            other[m.group("loc")] = m.group("text").strip()
        elif english is None:
            english = line.strip()
    if english is None:
        raise MediaError(path, "stamp description has no English caption (first line)")
    return english, other


def scan_stamps(root: pathlib.Path = STAMPS_DIR) -> list[Stamp]:
    """Find every stamp under ``root``, sorted by relative path.

    Raises
    ------
    MmalError
        If ``root`` does not exist (the Debian package is not installed).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise MmalError(
            f"Tux Paint stamps not found at {root}; run `apt-get install "
            f"tuxpaint-stamps-default` (or pass stamps_dir=...)"
        )
    stamps = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files = set(filenames)
        desc: dict[str, dict[str, pathlib.Path]] = {}
        for f in filenames:
            m = _DESC_RE.match(f)
            if m:
                desc.setdefault(m.group("stem"), {})[m.group("loc") or "en"] = pathlib.Path(dirpath, f)
        for f in sorted(filenames):
            stem, ext = os.path.splitext(f)
            if ext != ".txt":
                continue
            png = stem + ".png" in files
            svg = stem + ".svg" in files
            if not (png or svg):
                continue  # caption without image (e.g. seasonal/christmas/gift)
            sfx = next((stem + e for e in (".ogg", ".wav") if stem + e in files), None)
            rel = pathlib.Path(dirpath, stem).relative_to(root).as_posix()
            stamps.append(
                Stamp(
                    rel=rel,
                    txt=pathlib.Path(dirpath, f),
                    png=pathlib.Path(dirpath, stem + ".png") if png else None,
                    svg=pathlib.Path(dirpath, stem + ".svg") if svg else None,
                    sfx=pathlib.Path(dirpath, sfx) if sfx else None,
                    desc=dict(sorted(desc.get(stem, {}).items())),
                )
            )
    stamps.sort(key=lambda s: s.rel)
    return stamps


def _render_svg(src: pathlib.Path, dst: pathlib.Path, width: int) -> None:
    """Rasterise an SVG to PNG with ffmpeg's librsvg decoder (aspect ratio kept)."""
    if shutil.which("ffmpeg") is None:
        raise MmalError("converting SVG stamps needs ffmpeg; run `apt-get install ffmpeg` (or svg='skip')")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-width", str(width), "-i", str(src),
           "-frames:v", "1", str(dst)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not dst.exists():
        raise MediaError(src, f"could not rasterise SVG with ffmpeg/librsvg: {res.stderr.strip()[-300:]}")


def build_tuxpaint(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    audio_locale: str | Sequence[str] = "fr",
    train_frac: float = 0.1,
    pool_frac: float = 0.7,
    test_frac: float = 0.2,
    svg: str = "convert",
    svg_width: int = 256,
    stamps_dir: str | os.PathLike = STAMPS_DIR,
    progress: bool = True,
) -> pathlib.Path:
    """Build the Tux Paint stamps dataset; return the path of ``items.parquet``.

    One item per stamp: ``image`` (PNG), ``text`` (English caption), ``audio`` (spoken
    description), ``label`` (index of the top-level category among the sorted names of all
    top-level folders that hold a stamp, so labels do not depend on ``n``), ``split``.

    Parameters
    ----------
    out_dir :
        Output folder; media are copied under ``out_dir/media/<category>/...``.
    n :
        Take a subset of ``n`` stamps, stratified by category (every category keeps at
        least one stamp when ``n`` >= number of categories); ``None`` = all stamps.
    seed :
        Seeds the subset and the split.
    audio_locale :
        Locale(s) of the spoken description to use when a stamp has no English
        recording (``NAME_desc.ogg``); tried in order (e.g. ``("fr", "ru")``). Stamps
        with neither get ``audio = null``. The choice is recorded in ``audio_source``
        (``desc_en``, ``desc_fr`` ... or null). Sound effects are never used as audio.
    train_frac, pool_frac, test_frac :
        Split fractions, applied per category (stratified, largest-remainder rounding).
    svg :
        ``"convert"``: rasterise SVG-only stamps to PNG with ffmpeg (librsvg);
        ``"skip"``: leave SVG-only stamps out. Stamps with a PNG always use the PNG.
    svg_width :
        Width in pixels of rasterised SVGs (height follows the aspect ratio).
    stamps_dir :
        Root of the installed stamps.
    progress :
        Show a rich progress bar while copying.

    Raises
    ------
    MmalError
        If the stamps folder is missing (names the Debian package to install).
    ConfigError
        On a bad option value.
    """
    fractions = check_fractions(train_frac, pool_frac, test_frac)
    if svg not in ("convert", "skip"):
        raise ConfigError(f"svg must be 'convert' or 'skip', got {svg!r}")
    locales = [audio_locale] if isinstance(audio_locale, str) else list(audio_locale)
    rng = np.random.default_rng(seed)
    stamps_dir = pathlib.Path(stamps_dir)
    stamps = scan_stamps(stamps_dir)
    # Categories = top-level folders holding at least one stamp in the full scan, so
    # labels do not depend on n / svg ("cartoon/" only has caption-less Tux images).
    categories = sorted({s.category for s in stamps})
    if svg == "skip":
        stamps = [s for s in stamps if s.png is not None]
    if not stamps:
        raise MmalError(f"no stamps (a .txt with a .png/.svg) found under {stamps_dir}")
    cat_index = {c: i for i, c in enumerate(categories)}
    labels = np.array([cat_index[s.category] for s in stamps], dtype=np.int64)  # [N]
    if n is not None:
        keep = stratified_subset(labels, int(n), rng)
        stamps = [stamps[i] for i in keep]
        labels = labels[keep]
    splits = stratified_split(labels, fractions, rng)

    out_dir = pathlib.Path(out_dir)
    media = out_dir / MEDIA_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {k: [] for k in (
        "id", "label", "label_name", "split", "text", "image", "audio", "category", "subcategory",
        "sfx", "audio_source", "desc_locales", "captions_json", "image_source", "source")}
    with progress_bar("tuxpaint: copying stamps", len(stamps), progress) as advance:
        for stamp, label, split in zip(stamps, labels, splits):
            english, captions = parse_caption(stamp.txt)
            dst_dir = media / stamp.subcategory
            dst_dir.mkdir(parents=True, exist_ok=True)
            name = pathlib.PurePosixPath(stamp.rel).name
            image = dst_dir / f"{name}.png"
            if stamp.png is not None:
                shutil.copyfile(stamp.png, image)
            else:
                _render_svg(stamp.svg, image, svg_width)
            sfx = None
            if stamp.sfx is not None:
                sfx = dst_dir / stamp.sfx.name
                shutil.copyfile(stamp.sfx, sfx)
            audio, source = None, None
            for loc in ["en", *locales]:
                if loc in stamp.desc:
                    audio = dst_dir / stamp.desc[loc].name
                    shutil.copyfile(stamp.desc[loc], audio)
                    source = f"desc_{loc}"
                    break
            rows["id"].append(stamp.rel.replace("/", "."))
            rows["label"].append(int(label))
            rows["label_name"].append(stamp.category)
            rows["split"].append(split)
            rows["text"].append(english)
            rows["image"].append(image.relative_to(out_dir).as_posix())
            rows["audio"].append(audio.relative_to(out_dir).as_posix() if audio else None)
            rows["category"].append(stamp.category)
            rows["subcategory"].append(stamp.subcategory)
            rows["sfx"].append(sfx.relative_to(out_dir).as_posix() if sfx else None)
            rows["audio_source"].append(source)
            rows["desc_locales"].append(",".join(stamp.desc))
            rows["captions_json"].append(json.dumps(captions, ensure_ascii=False, sort_keys=True))
            rows["image_source"].append("png" if stamp.png is not None else "svg")
            rows["source"].append(stamp.rel)
            advance()
    schema = pa.schema([
        ("id", pa.string()), ("label", pa.int64()), ("label_name", pa.string()), ("split", pa.string()),
        ("text", pa.string()), ("image", pa.string()), ("audio", pa.string()),
        ("category", pa.string()), ("subcategory", pa.string()), ("sfx", pa.string()),
        ("audio_source", pa.string()), ("desc_locales", pa.string()),
        ("captions_json", pa.string()), ("image_source", pa.string()), ("source", pa.string()),
    ])
    table = pa.table(rows, schema=schema)
    return write_items(table, out_dir)
