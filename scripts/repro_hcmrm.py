"""Reproduce HCMRM (seed 003) Table 1 / Table 2 analogs and the distilled student on tuxpaint-relevance.

    python scripts/repro_hcmrm.py --seeds 0 1 2 --out docs/results/hcmrm.json

Per seed (the seed drives model init, batching, PQVM splits/negatives; the dataset is
built once with seed 0):

- Table 1 analog: architectures ``text`` (BERT analog), ``single`` (BERT-VL analog),
  ``dual`` (ALBEF/HCMRM) each pre-trained without and with PQVM
  (text/single: ``mlm`` vs ``mlm,pqvm``; dual: ``itc,itm,mlm`` vs ``itc,itm,mlm,pqvm``),
  then fine-tuned with the hierarchical-softmax head;
- Table 2 analog: the dual + PQVM pre-trained model fine-tuned with each of the four heads;
- student (003 App. A) distilled from the dual + PQVM + hsoftmax teacher.

Test metrics on the test queries (unseen in training): AUC ({0,1} vs {2,3}), Spearman,
Pearson, NDCG@10 per query. The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import sys
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMAL_PROGRESS", "0")

from mmal.data.datasets import build  # noqa: E402
from mmal.features.hcmrm import prepare_relevance  # noqa: E402
from mmal.metrics.relevance import relevance_metrics  # noqa: E402
from mmal.models.hcmrm import RelevanceConfig  # noqa: E402
from mmal.models.hcmrm_pretrain import score_pairs, score_relevance  # noqa: E402
from mmal.models.hcmrm_student import student_scores, unlabeled_pairs  # noqa: E402
from mmal.train.hcmrm import distill_student, finetune_hcmrm, pretrain_hcmrm  # noqa: E402


def finetune_relevance(data, model, *, head, epochs, lr, seed):
    """Fine-tune on every labeled train pair (the table's protocol)."""
    return finetune_hcmrm(data, data.labels, data.pairs("train"), model, head=head,
                          train={"epochs": epochs, "lr": lr}, seed=seed)

TABLE1 = [("text", "mlm"), ("text", "mlm,pqvm"), ("single", "mlm"), ("single", "mlm,pqvm"),
          ("dual", "itc,itm,mlm"), ("dual", "itc,itm,mlm,pqvm")]
HEADS = ("hsoftmax", "bce", "mse", "ordinal")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="data/hcmrm")
    ap.add_argument("--out", default="docs/results/hcmrm.json")
    ap.add_argument("--n-stamps", type=int, default=300)
    ap.add_argument("--pre-epochs", type=int, default=3)
    ap.add_argument("--ft-epochs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--n-random", type=int, default=1500)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = pathlib.Path(args.work)
    items = work / "tuxpaint-relevance" / "items.parquet"
    if not items.exists():
        build("tuxpaint-relevance", items.parent, seed=0, n_stamps=args.n_stamps, progress=False)
    meta = json.loads((items.parent / "relevance_meta.json").read_text())
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    data = prepare_relevance(items, cache_dir=work / "cache", n_frames=1)
    te = data.pairs("test")
    y_te, q_te = data.labels[te], data.query_ids[te]
    cfg = dict(dim=args.dim, n_heads=4, n_text_layers=1, n_image_layers=1, n_fusion_layers=1, embed_dim=32)
    runs = []
    # reference without training: cosine of frozen MiniLM mean states (query vs keyword text)
    qv = np.stack([data.query_text[i].states.mean(0).numpy() for i in te])
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    cos = (qv * data.text_pooled[data.video_index[te]]).sum(1)
    runs.append({"table": "zero-shot", "seed": None, **relevance_metrics(y_te, cos, q_te)})
    for seed in args.seeds:
        pre_models = {}
        for arch, objs in TABLE1:
            t0 = time.perf_counter()
            pr = pretrain_hcmrm(data, RelevanceConfig(arch=arch, **cfg), objectives=objs,
                                train={"epochs": args.pre_epochs, "lr": 5e-4}, seed=seed)
            pre_models[(arch, objs)] = pr.model
            model = copy.deepcopy(pr.model)
            ft = finetune_relevance(data, model, head="hsoftmax", epochs=args.ft_epochs, lr=1e-3, seed=seed)
            s, _ = score_relevance(ft.model, ft.head, data, te)
            m = relevance_metrics(y_te, s, q_te)
            runs.append({"table": 1, "seed": seed, "arch": arch, "objectives": objs, "head": "hsoftmax", **m,
                         "pretrain_history": pr.history, "seconds": time.perf_counter() - t0})
            print(json.dumps({k: runs[-1][k] for k in ("seed", "arch", "objectives", "auc", "spearman", "pearson",
                                                       "ndcg@10", "seconds")}), flush=True)
            if (arch, objs) == ("dual", "itc,itm,mlm,pqvm"):
                teacher = ft
        for head in HEADS:
            t0 = time.perf_counter()
            if head == "hsoftmax":
                ft = teacher
            else:
                ft = finetune_relevance(data, copy.deepcopy(pre_models[("dual", "itc,itm,mlm,pqvm")]), head=head,
                                        epochs=args.ft_epochs, lr=1e-3, seed=seed)
            s, _ = score_relevance(ft.model, ft.head, data, te)
            m = relevance_metrics(y_te, s, q_te)
            runs.append({"table": 2, "seed": seed, "arch": "dual", "objectives": "itc,itm,mlm,pqvm", "head": head,
                         **m, "seconds": time.perf_counter() - t0})
            print(json.dumps({k: runs[-1][k] for k in ("seed", "head", "auc", "spearman", "pearson", "ndcg@10")}),
                  flush=True)
        # student (003 App. A)
        t0 = time.perf_counter()
        segs, vids = unlabeled_pairs(data, args.n_random, seed=seed)
        t_scores, _ = score_pairs(teacher.model, teacher.head, data, segs, vids)
        st = distill_student(data, segs, vids, t_scores, train={"epochs": 15}, seed=seed)
        teacher_te, _ = score_relevance(teacher.model, teacher.head, data, te)
        qseg = [data.query_text[i] for i in te]
        s_te, _ = student_scores(st.model, data, qseg, data.video_index[te])
        rep = 20
        _, pairs_per_s = student_scores(st.model, data, qseg * rep, np.tile(data.video_index[te], rep))
        from scipy.stats import spearmanr

        m = relevance_metrics(y_te, s_te, q_te)
        runs.append({"table": "student", "seed": seed, **m,
                     "spearman_vs_teacher": float(spearmanr(s_te, teacher_te).statistic),
                     "student_pairs_per_s": pairs_per_s, "n_distill_pairs": len(vids),
                     "seconds": time.perf_counter() - t0})
        print(json.dumps({k: runs[-1][k] for k in ("seed", "auc", "spearman", "spearman_vs_teacher",
                                                   "student_pairs_per_s")}), flush=True)
    out = {"dataset": meta, "config": {**cfg, "pre_epochs": args.pre_epochs, "ft_epochs": args.ft_epochs,
                                       "text_states": "joint", "n_frames": 1, "grid": 2, "pre_lr": 5e-4,
                                       "ft_lr": 1e-3, "batch_size": 32, "n_random": args.n_random},
           "data_info": data.info, "n_test_pairs": int(len(te)), "n_train_pairs": int(len(data.pairs("train"))),
           "loadavg_before": load0, "loadavg_after": os.getloadavg(),
           "seconds": time.perf_counter() - t_all, "runs": runs}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
    render(args.out, pathlib.Path(args.out).with_suffix(".table.md"))
    print(f"wrote {args.out}", file=sys.stderr)



def _ms(vals):
    v = np.array([x for x in vals if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def render(json_path, md_path):
    """Write the Markdown tables (mean ± std over seeds, sample std) from the results JSON."""
    res = json.loads(pathlib.Path(json_path).read_text())
    runs = res["runs"]
    mets = ("auc", "spearman", "pearson", "ndcg@10")
    seeds = sorted({r["seed"] for r in runs if r["seed"] is not None})
    lines = [f"Seeds {seeds}; mean ± sample std over the seeds a row has (one value = one seed); test = "
             f"{res['n_test_pairs']} pairs of unseen queries.", ""]
    lines += ["**Table 1 analog** (hierarchical-softmax head)", "",
              "| model | stream | pre-training | PQVM | seeds | AUC | Spearman | Pearson | NDCG@10 |", "|---|---|---|---|---|---|---|---|---|"]
    names = {"text": ("BERT analog (text only)", "—"), "single": ("BERT-VL analog", "single"),
             "dual": ("ALBEF analog / HCMRM", "dual")}
    for arch, objs in TABLE1:
        rs = [r for r in runs if r["table"] == 1 and r["arch"] == arch and r["objectives"] == objs]
        nm, stream = names[arch]
        lines.append(f"| {nm} | {stream} | {objs} | {'✓' if 'pqvm' in objs else ''} | {len(rs)} | "
                     + " | ".join(_ms([r[m] for r in rs]) for m in mets) + " |")
    zs = [r for r in runs if r["table"] == "zero-shot"]
    if zs:
        lines.append("| reference: frozen MiniLM cosine, no training | — | — | | — | "
                     + " | ".join(f"{zs[0][m]:.3f}" for m in mets) + " |")
    lines += ["", "**Table 2 analog** (dual stream pre-trained with itc,itm,mlm,pqvm)", "",
              "| loss | seeds | AUC | Spearman | Pearson | NDCG@10 |", "|---|---|---|---|---|---|"]
    for head in HEADS:
        rs = [r for r in runs if r["table"] == 2 and r["head"] == head]
        lines.append(f"| {head} | {len(rs)} | " + " | ".join(_ms([r[m] for r in rs]) for m in mets) + " |")
    rs = [r for r in runs if r["table"] == "student"]
    if rs:
        lines += ["", "**Student vs teacher** (teacher = dual + PQVM + hsoftmax of the same seed)", "",
                  "| | seeds | AUC | Spearman | Pearson | NDCG@10 | Spearman vs teacher | scoring pairs/s |",
                  "|---|---|---|---|---|---|---|---|"]
        te = [r for r in runs if r["table"] == 2 and r["head"] == "hsoftmax"]
        lines.append(f"| teacher | {len(te)} | " + " | ".join(_ms([r[m] for r in te]) for m in mets) + " | 1 | see bench |")
        lines.append(f"| student | {len(rs)} | " + " | ".join(_ms([r[m] for r in rs]) for m in mets) + f" | "
                     f"{_ms([r['spearman_vs_teacher'] for r in rs])} | {np.mean([r['student_pairs_per_s'] for r in rs]):.0f} |")
    pathlib.Path(md_path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--render":  # --render RESULTS.json OUT.table.md
        render(sys.argv[2], sys.argv[3])
    else:
        main()
