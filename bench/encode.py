"""Encoder throughput on real Tux Paint stamps: where the time goes, the threaded path against a plain loop.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/encode.py [--n 200] [--n-audio 40] [--rounds 3] [--legacy]

For the image tower (``image:efficientnet-lite0``) and the audio tower
(``audio:whisper-tiny.en``, real length, the workspace default), on ``n`` stamp PNGs and
``n_audio`` ``.ogg`` sounds:

- ``split``: per item, sequentially, the time to decode the file (PIL / PyAV), preprocess
  (resize + crop / log-mel), run the forward pass (pre-decoded batches) and write the cache
  chunk;
- ``ab``: items/s of ``encode_items`` (the ``mmal encode`` path: decode/preprocess threads
  beside the forward pass, chunks written to a fresh feature cache) against the plain loop
  a user would write (PIL or PyAV decode, the tower's own torch / transformers forward over
  each batch, the same chunk write), same batch size, same torch threads, same process, in
  alternating order (A B, B A, ...); medians over ``rounds``;
- ``forward_only``: items/s of the forward pass alone on pre-decoded, preprocessed batches;
  ``e2e_over_forward`` = forward-only items/s / end-to-end items/s (1.0 = decoding fully hidden);
- ``threads``: the forward pass with 1 and with 2 torch threads (alternating), the
  measurement behind :func:`mmal.encoders.stream.forward_threads`;
- ``batch_size_sweep_forward_items_per_s``: forward-only items/s at batch 4, 8, 16, 32;
- ``bf16_autocast``: the forward pass under bfloat16 autocast against float32, items/s and
  the worst pooled cosine (a faster path is only worth having within 1e-3 of float32);
- ``today``: ``mmal encode``'s ``encode_items`` from the main checkout before this change
  (``--main-src``), in a subprocess with its default torch threads, on the same files;
- the Whisper padded (30 s) path against transformers' own ``WhisperEncoder.forward`` on
  30 s features (``WhisperFeatureExtractor``), on ``n_padded`` sounds.

``--legacy`` also re-runs the per-encoder list of the earlier version of this script (every
spec, Whisper padded vs real length); otherwise those figures are kept from the last run
that made them, under ``earlier_run``.

The machine is shared (2 cores, other engineers' tests): the load average
(``os.getloadavg()``) is recorded before and after every section, and the figures are
only meaningful next to it.
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
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
IMAGE, AUDIO = "image:efficientnet-lite0", "audio:whisper-tiny.en"
# README figures before this change (bench/results/encode.json of that version: 1 torch thread, load ~6)
TODAY_README = {IMAGE: 11.31, AUDIO: 14.27}


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


def load() -> float:
    return round(os.getloadavg()[0], 2)


def table_of(modality, paths):
    import pyarrow as pa

    return pa.table({"id": [f"x{i:05d}" for i in range(len(paths))], modality: [str(p) for p in paths]})


# ---- the plain loops a user would write ------------------------------------------------------
def plain_image_loop(enc, paths, bs, cache_dir):
    """PIL decode (alpha on white), the tower's resize/crop, ``module.extract_features`` per batch, chunk write."""
    import torch
    from PIL import Image

    from mmal.features.cache import FeatureCache

    cache = FeatureCache(cache_dir)
    for s in range(0, len(paths), bs):
        xs = []
        for p in paths[s : s + bs]:
            with Image.open(p) as im:
                im = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
            xs.append(enc._to_array(im))
        with torch.inference_mode():
            f = enc.module.extract_features(torch.from_numpy(np.stack(xs)))  # [B, 1280, 7, 7]
        seq = f.flatten(2).transpose(1, 2).numpy()  # -> [B, 49, 1280]
        ids = [f"x{i:05d}" for i in range(s, s + len(xs))]
        cache.write_chunk("plain", "image", ids, seq.mean(1), list(seq), np.ones(len(xs), bool))


def plain_audio_loop(enc, paths, bs, cache_dir, fe):
    """PyAV decode, transformers' 30 s ``WhisperFeatureExtractor`` sliced to the clip, one clip
    per forward at its real length (``WhisperEncoder.forward`` itself only takes 3000 frames), chunk write."""
    import torch

    from mmal.data.media import load_audio
    from mmal.encoders.audio import whisper_encoder_forward
    from mmal.features.cache import FeatureCache

    cache = FeatureCache(cache_dir)
    for s in range(0, len(paths), bs):
        seqs = []
        for p in paths[s : s + bs]:
            w = load_audio(p)
            n = -(-(-(-len(w) // 160)) // 2)
            mel = fe(w, sampling_rate=16000, return_tensors="np")["input_features"][0][:, : 2 * n]
            with torch.inference_mode():
                seqs.append(whisper_encoder_forward(enc.module, torch.from_numpy(np.ascontiguousarray(mel))[None])[0].numpy())
        ids = [f"x{i:05d}" for i in range(s, s + len(seqs))]
        cache.write_chunk("plain", "audio", ids, np.stack([q.mean(0) for q in seqs]), seqs, np.ones(len(seqs), bool))


def plain_padded_loop(enc, wavs, bs, fe):
    """transformers end to end: 30 s features, ``WhisperEncoder.forward`` over each batch."""
    import torch

    for s in range(0, len(wavs), bs):
        x = fe(wavs[s : s + bs], sampling_rate=16000, return_tensors="pt")["input_features"]  # [B, 80, 3000]
        with torch.inference_mode():
            enc.module(x)


# ---- sections ----------------------------------------------------------------------------------
def split(enc, modality, paths, bs, tmp):
    """Sequential per-item milliseconds: decode, preprocess, forward (pre-decoded batches), write."""
    from mmal.features.cache import FeatureCache, decode_source

    kind = modality
    decoded, t_dec = timed(lambda: [decode_source((kind, str(p)))[0] for p in paths])
    prepared, t_prep = timed(lambda: [enc._prepare(x, i) for i, x in enumerate(decoded)])
    (pooled, seqs), t_fwd = timed(enc.forward_prepared, prepared, bs)
    cache = FeatureCache(Path(tmp) / "split")
    ids = [f"x{i:05d}" for i in range(len(paths))]

    def write():
        for s in range(0, len(paths), bs):
            cache.write_chunk("split", modality, ids[s : s + bs], pooled[s : s + bs], seqs[s : s + bs], np.ones(len(ids[s : s + bs]), bool))

    _, t_w = timed(write)
    n = len(paths)
    out = {"decode_ms": t_dec, "preprocess_ms": t_prep, "forward_ms": t_fwd, "write_ms": t_w}
    total = sum(out.values())
    res = {k: round(1e3 * v / n, 2) for k, v in out.items()}
    res["share"] = {k[:-3]: round(v / total, 3) for k, v in out.items()}
    return res, prepared


def ab(enc, modality, paths, bs, rounds, tmp, workers, params, fe=None):
    """Alternating plain loop (A) / encode_items (B); items/s per run and medians."""
    from mmal.features.cache import FeatureCache, encode_items

    table = table_of(modality, paths)
    runs = {"plain_loop": [], "threaded": []}

    def run_plain(k):
        d = Path(tmp) / f"plain{k}"
        if modality == "image":
            _, dt = timed(plain_image_loop, enc, paths, bs, d)
        else:
            _, dt = timed(plain_audio_loop, enc, paths, bs, d, fe)
        shutil.rmtree(d, ignore_errors=True)
        runs["plain_loop"].append(round(len(paths) / dt, 2))

    def run_threaded(k):
        d = Path(tmp) / f"thr{k}"
        stats, dt = timed(encode_items, FeatureCache(d), table, modality, enc.name, batch_size=bs, progress=False,
                          encoder_params=params, workers=workers, threads=None)
        assert stats["encoded"] == len(paths), stats
        shutil.rmtree(d, ignore_errors=True)
        runs["threaded"].append(round(len(paths) / dt, 2))

    order = []
    for k in range(rounds):
        pair = (run_plain, run_threaded) if k % 2 == 0 else (run_threaded, run_plain)
        for f in pair:
            f(k)
        order.append("AB" if k % 2 == 0 else "BA")
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"runs_items_per_s": runs, "order": order, "median_items_per_s": med,
            "speedup_threaded_vs_plain": round(med["threaded"] / med["plain_loop"], 2)}


def forward_only(enc, prepared, bs, rounds):
    ips = []
    for _ in range(rounds):
        _, dt = timed(enc.forward_prepared, prepared, bs)
        ips.append(round(len(prepared) / dt, 2))
    return {"runs_items_per_s": ips, "median_items_per_s": statistics.median(ips)}


def batch_sweep(enc, prepared, sizes, rounds=2):
    """Forward-only items/s per batch size (order reversed every other round): behind ``default_batch_size``."""
    runs = {b: [] for b in sizes}
    for k in range(rounds):
        for b in (sizes if k % 2 == 0 else sizes[::-1]):
            _, dt = timed(enc.forward_prepared, prepared, b)
            runs[b].append(round(len(prepared) / dt, 2))
    return {str(b): statistics.median(v) for b, v in runs.items()}


def threads_ab(enc, prepared, bs, rounds):
    import torch

    old = torch.get_num_threads()
    runs = {1: [], 2: []}
    try:
        for k in range(rounds):
            for t in ((1, 2) if k % 2 == 0 else (2, 1)):
                torch.set_num_threads(t)
                _, dt = timed(enc.forward_prepared, prepared, bs)
                runs[t].append(round(len(prepared) / dt, 2))
    finally:
        torch.set_num_threads(old)
    return {f"{t}_threads_items_per_s": v for t, v in runs.items()} | {
        "median_ratio_1_over_2": round(statistics.median(runs[1]) / statistics.median(runs[2]), 2)}


def bf16_probe(enc, prepared, bs, rounds=2):
    """bfloat16 autocast (this CPU has AMX) against float32 on the same prepared batches:
    items/s (alternating) and the worst pooled cosine. Kept only if the cosine stays >= 1 - 1e-3."""
    import torch

    def forward(bf):
        pooled, seqs = [], []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
            for s in range(0, len(prepared), bs):
                p, q = enc._forward_torch(prepared[s : s + bs])
                pooled.append(p.float().numpy())
                seqs.extend(t.float().numpy() for t in q)
        return np.concatenate(pooled), seqs

    def run(bf):
        return timed(forward, bf)

    def cos_rows(a, b):  # rows where float32 is not the zero vector (ReLU6 maps can be all zero)
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        ok = na > 1e-6
        return ((a * b).sum(1)[ok] / na[ok] / np.maximum(nb[ok], 1e-12)).min()

    runs = {"float32": [], "bfloat16": []}
    outs = {}
    for k in range(rounds):
        for bf in ((False, True) if k % 2 == 0 else (True, False)):
            out, dt = run(bf)
            outs[bf] = out
            runs["bfloat16" if bf else "float32"].append(round(len(prepared) / dt, 2))
    pooled = float(cos_rows(outs[False][0], outs[True][0]))
    tokens = float(min(cos_rows(a, b) for a, b in zip(outs[False][1], outs[True][1])))
    return {"runs_items_per_s": runs, "min_pooled_cosine": round(pooled, 5), "min_token_cosine": round(tokens, 5),
            "kept": bool(min(pooled, tokens) >= 1 - 1e-3)}


TODAY_SCRIPT = r"""
import json, sys, time, tempfile
import pyarrow as pa
from mmal.features.cache import FeatureCache, encode_items
import mmal.encoders as E
modality, spec, bs, params = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
paths = sys.argv[5:]
enc = E.load(spec, **params)
enc.embed(paths[:2])
table = pa.table({"id": [f"x{i:05d}" for i in range(len(paths))], modality: paths})
import torch
with tempfile.TemporaryDirectory() as d:
    t = time.perf_counter()
    s = encode_items(FeatureCache(d), table, modality, spec, batch_size=bs, progress=False, encoder_params=params)
    dt = time.perf_counter() - t
print(json.dumps({"items_per_s": round(len(paths) / dt, 2), "seconds": round(dt, 2), "torch_threads": torch.get_num_threads(), "encoded": s["encoded"]}))
"""


def today(main_src, modality, spec, bs, params, paths):
    """``encode_items`` of the main checkout (before this change) in a subprocess, its default threads."""
    env = dict(os.environ, PYTHONPATH=str(main_src), HF_HUB_OFFLINE="1", MMAL_PROGRESS="0")
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run([sys.executable, "-c", TODAY_SCRIPT, modality, spec, str(bs), json.dumps(params), *map(str, paths)],
                       capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def tower(spec, paths, args, tmp, fe=None):
    import torch

    import mmal.encoders as E
    from mmal.encoders.stream import default_workers

    params = {"pad_to_30s": False} if spec.startswith("audio") else {}
    enc = E.load(spec, **params)
    modality = enc.modality
    bs = enc.default_batch_size
    enc.embed(paths[:2])  # warm-up
    row = {"n": len(paths), "batch_size": bs, "torch_threads": torch.get_num_threads(), "workers": default_workers(),
           "params": params, "load_before": load()}
    row["split_ms_per_item"], prepared = split(enc, modality, paths, bs, tmp)
    row["ab"] = ab(enc, modality, paths, bs, args.rounds, tmp, default_workers(), params, fe)
    row["forward_only"] = forward_only(enc, prepared, bs, args.rounds)
    e2e = row["ab"]["median_items_per_s"]["threaded"]
    row["e2e_over_forward"] = round(row["forward_only"]["median_items_per_s"] / e2e, 2)
    row["threads"] = threads_ab(enc, prepared[: min(len(prepared), 64)], bs, 2)
    row["batch_size_sweep_forward_items_per_s"] = batch_sweep(enc, prepared[: min(len(prepared), 64)], (4, 8, 16, 32))
    row["bf16_autocast"] = bf16_probe(enc, prepared[: min(len(prepared), 64)], bs)
    if args.main_src:
        row["today"] = today(args.main_src, modality, spec, 16, params, paths)
        row["today"]["what"] = "main checkout's encode_items, batch 16 (mmal.toml default), its default torch threads"
    row["today_readme_items_per_s"] = TODAY_README[spec]
    row["load_after"] = load()
    t = row["ab"]["median_items_per_s"]
    row["targets"] = {
        "threaded_vs_plain_loop_ge_1.5": row["ab"]["speedup_threaded_vs_plain"] >= 1.5,
        "threaded_vs_today_readme_ge_1.5": round(t["threaded"] / TODAY_README[spec], 2),
        "threaded_vs_today_measured": (round(t["threaded"] / row["today"]["items_per_s"], 2)
                                       if "items_per_s" in row.get("today", {}) else None),
        "e2e_within_1.5x_of_forward_only": row["e2e_over_forward"] <= 1.5,
    }
    print(spec, json.dumps(row), flush=True)
    return row


def padded(paths, args):
    """Whisper padded 30 s: our threaded encode vs transformers' feature extractor + WhisperEncoder.forward."""
    import mmal.encoders as E
    from mmal.data.media import load_audio

    enc = E.load(AUDIO, pad_to_30s=True)
    wavs = [load_audio(p) for p in paths]
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    enc.embed(wavs[:1])
    runs = {"transformers_loop": [], "threaded": []}
    row = {"n": len(paths), "batch_size": enc.default_batch_size, "load_before": load()}
    for k in range(args.rounds):
        for which in (("transformers_loop", "threaded") if k % 2 == 0 else ("threaded", "transformers_loop")):
            if which == "threaded":
                _, dt = timed(enc.encode, paths)
            else:
                def plain():
                    plain_padded_loop(enc, [load_audio(p) for p in paths], enc.default_batch_size, fe)
                _, dt = timed(plain)
            runs[which].append(round(len(paths) / dt, 2))
    row["runs_items_per_s"] = runs
    row["median_items_per_s"] = {k: statistics.median(v) for k, v in runs.items()}
    row["load_after"] = load()
    print("padded", json.dumps(row), flush=True)
    return row


def legacy(args):
    """The earlier version's per-encoder figures (every spec; Whisper padded vs real length)."""
    import mmal.encoders as E
    from mmal.data.media import load_audio

    images, texts, _ = collect(args.n)
    sounds = collect(args.n_audio)[2]
    inputs = {"text": texts, "image": images, "audio": sounds}
    results = {"encoders": {}, "whisper_padding": {}}
    for spec in E.KNOWN_SPECS:
        enc, t_load = timed(E.load, spec)
        x = inputs[enc.modality]
        enc.embed(x[:2])
        (pooled, seqs), dt = timed(enc.encode, x)
        results["encoders"][spec] = {"n": len(x), "dim": enc.dim, "load_s": round(t_load, 2), "seconds": round(dt, 2),
                                     "items_per_s": round(len(x) / dt, 2),
                                     "mean_seq_len": round(float(np.mean([len(s) for s in seqs])), 1),
                                     "fingerprint": enc.fingerprint, "includes": "decode from file + preprocess + forward"}
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
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="images")
    ap.add_argument("--n-audio", type=int, default=40, help="sounds (real length)")
    ap.add_argument("--n-padded", type=int, default=8, help="sounds for the 30 s padded comparison (~1 s/item)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating A/B rounds")
    ap.add_argument("--main-src", default="/work/main/src", help="src/ of a checkout before this change ('' to skip)")
    ap.add_argument("--legacy", action="store_true", help="also re-run the earlier per-encoder list")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "encode.json"))
    args = ap.parse_args(argv)

    import torch
    from transformers import WhisperFeatureExtractor

    from mmal.encoders.stream import available_cores, encode_threads

    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    load0 = os.getloadavg()
    threads = encode_threads()
    if threads is not None:
        torch.set_num_threads(threads)  # what `mmal encode` would choose now; both sides of every A/B use it
    images, _, _ = collect(args.n)
    sounds = collect(args.n_audio)[2]
    results = {"towers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        results["towers"][IMAGE] = tower(IMAGE, images, args, tmp)
        results["towers"][AUDIO] = tower(AUDIO, sounds, args, tmp, WhisperFeatureExtractor(feature_size=80))
    results["whisper_padded_vs_transformers"] = padded(sounds[: args.n_padded], args)
    if args.legacy:
        results.update(legacy(args))
    else:
        earlier = old.get("earlier_run") or {k: old[k] for k in ("encoders", "whisper_padding", "machine", "note", "command") if k in old}
        if earlier:
            earlier.setdefault("what", "figures of the sequential path before decode/preprocess threads; not re-run (--legacy re-runs them)")
            results["earlier_run"] = earlier
    load1 = os.getloadavg()
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "available_cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_threads_chosen_by": "mmal.encoders.stream.encode_threads (free cores from the load)" if threads else "OMP_NUM_THREADS",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in load1],
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    results["note"] = (
        "Taken on a shared 2-core machine while other engineers ran tests: the 1-minute load average was "
        f"{load0[0]:.1f} at the start and {load1[0]:.1f} at the end (each section records its own), i.e. this "
        "process had well under one core on average. Absolute items/s are pessimistic and noisy; the alternating "
        "A/B ratios are the robust figures. float32 CPU."
    )
    results["command"] = (f"HF_HUB_OFFLINE=1 .venv/bin/python bench/encode.py --n {args.n} --n-audio {args.n_audio} "
                          f"--n-padded {args.n_padded} --rounds {args.rounds}" + (" --legacy" if args.legacy else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
