"""Helpers for the tuxpaint-scenes / captioner tests: fake stamps and fake feature caches."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from mmal.data.datasets.tuxpaint_scenes import OBJECT_STAMPS


def stamp_colour(k: int) -> tuple[int, int, int]:
    """Distinct opaque colour of fake stamp ``k``; one channel is 0 or 255, outside the
    backgrounds' [40, 230], so a stamp pixel never equals a background pixel."""
    r, g, b = colorsys.hsv_to_rgb(k / len(OBJECT_STAMPS), 1.0, 1.0)
    return tuple(int(round(255 * c)) for c in (r, g, b))


def fake_stamps(root: Path) -> Path:
    """A stamps tree with one fully opaque solid-colour PNG per scene object (varied aspect)."""
    from PIL import Image

    for k, (name, rel) in enumerate(OBJECT_STAMPS.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        w, h = (60, 40) if k % 2 else (40, 60)
        Image.new("RGBA", (w, h), stamp_colour(k) + (255,)).save(p)
    return root


def fake_features(scenes, steps=(0, 500, 900), n_patches=4, dim=8, seed=0):
    """Write random patch features into the feature cache of ``scenes`` (no image tower).

    The clean features carry the objects (a fixed random code per object summed into the
    patches) so a tiny model can learn something; the noised ones are clean * 0.3 + noise.
    """
    from mmal.loop.captioning import feature_path

    rng = np.random.default_rng(seed)
    code = {o: rng.standard_normal((n_patches, dim)) for o in scenes.object_words}
    for split in ("train", "test"):
        idx = scenes.index(split)
        clean = np.stack([sum(code[o] for o in scenes.objects[i]) for i in idx]) + 0.1 * rng.standard_normal(
            (len(idx), n_patches, dim))
        for st in steps:
            f = clean if st == 0 else 0.3 * clean + rng.standard_normal(clean.shape)
            p = feature_path(scenes, split, st)
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, f.astype(np.float16))
