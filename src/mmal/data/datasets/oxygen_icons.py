"""KDE Oxygen icons (Debian ``oxygen-icon-theme``, LGPL-3+): image + icon-name text, one class per context.

One item per icon name: ``image`` = the largest PNG the theme ships for it, flattened on a
white background; ``text`` = the icon name with ``-``/``_`` as spaces (``document save as``);
``label`` = the theme context it sits in (``actions``, ``apps``, ``mimetypes``, ...), among
the contexts with at least ``min_per_class`` icons. The media are copied into the output
folder at build time; nothing of the theme is committed (install the Debian package).

This dataset was added as data the learners' defaults were **not** developed on.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pyarrow as pa

from mmal.data.datasets._common import MEDIA_DIR, check_fractions, progress_bar, stratified_split, stratified_subset, write_items
from mmal.errors import ConfigError, MmalError

ICONS_DIR = pathlib.Path("/usr/share/icons/oxygen/base")
PACKAGE = "oxygen-icon-theme"


def _size(folder: str) -> int:
    head = folder.split("x")[0]
    return int(head) if head.isdigit() else 0


def scan_icons(root: pathlib.Path = ICONS_DIR) -> dict[tuple[str, str], pathlib.Path]:
    """``{(context, name): largest PNG}`` over every size folder of the theme."""
    if not root.is_dir():
        raise MmalError(f"{root}: Oxygen icons not found; install the Debian package ({PACKAGE})")
    best: dict[tuple[str, str], tuple[int, pathlib.Path]] = {}
    for size_dir in sorted(root.iterdir()):
        s = _size(size_dir.name)
        if not size_dir.is_dir() or s == 0:
            continue
        for ctx_dir in sorted(size_dir.iterdir()):
            if not ctx_dir.is_dir():
                continue
            for f in sorted(ctx_dir.glob("*.png")):
                key = (ctx_dir.name, f.stem)
                if key not in best or s > best[key][0]:
                    best[key] = (s, f)
    return {k: v[1] for k, v in best.items()}


def copy_icon(src: pathlib.Path, dst: pathlib.Path, size: int) -> None:
    """Write icon ``src`` to ``dst`` flattened on a white background, resized to ``size`` x ``size`` RGB."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        bg.convert("RGB").resize((int(size),) * 2, Image.LANCZOS).save(dst)


def icon_text(name: str) -> str:
    return " ".join(name.replace("_", "-").split("-"))


def build_oxygen_icons(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    min_per_class: int = 30,
    image_size: int = 128,
    train_frac: float = 0.1,
    pool_frac: float = 0.6,
    test_frac: float = 0.3,
    icons_dir: str | os.PathLike = ICONS_DIR,
    progress: bool = True,
) -> pathlib.Path:
    """Build the Oxygen icons dataset; return the path of ``items.parquet``.

    Parameters
    ----------
    n : a stratified subset of ``n`` icons (``None`` = all, about 2,000).
    seed : seeds the subset and the split.
    min_per_class : contexts with fewer icons are left out (``animations``, ``special``, ...).
    image_size : the copied PNG is resized to this square size (icons are square).
    train_frac, pool_frac, test_frac : split fractions per class.
    icons_dir : root of the installed theme.

    An icon name found in two contexts is kept in the first by name order (one label per item).
    """
    fractions = check_fractions(train_frac, pool_frac, test_frac)
    if int(min_per_class) < 1 or int(image_size) < 8:
        raise ConfigError(f"min_per_class must be >= 1 and image_size >= 8, got {min_per_class}, {image_size}")
    icons = scan_icons(pathlib.Path(icons_dir))
    seen, items = set(), []
    for (ctx, name), path in sorted(icons.items()):
        if name in seen:
            continue
        seen.add(name)
        items.append((ctx, name, path))
    counts: dict[str, int] = {}
    for ctx, _, _ in items:
        counts[ctx] = counts.get(ctx, 0) + 1
    classes = sorted(c for c, k in counts.items() if k >= int(min_per_class))
    if len(classes) < 2:
        raise MmalError(f"{icons_dir}: fewer than two icon contexts with >= {min_per_class} icons")
    items = [it for it in items if it[0] in classes]
    labels = np.array([classes.index(c) for c, _, _ in items], np.int64)
    rng = np.random.default_rng(seed)
    if n is not None:
        keep = stratified_subset(labels, int(n), rng)
        items = [items[i] for i in keep]
        labels = labels[keep]
    splits = stratified_split(labels, fractions, rng)
    out_dir = pathlib.Path(out_dir)
    rows: dict[str, list] = {k: [] for k in ("id", "label", "label_name", "split", "text", "image", "source")}
    with progress_bar("oxygen-icons: copying icons", len(items), progress) as advance:
        for (ctx, name, path), y, split in zip(items, labels, splits):
            dst = out_dir / MEDIA_DIR / ctx / f"{name}.png"
            copy_icon(path, dst, image_size)
            rows["id"].append(f"{ctx}.{name}")
            rows["label"].append(int(y))
            rows["split"].append(split)
            rows["text"].append(icon_text(name))
            rows["image"].append(dst.relative_to(out_dir).as_posix())
            rows["label_name"].append(ctx)
            rows["source"].append(str(path))
            advance()
    return write_items(pa.table(rows), out_dir)
