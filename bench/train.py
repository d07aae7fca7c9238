"""Benchmark: fit / score throughput and peak RSS of the fusion classifier.

Synthetic cached features shaped like the Tux Paint dataset: N = 1000 items, text 20 x 384
(MiniLM tokens), image 49 x 1280 (EfficientNet-Lite0 patches), audio 250 x 384 (Whisper
tiny frames), float16 as in the feature cache. Each fusion (none / avgpool / vlmae) runs in
its own subprocess so that peak RSS is per configuration.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python bench/train.py            # writes bench/results/train.json
    .venv/bin/python bench/train.py --n 200 --out /tmp/t.json   # quick check
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds scripts named like stdlib modules (bench/select.py): keep it off sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SHAPES = {"text": (20, 384), "image": (49, 1280), "audio": (250, 384)}


def make_features(n: int, seed: int = 0):
    from mmal.features.types import SequenceFeatures

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    feats = {}
    for m, (T, d) in SHAPES.items():
        protos = rng.normal(size=(2, d)).astype(np.float32)
        seq = np.empty((n * T, d), np.float16)  # float16 like the on-disk cache
        pooled = np.empty((n, d), np.float32)
        for s in range(0, n, 50):  # chunks keep generation memory small
            e = min(n, s + 50)
            x = rng.normal(size=(e - s, T, d)).astype(np.float32) + 0.3 * protos[y[s:e]][:, None, :]
            seq[s * T : e * T] = x.reshape(-1, d)
            pooled[s:e] = x.mean(1)
        offsets = np.arange(n + 1, dtype=np.int64) * T
        feats[m] = SequenceFeatures(np.array([f"i{i}" for i in range(n)]), pooled, offsets, seq, np.ones(n, bool))
    return feats, y


def worker(fusion: str, n: int, epochs: int, threads: int, device: str) -> dict:
    import torch

    from mmal.models import ModelConfig
    from mmal.train import TrainConfig, fit, score

    feats, y = make_features(n)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mc = ModelConfig.from_features(feats, 2, fusion=fusion)
    tc = TrainConfig(epochs=epochs, batch_size=32, patience=None, threads=threads, device=device)
    train_idx = np.arange(n)
    t0 = time.perf_counter()
    model, hist = fit(feats, y, train_idx, None, mc, tc, progress=False)
    t_fit = time.perf_counter() - t0
    torch.set_num_threads(threads)
    score(model, feats, np.arange(min(n, 64)), progress=False)  # warm-up
    t0 = time.perf_counter()
    s = score(model, feats, batch_size=256, progress=False)
    t_score = time.perf_counter() - t0
    n_coal = min(n, 128)  # 2^3 = 8 forward passes per item: time it on a subset
    t0 = time.perf_counter()
    score(model, feats, np.arange(n_coal), batch_size=128, coalitions=True, progress=False)
    t_coal = time.perf_counter() - t0
    return {
        "fusion": fusion,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "train_samples_per_s": round(n * epochs / t_fit, 1),
        "train_samples_per_s_excl_val": round(hist["train_samples_per_s"], 1),
        "score_samples_per_s": round(n / t_score, 1),
        "score_with_coalitions_samples_per_s": round(n_coal / t_coal, 1),
        "final_train_loss": round(hist["epochs"][-1]["train_loss"], 4),
        "train_accuracy": round(float((s["probs"].argmax(1) == y).mean()), 4),
        "rss_after_data_mb": round(rss_data, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fusions", default="none,avgpool,vlmae")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.n, a.epochs, a.threads, a.device)))
        return
    import torch

    load_before = os.getloadavg()
    runs = []
    for fusion in a.fusions.split(","):
        cmd = [sys.executable, __file__, "--worker", fusion, "--n", str(a.n), "--epochs", str(a.epochs),
               "--threads", str(a.threads), "--device", a.device]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    result = {
        "benchmark": "fusion classifier fit/score on synthetic Tux Paint-shaped cached features",
        "command": "OMP_NUM_THREADS=%d python bench/train.py --n %d --epochs %d --threads %d --device %s" % (a.threads, a.n, a.epochs, a.threads, a.device),
        "n_items": a.n,
        "shapes": {m: list(s) for m, s in SHAPES.items()},
        "epochs": a.epochs,
        "batch_size": 32,
        "model": "ModelConfig defaults (d_model 192, 2 layers, 4 heads, multiway, MLP 3x256)",
        "threads": a.threads,
        "device": a.device,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "note": "shared 2-core machine; other jobs ran concurrently (see load_average_1min), so throughput is a lower bound. peak_rss_mb includes ~%d MB of float16 features." % (
            sum(a.n * T * d * 2 for T, d in SHAPES.values()) // 2**20),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "runs": runs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
