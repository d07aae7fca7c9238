"""Benchmark: relevance pre-training / fine-tuning samples/s, teacher and student scoring
pairs/s, peak RSS, on the tuxpaint-relevance dataset (built if missing).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/relevance.py     # writes bench/results/relevance.json

Timings: pre-training = all four objectives (dual stream) over the videos; fine-tuning =
hierarchical-softmax head over the train pairs; both include the frozen MiniLM forward
passes (the joint-state cache is cleared before each timed phase, so no phase reuses
another's). Teacher scoring = the full model on the test pairs with a cold cache; student
scoring = the distilled student on the same pairs repeated 50 times (cached visual
embeddings, wordpiece ids). Peak RSS = ``ru_maxrss`` of this process at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MMAL_PROGRESS", "0")
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="data/hcmrm")
    ap.add_argument("--n-stamps", type=int, default=300)
    ap.add_argument("--out", default="bench/results/relevance.json")
    args = ap.parse_args(argv)
    import torch

    from mmal.data.datasets import build
    from mmal.features.hcmrm import prepare_relevance
    from mmal.models.hcmrm import RelevanceConfig
    from mmal.models.hcmrm_pretrain import score_pairs, score_relevance
    from mmal.models.hcmrm_student import student_scores, unlabeled_pairs
    from mmal.train.hcmrm import distill_student, finetune_hcmrm, pretrain_hcmrm

    work = Path(args.work)
    items = work / "tuxpaint-relevance" / "items.parquet"
    if not items.exists():
        build("tuxpaint-relevance", items.parent, seed=0, n_stamps=args.n_stamps, progress=False)
    load0 = os.getloadavg()
    t = time.perf_counter()
    data = prepare_relevance(items, cache_dir=work / "cache", n_frames=1)
    prep_s = time.perf_counter() - t
    cfg = RelevanceConfig(arch="dual", dim=64, n_heads=4, n_fusion_layers=1, embed_dim=32)
    data.tower._cache.clear()
    pr = pretrain_hcmrm(data, cfg, objectives="itc,itm,mlm,pqvm", train={"epochs": 1}, seed=0)
    data.tower._cache.clear()
    train_pairs = data.pairs("train")
    ft = finetune_hcmrm(data, data.labels, train_pairs, pr.model, head="hsoftmax", train={"epochs": 1}, seed=0)
    ft_warm = finetune_hcmrm(data, data.labels, train_pairs, None, config=cfg, head="hsoftmax", train={"epochs": 1},
                             seed=0)  # states cached now
    te = data.pairs("test")
    data.tower._cache.clear()
    t = time.perf_counter()
    teacher_te, _ = score_relevance(ft.model, ft.head, data, te)
    teacher_pps = len(te) / (time.perf_counter() - t)
    segs, vids = unlabeled_pairs(data, 500, seed=0)
    ts, _ = score_pairs(ft.model, ft.head, data, segs, vids)
    st = distill_student(data, segs, vids, ts, train={"epochs": 3})
    qseg = [data.query_text[i] for i in te]
    _, student_pps = student_scores(st.model, data, qseg * 50, np.tile(data.video_index[te], 50))
    res = {
        "dataset": {"videos": len(data.video_ids), "pairs": int(len(data.labels)), "test_pairs": int(len(te))},
        "config": cfg.to_dict(),
        "prepare_seconds": prep_s,
        "pretrain_samples_per_s": pr.samples_per_s,
        "finetune_samples_per_s_cold_text_cache": ft.samples_per_s,
        "finetune_samples_per_s_warm_text_cache": ft_warm.samples_per_s,
        "teacher_score_pairs_per_s_cold": teacher_pps,
        "student_score_pairs_per_s": student_pps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
