"""Encoder throughput on real Tux Paint stamps; Whisper padded (30 s) vs real-length.

Usage::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/encode.py [--n 100] [--n-audio 40]

For each encoder: items/s end to end (decode from the file + preprocess + forward) on
``n`` stamps (images, first caption line of the ``.txt`` files) and ``n_audio`` ``.ogg``
sounds (effects and English descriptions). For
Whisper tiny.en and base: items/s on the same pre-decoded waveforms with
``pad_to_30s=True`` (every clip a 3000-frame window) and ``pad_to_30s=False`` (real
length only), and the speed-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds scripts named like stdlib modules (select.py); keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")


def collect(n: int):
    """Up to ``n`` stamps (sorted) that have a PNG and a caption; sounds for those that have one."""
    images, texts, sounds = [], [], []
    for png in sorted(STAMPS.rglob("*.png")):
        txt = png.with_suffix(".txt")
        if not txt.is_file():
            continue
        images.append(png)
        texts.append(txt.read_text(encoding="utf-8").splitlines()[0].strip())
        if len(images) == n:
            break
    for ogg in sorted(STAMPS.rglob("*.ogg")):
        stem = ogg.stem
        if stem.endswith("_desc") or "_desc_" not in stem:  # sound effects + English descriptions
            sounds.append(ogg)
        if len(sounds) == n:
            break
    return images, texts, sounds


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="images and captions")
    ap.add_argument("--n-audio", type=int, default=40, help="sounds (Whisper padded is ~1-3 s/item on 2 busy cores)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "encode.json"))
    args = ap.parse_args(argv)

    import torch

    import mmal.encoders as E
    from mmal.data.media import load_audio

    images, texts, _ = collect(args.n)
    sounds = collect(args.n_audio)[2]
    load1 = os.getloadavg()[0]
    results = {"encoders": {}, "whisper_padding": {}}
    inputs = {"text": texts, "image": images, "audio": sounds}
    for spec in E.KNOWN_SPECS:
        enc, t_load = timed(E.load, spec)
        x = inputs[enc.modality]
        enc.embed(x[:2])  # warm-up
        (pooled, seqs), dt = timed(enc.encode, x)
        results["encoders"][spec] = {
            "n": len(x),
            "dim": enc.dim,
            "load_s": round(t_load, 2),
            "seconds": round(dt, 2),
            "items_per_s": round(len(x) / dt, 2),
            "mean_seq_len": round(float(np.mean([len(s) for s in seqs])), 1),
            "fingerprint": enc.fingerprint,
            "includes": "decode from file + preprocess + forward",
        }
        print(spec, results["encoders"][spec], flush=True)

    wavs = [load_audio(p) for p in sounds]
    durs = [len(w) / 16000 for w in wavs]
    for spec in ("audio:whisper-tiny.en", "audio:whisper-base"):
        row = {"n": len(wavs), "mean_clip_s": round(float(np.mean(durs)), 2), "max_clip_s": round(float(np.max(durs)), 2)}
        for pad in (True, False):
            enc = E.load(spec, pad_to_30s=pad)
            enc.embed(wavs[:1])
            _, dt = timed(enc.embed, wavs)
            row["padded_30s" if pad else "real_length"] = {"seconds": round(dt, 2), "items_per_s": round(len(wavs) / dt, 2)}
        row["speedup_real_vs_padded"] = round(row["real_length"]["items_per_s"] / row["padded_30s"]["items_per_s"], 2)
        results["whisper_padding"][spec] = row
        print(spec, row, flush=True)

    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "loadavg_1min_start": round(load1, 2),
        "loadavg_1min_end": round(os.getloadavg()[0], 2),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    results["note"] = (
        "Measured on a shared 2-core machine while other engineers ran tests (see loadavg); "
        "absolute items/s are pessimistic and noisy, the padded-vs-real ratio is the robust figure. "
        "Batch sizes are the encoders' defaults; float32 CPU."
    )
    results["command"] = "OMP_NUM_THREADS=%s HF_HUB_OFFLINE=1 .venv/bin/python bench/encode.py --n %d --n-audio %d" % (
        os.environ.get("OMP_NUM_THREADS", ""), args.n, args.n_audio)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
