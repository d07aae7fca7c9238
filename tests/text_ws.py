"""A tiny text-only workspace with synthetic cached text features under the text encoder's
recorded fingerprint (as in ``test_bad_inputs.py``), so no encoder is ever loaded; train and
score run for real on those features."""

from __future__ import annotations

import numpy as np

from conftest import write_items

N = 16
NAMES = ["spam & eggs", "ham"]


def _rows():
    rows = []
    for k in range(N):
        split = "test" if k % 5 == 0 else ("train" if k < 8 else "pool")
        rows.append({"id": f"i{k:02d}", "label": NAMES[k % 2] if split != "pool" else None, "split": split,
                     "text": f"item {k}"})
    return rows


def _fake_features(ws_dir) -> None:
    from mmal.features.cache import FeatureCache, remember_fingerprint

    rows = _rows()
    cache = FeatureCache(ws_dir / "features")
    remember_fingerprint(cache, "text:minilm", {}, "fake0000")
    rng = np.random.default_rng(0)
    ids = [r["id"] for r in rows]
    cls = np.array([int(r["id"][1:]) % 2 for r in rows])
    pooled = rng.normal(size=(N, 8)).astype(np.float32) + 1.5 * cls[:, None]
    seqs = [np.stack([p, p]) for p in pooled]
    cache.write_chunk("fake0000", "text", ids, pooled, seqs, np.ones(N, bool))


def scored_text_ws(tmp, epochs: int = 3):
    """init -> synthetic features -> train -> score (round 0); returns the Workspace."""
    from mmal.loop.workspace_round import score_workspace, train_workspace
    from mmal.workspace import Workspace, init_workspace

    ws = init_workspace(tmp / "ws", write_items(tmp / "src", _rows()))
    ws.config.setdefault("train", {})["epochs"] = int(epochs)
    ws.save_config()
    _fake_features(ws.dir)
    train_workspace(ws.dir, progress=False)
    score_workspace(ws.dir, progress=False)
    return Workspace(ws.dir)
