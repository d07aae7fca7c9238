"""Feature cache: encode once per (fingerprint, id), resume after interruption, no encoder on re-run."""

import numpy as np
import pytest

from conftest import run_cli, write_items


@pytest.fixture
def ws_dir(tmp_path, media_dir):
    rows = [
        {"id": "a", "label": 0, "split": "train", "text": "a red square", "image": str(media_dir / "a.png"), "audio": str(media_dir / "a.wav")},
        {"id": "b", "label": 1, "split": "train", "text": "a blue square", "image": str(media_dir / "b.png"), "audio": None},
        {"id": "c", "label": 0, "split": "test", "text": "a video", "video": str(media_dir / "v.mp4"), "audio": str(media_dir / "v.mp4")},
        {"id": "d", "label": 1, "split": "pool", "text": None, "image": None, "audio": str(media_dir / "b.wav")},
    ]
    from mmal.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws", write_items(tmp_path / "src", rows))
    return ws.dir


def test_encode_then_rerun_calls_no_encoder(ws_dir, monkeypatch):
    import mmal.encoders as enc
    from mmal.engine import encode_workspace
    from mmal.features.pipeline import load_features
    from mmal.workspace import Workspace

    stats = encode_workspace(ws_dir, progress=False)
    by = {s["modality"]: s for s in stats}
    assert by["text"]["encoded"] == 3 and by["text"]["absent"] == 1
    assert by["image"]["encoded"] == 3 and by["image"]["absent"] == 1  # 2 images + 1 video
    assert by["audio"]["encoded"] == 3 and by["audio"]["absent"] == 1
    feats = load_features(Workspace(ws_dir))
    assert feats["text"].present.tolist() == [True, True, True, False]
    assert feats["image"].dim == 1280 and feats["audio"].dim == 384
    # the video item holds n_frames x 49 patches; images 49
    assert feats["image"].lengths().tolist() == [49, 49, 3 * 49, 0]
    assert np.isfinite(np.asarray(feats["audio"].seq, dtype=np.float32)).all()

    def boom(*a, **k):
        raise AssertionError("encoder loaded on a complete cache")

    monkeypatch.setattr(enc, "load", boom)
    # each modality is missing on one of the 4 rows (b has no audio, c no image but a video
    # the image tower reads, d no text nor image): only the 3 items that have it count as cached
    for s in encode_workspace(ws_dir, progress=False):
        assert s["encoded"] == 0 and s["cached"] == 3 and s["absent"] == 1, s
    r = run_cli("info", ws_dir)
    assert r.returncode == 0 and r.stdout.count("3/3 cached") == 3 and "4/4" not in r.stdout, r.stdout


def test_interrupted_encode_resumes_missing_only(ws_dir, monkeypatch):
    from mmal.features import cache as cache_mod
    from mmal.engine import encode_workspace

    real = cache_mod.FeatureCache.write_chunk
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the user hit Ctrl-C after the first batch
        return real(self, *a, **k)

    monkeypatch.setattr(cache_mod.FeatureCache, "write_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        encode_workspace(ws_dir, encoders="text:minilm", batch_size=2, progress=False)
    monkeypatch.setattr(cache_mod.FeatureCache, "write_chunk", real)
    (s,) = encode_workspace(ws_dir, encoders="text:minilm", batch_size=2, progress=False)
    assert s["cached"] == 2 and s["encoded"] + s["absent"] == 2


def test_cli_encode_twice(ws_dir):
    r1 = run_cli("encode", ws_dir, "--encoders", "text:minilm")
    assert r1.returncode == 0, r1.stderr
    r2 = run_cli("encode", ws_dir, "--encoders", "text:minilm")
    # item d has no text: 3 cached, 1 absent (it is not counted as cached)
    assert r2.returncode == 0 and "encoded      0  cached      3  absent      1" in r2.stdout, r2.stdout


def test_encoders_option_rejects_unknown_modality(ws_dir):
    r = run_cli("encode", ws_dir, "--encoders", "video:foo")
    assert r.returncode == 2 and "--encoders" in r.stderr
