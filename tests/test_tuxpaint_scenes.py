"""tuxpaint-scenes: captions name exactly the objects drawn (records and rendered pixels)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from scenes_support import fake_stamps, stamp_colour

from mmal.data.datasets import DATASETS, build
from mmal.data.datasets.tuxpaint import STAMPS_DIR
from mmal.data.datasets.tuxpaint_scenes import (OBJECT_STAMPS, PAIRS, caption_of, gradient_background,
                                               partner_of)
from mmal.errors import ConfigError, MmalError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    stamps = fake_stamps(root / "stamps")
    path = build("tuxpaint-scenes", root / "out", n=80, seed=3, stamps_dir=stamps, progress=False)
    return path, pq.read_table(path).to_pylist()


def test_registered_with_description():
    assert "tuxpaint-scenes" in DATASETS and DATASETS["tuxpaint-scenes"].description
    assert DATASETS["tuxpaint-scenes"].options()["p_together"] == 0.9


def test_caption_names_exactly_the_recorded_objects(built):
    _, rows = built
    for r in rows:
        layout = json.loads(r["layout_json"])
        recorded = [o["name"] for o in layout["objects"]]
        named = [w for w in r["text"].split() if w in OBJECT_STAMPS]
        assert sorted(named) == sorted(recorded) == sorted(json.loads(r["objects"]))
        assert len(set(named)) == len(named)  # each object once
        assert 2 <= len(named) <= 5
        assert r["text"] == caption_of(layout["objects"], 128)


def _derive_from_pixels(path, background):
    """Objects re-derived from the rendered image only: connected non-background regions,
    their colour (-> which fake stamp), bounding box."""
    from PIL import Image
    from scipy import ndimage

    im = np.asarray(Image.open(path).convert("RGB")).astype(int)
    bg = gradient_background(background["top"], background["bottom"], im.shape[0]).astype(int)
    fg = (im != bg).any(-1)  # [S, S]
    lab, k = ndimage.label(fg)
    colours = np.array([stamp_colour(i) for i in range(len(OBJECT_STAMPS))])
    names = list(OBJECT_STAMPS)
    objs = []
    for sl in ndimage.find_objects(lab):
        ys, xs = sl
        centre = im[(ys.start + ys.stop) // 2, (xs.start + xs.stop) // 2]
        dist = np.abs(colours - centre).sum(1)
        assert dist.min() <= 6, f"region colour {centre} is no stamp colour"
        w, h = xs.stop - xs.start, ys.stop - ys.start
        objs.append({"name": names[int(dist.argmin())], "x": xs.start, "y": ys.start, "w": w, "h": h,
                     "size": "small" if max(w, h) < 33 else "big"})
    return objs


def test_caption_rederived_from_rendered_pixels(built):
    path, rows = built
    for r in rows:
        layout = json.loads(r["layout_json"])
        derived = _derive_from_pixels(path.parent / r["image"], layout["background"])
        assert caption_of(derived, 128) == r["text"]  # names, sizes, positions and order from pixels alone


def test_cooccurrence_in_train_broken_in_test(built):
    _, rows = built
    partner = partner_of()
    together = alone = 0
    for r in rows:
        objs = set(json.loads(r["objects"]))
        members = [o for o in objs if o in partner]
        if r["split"] == "test":
            assert members, "every test scene holds a pair member"
            assert all(partner[o] not in objs for o in members), "pairs are broken in test"
        else:
            for a, b in PAIRS:
                if a in objs or b in objs:
                    together += a in objs and b in objs
                    alone += (a in objs) != (b in objs)
    assert together > 3 * alone
    assert sum(r["split"] == "test" for r in rows) == 20


def test_deterministic_and_bad_options(tmp_path, built):
    path, rows = built
    stamps = fake_stamps(tmp_path / "stamps")
    again = pq.read_table(build("tuxpaint-scenes", tmp_path / "o2", n=80, seed=3, stamps_dir=stamps,
                                progress=False)).to_pylist()
    assert [r["text"] for r in again] == [r["text"] for r in rows]
    with pytest.raises(ConfigError, match="p_together"):
        build("tuxpaint-scenes", tmp_path / "o3", n=10, p_together=1.5, stamps_dir=stamps, progress=False)
    with pytest.raises(MmalError, match="tuxpaint-stamps-default"):
        build("tuxpaint-scenes", tmp_path / "o4", n=10, stamps_dir=tmp_path / "none", progress=False)


@pytest.mark.skipif(not STAMPS_DIR.is_dir(), reason="tuxpaint-stamps-default not installed")
def test_real_stamps_background_untouched_outside_boxes(tmp_path):
    from PIL import Image

    path = build("tuxpaint-scenes", tmp_path / "real", n=6, seed=0, progress=False)
    for r in pq.read_table(path).to_pylist():
        layout = json.loads(r["layout_json"])
        im = np.asarray(Image.open(path.parent / r["image"]).convert("RGB"))
        bg = gradient_background(layout["background"]["top"], layout["background"]["bottom"], im.shape[0])
        inside = np.zeros(im.shape[:2], bool)
        for o in layout["objects"]:
            inside[o["y"]:o["y"] + o["h"], o["x"]:o["x"] + o["w"]] = True
            assert (im[o["y"]:o["y"] + o["h"], o["x"]:o["x"] + o["w"]] != bg[o["y"]:o["y"] + o["h"],
                                                                             o["x"]:o["x"] + o["w"]]).any()
        assert (im[~inside] == bg[~inside]).all()  # nothing drawn outside the recorded boxes
        assert sorted(w for w in r["text"].split() if w in OBJECT_STAMPS) == sorted(o["name"] for o in layout["objects"])
