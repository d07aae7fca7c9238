"""Encoding with decode/preprocess threads beside the forward pass: same numbers, same errors, quiet output."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_items

STAMPS = Path("/usr/share/tuxpaint/stamps")
needs_stamps = pytest.mark.skipif(not STAMPS.is_dir(), reason="tuxpaint-stamps-default not installed")


def _stamps(n):
    pngs = [p for p in sorted(STAMPS.rglob("*.png")) if p.with_suffix(".ogg").is_file()][:n]
    assert len(pngs) == n
    return pngs, [p.with_suffix(".ogg") for p in pngs]


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# ---- the thread pool ------------------------------------------------------------------
def test_prefetch_map_keeps_order_and_reraises_in_the_caller():
    from mmal.encoders.stream import prefetch_map

    rng = np.random.default_rng(0)
    batches = [list(range(s, s + 5)) for s in range(0, 40, 5)]
    delays = rng.uniform(0, 0.004, 40)

    def slow_square(x):
        time.sleep(delays[x])
        return x * x, threading.current_thread().name

    got = list(prefetch_map(slow_square, batches, workers=3))
    assert [[v for v, _ in b] for b in got] == [[x * x for x in b] for b in batches]
    assert all(name.startswith("mmal-decode") for b in got for _, name in b)  # ran in the pool
    assert [[v for v, _ in b] for b in prefetch_map(slow_square, batches, workers=0)] == [[x * x for x in b] for b in batches]

    calls = []

    def fail_on_12(x):
        calls.append(x)
        if x == 12:
            raise ValueError("item 12 is corrupt")
        time.sleep(0.01)
        return x

    seen = []
    with pytest.raises(ValueError, match="item 12 is corrupt"):
        for b in prefetch_map(fail_on_12, batches, workers=2, ahead=1):
            seen.append(b)
    assert seen == batches[:2]  # the batches before the bad one came through, in order
    assert len(calls) < 40  # the rest was cancelled, not run


def test_forward_threads_follow_free_cores():
    from mmal.encoders.stream import forward_threads

    # free cores = round(cores - max(0, load - own)), clipped to 1..cores; own = 1 by default (hand-computed)
    assert forward_threads(2, 0.0) == 2
    assert forward_threads(2, 0.4) == 2
    assert forward_threads(2, 1.2) == 2  # the load is mostly this process: both cores
    assert forward_threads(2, 1.2, own=0.0) == 1
    assert forward_threads(2, 2.6) == 1  # another busy process
    assert forward_threads(2, 6.0) == 1
    assert forward_threads(16, 4.2) == 13
    assert forward_threads(16, 4.2, own=0.0) == 12
    assert forward_threads(1, 0.0) == 1
    with pytest.raises(ValueError):
        forward_threads(0, 0.0)


# ---- same numbers as the sequential path ------------------------------------------------
@needs_stamps
def test_threaded_image_path_equals_sequential_pil_loop():
    """EfficientNet-Lite0 through the threaded path vs a plain PIL + torch loop written here."""
    import torch
    from PIL import Image

    import mmal.encoders as E

    pngs, _ = _stamps(6)
    enc = E.load("image:efficientnet-lite0")
    pooled, seqs = enc.encode(pngs, batch_size=4, workers=2)

    def pil_224(path):  # alpha on white, shorter side to 256 (bicubic), central 224 crop, [-1, 1]
        im = Image.open(path)
        im.load()
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
        w, h = im.size
        k = 256 / min(w, h)
        nw, nh = max(224, round(w * k)), max(224, round(h * k))
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - 224) // 2, (nh - 224) // 2
        a = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32)
        return (a / 127.5 - 1.0).transpose(2, 0, 1)

    with torch.inference_mode():
        f = enc.module.extract_features(torch.from_numpy(np.stack([pil_224(p) for p in pngs])))  # [6, 1280, 7, 7]
    ref_seq = f.flatten(2).transpose(1, 2).numpy()  # -> [6, 49, 1280]
    assert _cos(pooled, ref_seq.mean(1)).min() > 1 - 1e-5
    for s, r in zip(seqs, ref_seq):
        np.testing.assert_allclose(s, r, atol=1e-4, rtol=1e-4)


@needs_stamps
def test_threaded_length_batched_whisper_equals_one_clip_at_a_time():
    """Real-length Whisper: clips grouped by length, zero-padded, keys masked, one forward
    per batch, vs the old path written here: transformers' 30 s log-mel sliced to the clip,
    one clip per forward without a mask."""
    import torch
    from transformers import WhisperFeatureExtractor

    import mmal.encoders as E
    from mmal.data.media import load_audio
    from mmal.encoders import audio as A

    _, oggs = _stamps(6)
    wavs = [load_audio(p) for p in oggs]
    assert len({len(w) for w in wavs}) > 1  # different lengths share a batch
    enc = E.load("audio:whisper-tiny.en", pad_to_30s=False)
    frames = [-(-(-(-len(w) // 160)) // 2) for w in wavs]
    groups = enc._batches([(None, n) for n in frames], 4)
    assert sorted(j for g in groups for j in g) == list(range(6))
    assert any(len({frames[j] for j in g}) > 1 for g in groups)  # one forward holds clips of different lengths
    assert all(max(frames[j] for j in g) * len(g) <= 1.25 * sum(frames[j] for j in g) for g in groups)
    pooled, seqs = enc.encode(oggs, batch_size=4, workers=2)

    fe = WhisperFeatureExtractor(feature_size=80)
    for w, p, s in zip(wavs, pooled, seqs):
        n = -(-(-(-len(w) // 160)) // 2)  # ceil(ceil(S / 160) / 2) encoder frames
        mel = fe(w, sampling_rate=16000, return_tensors="np")["input_features"][0][:, : 2 * n]  # [80, 2n]
        with torch.inference_mode():
            ref = A.whisper_encoder_forward(enc.module, torch.from_numpy(np.ascontiguousarray(mel))[None])[0].numpy()
        assert s.shape == ref.shape == (n, 384)
        assert _cos(s, ref).min() > 1 - 1e-5
        assert _cos(p, ref.mean(0)) > 1 - 1e-5


def test_short_log_mel_equals_the_30s_window_sliced():
    """The real-length log-mel (STFT over the clip only) equals the first frames of the 30 s one,
    also when the loudest frame lies just past the frames kept (the max - 8 floor)."""
    from mmal.encoders import audio as A

    rng = np.random.default_rng(1)
    clips = [rng.normal(0, 0.1, 16000).astype(np.float32),  # 1 s noise
             np.r_[np.zeros(15900, np.float32), np.full(100, 0.9, np.float32)],  # silence, burst at the end
             rng.normal(0, 0.3, 777).astype(np.float32),  # shorter than a hop x 5
             rng.normal(0, 0.05, 16000 * 31).astype(np.float32)]  # past 30 s: trimmed
    for w in clips:
        n = min(3000, 2 * (-(-(-(-len(w) // 160)) // 2)))
        full = A.log_mel_spectrogram(w, 80)  # [80, 3000]
        short = A.log_mel_spectrogram(w, 80, n)
        assert short.shape == (80, n)
        np.testing.assert_allclose(short, full[:, :n], atol=1e-6, rtol=0)
    burst = clips[1]
    full = A.log_mel_spectrogram(burst, 80)
    assert full.max(0).argmax() >= 100  # the loudest frame is past the 100 frames kept: the floor depends on it


# ---- errors and output of `mmal encode` ---------------------------------------------------
def test_corrupt_image_in_a_worker_is_one_line_and_earlier_chunks_stay(tmp_path, media_dir):
    from mmal.features.cache import FeatureCache, resolve_fingerprint
    from mmal.workspace import Workspace, init_workspace

    bad = tmp_path / "broken.png"  # valid at `mmal init` (which probes media), corrupted afterwards
    bad.write_bytes((media_dir / "a.png").read_bytes())
    rows = [{"id": f"g{i}", "label": i % 2, "split": "train", "image": str(media_dir / ("a.png" if i % 2 else "b.png"))}
            for i in range(4)]
    rows.append({"id": "bad", "label": 0, "split": "train", "image": str(bad)})
    ws = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    r = run_cli("encode", ws.dir, "--encoders", "image:efficientnet-lite0", "--batch-size", "2")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr, r.stderr
    cache = FeatureCache(Workspace(ws.dir).features_dir)
    fp = resolve_fingerprint(cache, "image:efficientnet-lite0", {})
    assert cache.done_ids(fp, "image") == {"g0", "g1", "g2", "g3"}  # the chunks before the bad one were kept


def test_encode_output_is_quiet_and_counts_only_items_with_the_modality(tmp_path, media_dir, monkeypatch):
    from mmal.workspace import init_workspace

    # an encoder loaded earlier in this test process set it; the CLI runs below must not inherit it
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)

    rows = [{"id": f"i{i}", "label": i % 2, "split": "train", "text": f"item {i}",
             "audio": str(media_dir / "a.wav") if i < 2 else None} for i in range(4)]
    ws = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows))
    before = run_cli("info", ws.dir)
    assert before.returncode == 0
    audio_line = next(ln for ln in before.stdout.splitlines() if ln.startswith("features    audio"))
    assert audio_line.endswith(" 0/2 cached"), audio_line  # 2 of the 4 rows have audio
    assert "[None]" not in before.stdout, before.stdout  # the fingerprint encode will use, before it ran
    fps_before = {ln.split()[1]: ln.split("[")[1].split("]")[0] for ln in before.stdout.splitlines() if ln.startswith("features")}

    quiet = run_cli("encode", ws.dir, "--encoders", "text:minilm")  # run_cli sets MMAL_PROGRESS=0
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "%|" not in quiet.stderr, quiet.stderr

    import os
    import subprocess
    import sys

    # the control: with progress on, transformers does draw its bar, so the check above can fail
    env = dict(os.environ, MMAL_PROGRESS="1", HF_HUB_OFFLINE="1")
    shown = subprocess.run([sys.executable, "-c", "import mmal.encoders.text as t; t.MiniLMEncoder()"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert shown.returncode == 0 and "Loading weights" in shown.stderr, shown.stderr

    again = run_cli("encode", ws.dir, "--encoders", "text:minilm,audio:whisper-tiny.en")
    assert again.returncode == 0, again.stderr
    by = {ln.split()[0]: ln.split() for ln in again.stdout.splitlines()}
    # text: 4 cached; audio: 2 encoded now, 2 rows without audio are absent (not "cached")
    assert by["text"][2:] == ["encoded", "0", "cached", "4", "absent", "0"], again.stdout
    assert by["audio"][2:] == ["encoded", "2", "cached", "0", "absent", "2"], again.stdout
    after = run_cli("info", ws.dir)
    assert "audio:whisper-tiny.en" in after.stdout and " 2/2 cached" in after.stdout and "4/4 cached" in after.stdout
    import json

    recorded = set(json.loads((ws.dir / "features" / "fingerprints.json").read_text()).values())  # what encode wrote
    assert set(fps_before.values()) == recorded, (fps_before, recorded)
