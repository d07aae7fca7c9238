"""The ``tuxpaint-scenes`` dataset: captioned scenes composed from real Tux Paint stamps.

Built for 002 ch. 5 (visual-dependence token re-weighting): every scene is a canvas with
2-5 stamps from the Debian package ``tuxpaint-stamps-default`` pasted at random places
and sizes on a varied background, and a caption that names exactly the objects drawn,
each with a size word and a position phrase, left to right::

    a big giraffe on the left and a small zebra in the middle and a small apple on the right

Because the generator knows every object it drew, CHAIR and recall on these scenes are
exact counts, not estimates (``mmal.metrics.chair``).

Co-occurrence structure (what makes a language prior hallucinate, 002 §5.2.2):
``PAIRS`` lists object pairs that usually appear together. In ``train`` scenes, when one
member of a pair is drawn its partner is drawn too with probability ``p_together``
(default 0.9). In ``test`` scenes the pairs are broken: the first object is a pair
member and its partner is never drawn, so a caption that follows the training
co-occurrence names an object that is not there.

Layout rules (documented so a test can re-derive the caption from the layout):

- canvas ``canvas`` x ``canvas`` pixels (default 128), RGB;
- background: a vertical linear gradient between two colours drawn uniformly in
  ``[40, 230]^3`` per scene (row ``r`` = ``top + (bottom - top) * r / (canvas - 1)``,
  rounded);
- each stamp is cropped to its alpha bounding box, resized (Lanczos) so its longer side
  is ``small_px`` or ``big_px`` (size word ``small`` / ``big``, each with probability
  1/2), and alpha-composited at a uniformly random place; boxes never overlap (with a
  ``gap`` pixel margin), so every drawn object is fully visible;
- position phrase from the box centre ``cx``: ``on the left`` if ``cx < canvas/3``,
  ``on the right`` if ``cx >= 2*canvas/3``, else ``in the middle``;
- objects are named left to right (by ``cx``, then ``cy``), joined by ``and``; every
  object class appears at most once per scene.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pyarrow as pa

from mmal.data.datasets._common import MEDIA_DIR, progress_bar, write_items
from mmal.data.datasets.tuxpaint import STAMPS_DIR
from mmal.errors import ConfigError, MediaError, MmalError

# object name -> stamp path relative to the stamps root (one PNG each, checked in the package)
OBJECT_STAMPS: dict[str, str] = {
    "hammer": "household/tools/hammer.png",
    "wrench": "household/tools/wrench.png",
    "teapot": "household/dishes/teapot.png",
    "mug": "household/dishes/mug.png",
    "penguin": "animals/birds/penguin.png",
    "snowman": "people/cartoon/snowman.png",
    "giraffe": "animals/mammals/giraffe.png",
    "zebra": "animals/mammals/equines/zebra.png",
    "apple": "food/fruit/cartoon/apple.png",
    "carrot": "food/vegetables/carrot.png",
    "broccoli": "food/vegetables/broccoli.png",
    "pizza": "food/pizza.png",
    "elephant": "animals/mammals/elephant.png",
    "tree": "seasonal/christmas/tree.png",
    "candle": "seasonal/candle.png",
    "mushroom": "food/vegetables/mushroom.png",
}
# pairs that usually co-occur in training and never in test
PAIRS: tuple[tuple[str, str], ...] = (("hammer", "wrench"), ("teapot", "mug"), ("penguin", "snowman"),
                                      ("giraffe", "zebra"))
POSITIONS = ("on the left", "in the middle", "on the right")
SIZES = ("small", "big")
META_FILE = "scenes_meta.json"


def partner_of() -> dict[str, str]:
    """``{object: its co-occurrence partner}`` for every member of :data:`PAIRS`."""
    out = {}
    for a, b in PAIRS:
        out[a], out[b] = b, a
    return out


def position_phrase(cx: float, canvas: int) -> str:
    """Position phrase of a box centre ``cx`` (thirds of the canvas width)."""
    if cx < canvas / 3:
        return POSITIONS[0]
    if cx >= 2 * canvas / 3:
        return POSITIONS[2]
    return POSITIONS[1]


def caption_of(objects: list[dict], canvas: int) -> str:
    """Caption naming ``objects`` (records with ``name, size, x, y, w, h``) left to right."""
    order = sorted(objects, key=lambda o: (o["x"] + o["w"] / 2, o["y"] + o["h"] / 2))
    parts = [f"a {o['size']} {o['name']} {position_phrase(o['x'] + o['w'] / 2, canvas)}" for o in order]
    return " and ".join(parts)


def gradient_background(top, bottom, canvas: int) -> np.ndarray:
    """Vertical gradient ``[canvas, canvas, 3]`` uint8 from colour ``top`` to ``bottom``."""
    top, bottom = np.asarray(top, np.float64), np.asarray(bottom, np.float64)
    r = np.arange(canvas, dtype=np.float64)[:, None] / max(canvas - 1, 1)  # [S, 1]
    rows = np.rint(top[None, :] + (bottom - top)[None, :] * r).astype(np.uint8)  # [S, 3]
    return np.repeat(rows[:, None, :], canvas, axis=1)  # -> [S, S, 3]


def load_stamps(stamps_dir: pathlib.Path, names=None) -> dict:
    """``{name: RGBA PIL image cropped to its alpha bounding box}`` for the scene objects."""
    from PIL import Image

    stamps_dir = pathlib.Path(stamps_dir)
    if not stamps_dir.is_dir():
        raise MmalError(f"Tux Paint stamps not found at {stamps_dir}; run `apt-get install "
                        f"tuxpaint-stamps-default` (or pass stamps_dir=...)")
    out = {}
    for name in (names or OBJECT_STAMPS):
        path = stamps_dir / OBJECT_STAMPS[name]
        if not path.is_file():
            raise MediaError(path, f"stamp for object '{name}' is missing from tuxpaint-stamps-default")
        im = Image.open(path).convert("RGBA")
        box = im.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
        if box is None:
            raise MediaError(path, "stamp is fully transparent")
        out[name] = im.crop(box)
    return out


def sample_objects(rng: np.random.Generator, split: str, n_target: int, *, n_max: int,
                   p_together: float) -> list[str]:
    """Object classes of one scene (distinct), with the co-occurrence rules of the module doc."""
    names = list(OBJECT_STAMPS)
    partner = partner_of()
    objs: list[str] = []
    if split == "test":  # the first object is a pair member; its partner never joins it
        members = [n for n in names if n in partner]
        objs.append(members[int(rng.integers(len(members)))])
    while len(objs) < n_target:
        avail = [n for n in names if n not in objs]
        c = avail[int(rng.integers(len(avail)))]
        p = partner.get(c)
        if split == "test":
            if p is not None and p in objs:
                continue
            objs.append(c)
        elif p is not None and p not in objs and rng.random() < p_together:
            if len(objs) + 2 > n_max:
                continue
            objs += [c, p]
        else:
            objs.append(c)
    return objs


def place_objects(rng: np.random.Generator, names: list[str], stamps: dict, *, canvas: int,
                  small_px: int, big_px: int, gap: int, tries: int = 400) -> list[dict] | None:
    """Sizes and non-overlapping boxes for ``names``; ``None`` if they do not fit."""
    objs = []
    for name in names:
        size = SIZES[int(rng.integers(2))]
        side = small_px if size == "small" else big_px
        sw, sh = stamps[name].size
        k = side / max(sw, sh)
        w, h = max(1, round(sw * k)), max(1, round(sh * k))
        for _ in range(tries):
            x, y = int(rng.integers(0, canvas - w + 1)), int(rng.integers(0, canvas - h + 1))
            if all(x + w + gap <= o["x"] or o["x"] + o["w"] + gap <= x or y + h + gap <= o["y"]
                   or o["y"] + o["h"] + gap <= y for o in objs):
                objs.append({"name": name, "stamp": OBJECT_STAMPS[name], "size": size, "x": x, "y": y, "w": w, "h": h})
                break
        else:
            return None
    return objs


def render_scene(objects: list[dict], background: dict, stamps: dict, canvas: int):
    """RGB PIL image of one scene: the gradient, then each stamp composited in its box."""
    from PIL import Image

    im = Image.fromarray(gradient_background(background["top"], background["bottom"], canvas)).convert("RGBA")
    for o in objects:
        st = stamps[o["name"]].resize((o["w"], o["h"]), Image.LANCZOS)
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        layer.paste(st, (o["x"], o["y"]))
        im = Image.alpha_composite(im, layer)
    return im.convert("RGB")


def build_tuxpaint_scenes(
    out_dir: pathlib.Path,
    *,
    n: int | None = None,
    seed: int = 0,
    test_frac: float = 0.25,
    canvas: int = 128,
    min_objects: int = 2,
    max_objects: int = 5,
    small_px: int = 26,
    big_px: int = 40,
    gap: int = 2,
    p_together: float = 0.9,
    stamps_dir: str | os.PathLike = STAMPS_DIR,
    progress: bool = True,
) -> pathlib.Path:
    """Build ``n`` captioned scenes (default 2000); return the path of ``items.parquet``.

    Columns: ``id`` (``scene-00000``), ``label`` (null: captioning has no class label),
    ``split`` (``train`` / ``test``), ``image`` (``media/scene-00000.png``), ``text`` (the
    caption), ``objects`` (JSON list of object names, caption order), ``layout_json``
    (JSON: background colours and one record per object: name, stamp, size, x, y, w, h).
    ``scenes_meta.json`` beside it lists the object vocabulary, the pairs and the options.

    Parameters
    ----------
    n : number of scenes (default 2000); the last ``round(test_frac * n)`` are ``test``.
    seed : seeds every choice (objects, sizes, places, colours): same seed, same bytes.
    test_frac : fraction of test scenes (pairs broken, see the module doc).
    canvas : canvas side in pixels.
    min_objects, max_objects : objects per scene, drawn uniformly in this range.
    small_px, big_px : longer side of a ``small`` / ``big`` stamp.
    gap : minimum pixel gap between two boxes.
    p_together : probability that a pair member drawn in a train scene brings its partner.
    stamps_dir : root of the installed stamps.
    """
    n = 2000 if n is None else int(n)
    checks = [
        (0.0 < test_frac < 1.0, f"test_frac must be in (0, 1), got {test_frac}"),
        (1 <= min_objects <= max_objects <= 6, f"need 1 <= min_objects <= max_objects <= 6, got {min_objects}, {max_objects}"),
        (max_objects >= 2 or p_together == 0, "max_objects must be >= 2 when p_together > 0"),
        (0.0 <= p_together <= 1.0, f"p_together must be in [0, 1], got {p_together}"),
        (8 <= small_px <= big_px < canvas // 2, f"need 8 <= small_px <= big_px < canvas/2, got {small_px}, {big_px}, canvas {canvas}"),
        (n >= 2, f"n must be >= 2, got {n}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError("tuxpaint-scenes: " + msg)
    rng = np.random.default_rng(seed)
    stamps = load_stamps(pathlib.Path(stamps_dir))
    n_test = max(1, round(test_frac * n))
    out_dir = pathlib.Path(out_dir)
    (out_dir / MEDIA_DIR).mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {k: [] for k in ("id", "split", "image", "text", "objects", "layout_json")}
    with progress_bar("tuxpaint-scenes: rendering", n, progress) as advance:
        for i in range(n):
            split = "test" if i >= n - n_test else "train"
            while True:
                k = int(rng.integers(min_objects, max_objects + 1))
                names = sample_objects(rng, split, k, n_max=max_objects, p_together=p_together)
                objs = place_objects(rng, names, stamps, canvas=canvas, small_px=small_px, big_px=big_px, gap=gap)
                if objs is not None:
                    break
            bg = {"top": [int(v) for v in rng.integers(40, 231, 3)], "bottom": [int(v) for v in rng.integers(40, 231, 3)]}
            sid = f"scene-{i:05d}"
            rel = f"{MEDIA_DIR}/{sid}.png"
            render_scene(objs, bg, stamps, canvas).save(out_dir / rel)
            caption = caption_of(objs, canvas)
            order = sorted(objs, key=lambda o: (o["x"] + o["w"] / 2, o["y"] + o["h"] / 2))
            rows["id"].append(sid)
            rows["split"].append(split)
            rows["image"].append(rel)
            rows["text"].append(caption)
            rows["objects"].append(json.dumps([o["name"] for o in order]))
            rows["layout_json"].append(json.dumps({"background": bg, "objects": objs}, sort_keys=True))
            advance()
    meta = {"objects": list(OBJECT_STAMPS), "pairs": [list(p) for p in PAIRS], "canvas": canvas, "seed": seed, "n": n,
            "test_frac": test_frac, "min_objects": min_objects, "max_objects": max_objects, "small_px": small_px,
            "big_px": big_px, "gap": gap, "p_together": p_together}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1))
    schema = pa.schema([("id", pa.string()), ("label", pa.int64()), ("split", pa.string()), ("image", pa.string()),
                        ("text", pa.string()), ("objects", pa.string()), ("layout_json", pa.string())])
    rows["label"] = [None] * n
    return write_items(pa.table(rows, schema=schema), out_dir)


__all__ = ["build_tuxpaint_scenes", "OBJECT_STAMPS", "PAIRS", "caption_of", "position_phrase",
           "gradient_background", "render_scene", "load_stamps", "partner_of", "META_FILE"]
