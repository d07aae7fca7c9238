"""Tests for mmal.data.datasets: tuxpaint, synthetic-video, synthetic-embeddings."""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mmal.data.datasets import DATASETS, build, load_synthetic_embeddings
from mmal.data.datasets._common import largest_remainder, stratified_split, stratified_subset
from mmal.data.datasets.synthetic_video import NEUTRAL_WORDS, SHAPES, WORDS
from mmal.data.datasets.tuxpaint import STAMPS_DIR, scan_stamps
from mmal.errors import ConfigError, MmalError

needs_stamps = pytest.mark.skipif(not STAMPS_DIR.is_dir(), reason="tuxpaint-stamps-default not installed")
needs_av_tools = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None, reason="ffmpeg/espeak-ng missing")


def _read(path):
    return pq.read_table(path).to_pandas()


# ---------------------------------------------------------------- registry + helpers


def test_registry_names_and_errors(tmp_path):
    assert set(DATASETS) == {"tuxpaint", "synthetic-video", "synthetic-embeddings", "tuxpaint-relevance",
                             "synthetic-video-relevance", "oxygen-icons", "tuxpaint-binary", "oxygen-icons-binary",
                             "tuxpaint-scenes", "oxygen-icons-relevance"}
    assert all(spec.description for spec in DATASETS.values())
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        build("nope", tmp_path)
    with pytest.raises(ConfigError, match="no option.*colour"):
        build("synthetic-embeddings", tmp_path, n=10, colour="red")
    with pytest.raises(ConfigError, match="sum to 1"):
        build("synthetic-embeddings", tmp_path, n=10, train_frac=0.5, progress=False)


def test_largest_remainder_sums_and_is_proportional():
    parts = largest_remainder(10, [0.1, 0.7, 0.2])
    assert parts.tolist() == [1, 7, 2]
    parts = largest_remainder(7, [1, 1, 1])
    assert parts.sum() == 7 and parts.max() - parts.min() <= 1


def test_stratified_subset_and_split():
    strata = np.repeat(np.arange(4), [50, 30, 15, 5])
    rng = np.random.default_rng(0)
    idx = stratified_subset(strata, 20, rng)
    assert len(idx) == 20 == len(set(idx.tolist()))
    assert set(strata[idx]) == {0, 1, 2, 3}  # every stratum kept
    counts = np.bincount(strata[idx])
    assert counts[0] > counts[1] > counts[3]
    split = stratified_split(strata, np.array([0.1, 0.7, 0.2]), np.random.default_rng(1))
    for s in range(4):
        vals = split[strata == s]
        n = len(vals)
        assert abs((vals == "train").sum() - 0.1 * n) < 1 and abs((vals == "test").sum() - 0.2 * n) < 1


# ---------------------------------------------------------------- tuxpaint (fake tree)


def _write_png(path):
    from PIL import Image

    Image.new("RGBA", (8, 6), (255, 0, 0, 255)).save(path)


@pytest.fixture
def fake_stamps(tmp_path):
    root = tmp_path / "stamps"
    (root / "animals" / "birds").mkdir(parents=True)
    (root / "food").mkdir()
    (root / "cartoon").mkdir()
    b = root / "animals" / "birds"
    (b / "owl.txt").write_text("An owl.\nfr.utf8=Une chouette.\nde.utf8=Eine Eule.\n")
    _write_png(b / "owl.png")
    (b / "owl_desc.ogg").write_bytes(b"en")
    (b / "owl_desc_fr.ogg").write_bytes(b"fr")
    (b / "owl.ogg").write_bytes(b"sfx")
    _write_png(b / "owl_mirror.png")
    (b / "crow.txt").write_text("A crow.\n")
    _write_png(b / "crow.png")
    (b / "crow_desc_ru.ogg").write_bytes(b"ru")
    (b / "crow_desc_fr.ogg").write_bytes(b"fr")
    (b / "jay.txt").write_text("A jay.\n")
    _write_png(b / "jay.png")
    (b / "jay_desc_ru.ogg").write_bytes(b"ru")
    f = root / "food"
    (f / "pear.txt").write_text("A pear.\nru.utf8=Груша.\n")
    (f / "pear.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10">'
        '<rect width="20" height="10" fill="green"/></svg>')
    (f / "gift.txt").write_text("A gift.\n")  # caption without image: not a stamp
    _write_png(root / "cartoon" / "tux.png")  # image without caption: not a stamp
    return root


def test_tuxpaint_fake_tree_audio_sources_and_svg(tmp_path, fake_stamps):
    assert [s.rel for s in scan_stamps(fake_stamps)] == [
        "animals/birds/crow", "animals/birds/jay", "animals/birds/owl", "food/pear"]
    out = tmp_path / "out"
    path = build("tuxpaint", out, stamps_dir=fake_stamps, progress=False, audio_locale="fr")
    df = _read(path).set_index("id")
    assert df.loc["animals.birds.owl", "audio_source"] == "desc_en"
    assert (out / df.loc["animals.birds.owl", "audio"]).read_bytes() == b"en"
    assert (out / df.loc["animals.birds.owl", "sfx"]).read_bytes() == b"sfx"
    assert df.loc["animals.birds.crow", "audio_source"] == "desc_fr"
    assert (out / df.loc["animals.birds.crow", "audio"]).read_bytes() == b"fr"
    assert pd.isna(df.loc["animals.birds.jay", "audio_source"]) and pd.isna(df.loc["animals.birds.jay", "audio"])
    assert df.loc["animals.birds.owl", "text"] == "An owl."
    assert '"fr": "Une chouette."' in df.loc["animals.birds.owl", "captions_json"]
    assert pd.isna(df.loc["animals.birds.crow", "sfx"])
    # labels: index among categories that hold stamps ("cartoon" has none)
    assert df.loc["food.pear", "label"] == 1 and df.loc["animals.birds.owl", "label"] == 0
    # SVG-only stamp rasterised to a real PNG
    if shutil.which("ffmpeg"):
        from PIL import Image

        assert df.loc["food.pear", "image_source"] == "svg"
        with Image.open(out / df.loc["food.pear", "image"]) as im:
            assert im.format == "PNG" and im.size[0] == 256 and im.size[1] == 128
    # locale fallback order
    df2 = _read(build("tuxpaint", tmp_path / "out2", stamps_dir=fake_stamps, progress=False,
                      audio_locale=("ru", "fr"), svg="skip")).set_index("id")
    assert df2.loc["animals.birds.crow", "audio_source"] == "desc_ru"
    assert df2.loc["animals.birds.jay", "audio_source"] == "desc_ru"
    assert "food.pear" not in df2.index


def test_tuxpaint_missing_dir_names_package(tmp_path):
    with pytest.raises(MmalError, match="apt-get install tuxpaint-stamps-default"):
        build("tuxpaint", tmp_path / "o", stamps_dir=tmp_path / "missing", progress=False)


# ---------------------------------------------------------------- tuxpaint (real package)


@needs_stamps
def test_tuxpaint_real_subset(tmp_path):
    out = tmp_path / "tux"
    path = build("tuxpaint", out, n=40, seed=0, progress=False)
    assert path == out / "items.parquet"
    df = _read(path)
    assert len(df) == 40 and df["id"].is_unique
    # labels <-> categories one-to-one, label = rank of the category name
    all_cats = sorted({s.category for s in scan_stamps()})
    assert set(df["category"]) == set(all_cats)  # n >= #categories: every class kept
    assert (df["label"] == df["category"].map(all_cats.index)).all()
    # relative paths that exist
    for col in ("image", "audio", "sfx"):
        for rel in df[col].dropna():
            assert not pathlib.PurePath(rel).is_absolute() and rel.startswith("media/")
            assert (out / rel).is_file() and (out / rel).stat().st_size > 0
    # audio_source consistent with the copied file
    assert df["audio_source"].notna().sum() > 0
    for rel, src in zip(df["audio"], df["audio_source"]):
        if pd.isna(src):
            assert pd.isna(rel)
        elif src == "desc_en":
            assert rel.endswith("_desc.ogg")
        else:
            assert rel.endswith(f"_desc_{src[5:]}.ogg") or rel.endswith(f"_desc_{src[5:]}.wav")
    assert set(df["split"]) <= {"train", "pool", "test"}
    # deterministic by seed, different across seeds
    again = _read(build("tuxpaint", tmp_path / "tux_again", n=40, seed=0, progress=False))
    assert again.equals(df)
    other = _read(build("tuxpaint", tmp_path / "tux_s1", n=40, seed=1, progress=False))
    assert list(zip(other["id"], other["split"])) != list(zip(df["id"], df["split"]))


# ---------------------------------------------------------------- synthetic-video


@needs_av_tools
def test_synthetic_video_decodes_and_rule_columns(tmp_path):
    import av

    out = tmp_path / "vid"
    df = _read(build("synthetic-video", out, n=12, seed=3, progress=False))
    assert len(df) == 12 and df["id"].is_unique
    assert (df["video"] == df["audio"]).all()
    assert set(df["informative_modality"]) == {"video", "audio", "text"}
    assert (df["audio_sensitive"] == (df["informative_modality"] == "audio")).all()
    assert df["audio_sensitive"].sum() > 0
    for row in df.itertuples():
        c = row.label
        words_in_title = [w for w in WORDS if w in row.text]
        if row.informative_modality == "video":
            assert row.shape == SHAPES[c]
        else:
            assert pd.isna(row.shape)
        if row.informative_modality == "audio":
            assert row.spoken_word == WORDS[c]
        else:
            assert row.spoken_word in NEUTRAL_WORDS
        assert words_in_title == ([WORDS[c]] if row.informative_modality == "text" else [])
    rel = df["video"].iloc[0]
    assert not pathlib.PurePath(rel).is_absolute()
    with av.open(str(out / rel)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(out / rel)) as container:
        rate = container.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert len(frames) == 8 and frames[0].shape == (128, 128, 3)
    assert frames[0].std() > 5  # drawn content, not a blank frame
    assert abs(len(audio) / rate - 2.0) < 0.15
    assert np.abs(audio).max() > 0.1  # speech + tones present
    # deterministic by seed (bit-exact mp4s)
    again = tmp_path / "vid2"
    df2 = _read(build("synthetic-video", again, n=12, seed=3, progress=False))
    assert df2.equals(df)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(out / rel) == digest(again / rel)


# ---------------------------------------------------------------- synthetic-embeddings


def test_embeddings_chunking_invariant_and_planted(tmp_path):
    kw = dict(n=10_000, dim=32, n_classes=5, planted_frac=0.05, n_regions=7, seed=4, progress=False)
    p1 = build("synthetic-embeddings", tmp_path / "a", chunk_size=777, **kw)
    p2 = build("synthetic-embeddings", tmp_path / "b", chunk_size=1_000_000, **kw)
    a, b = load_synthetic_embeddings(tmp_path / "a"), load_synthetic_embeddings(tmp_path / "b", mmap=False)
    assert isinstance(a["embeddings"], np.memmap) and not isinstance(b["embeddings"], np.memmap)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert pq.read_table(p1).equals(pq.read_table(p2))
    assert pq.ParquetFile(p1).num_row_groups == int(np.ceil(10_000 / 777))
    items = _read(p1)
    assert items["id"].is_unique and (items["row"] == np.arange(10_000)).all()
    assert (items["label"].to_numpy() == a["labels"]).all()
    planted = np.asarray(a["planted"])
    assert planted.sum() == 500  # floor(N * planted_frac), exactly
    assert ((np.asarray(a["region"]) >= 0) == planted).all()
    x = np.asarray(a["embeddings"])
    nearest = ((x[:, None, :] - a["centres"][None]) ** 2).sum(-1).argmin(1)  # [N, C] -> [N]
    y = np.asarray(a["labels"])
    assert (nearest[planted] != y[planted]).mean() > 0.95
    assert (nearest[~planted] == y[~planted]).mean() > 0.95
    other = build("synthetic-embeddings", tmp_path / "c", chunk_size=777, **{**kw, "seed": 5})
    assert not np.array_equal(load_synthetic_embeddings(other.parent)["labels"], a["labels"])


def _peak_numpy_bytes(out_dir, n, chunk):
    tracemalloc.start()
    tracemalloc.reset_peak()
    build("synthetic-embeddings", out_dir, n=n, dim=64, chunk_size=chunk, seed=0, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_embeddings_peak_memory_does_not_scale_with_n(tmp_path):
    full = 200_000 * 64 * 4  # bytes of the full float32 matrix (51 MB)
    peak_big = _peak_numpy_bytes(tmp_path / "big", 200_000, 10_000)
    peak_small = _peak_numpy_bytes(tmp_path / "small", 50_000, 10_000)
    assert peak_big < full / 8, (peak_big, full)
    assert peak_big < 1.3 * peak_small + 1_000_000, (peak_big, peak_small)
    assert load_synthetic_embeddings(tmp_path / "big")["embeddings"].shape == (200_000, 64)
