"""How class-shaped is each selection space? A diagnostic for the cold-start results.

Representativeness strategies (k-means, TypiClust, ProbCover, ActiveFT) pick cluster
centres; that helps when clusters are classes. For the non-test items of each workspace and
each space (raw = the concatenated L2-normalised pooled tower features, as ``cold_pool``
builds them; mmssl = the stored MMSSL heads of ``repro_mmssl_init.py``), this prints

* leave-one-out 1-NN label agreement (cosine), and
* k-means purity at k = C and k = 5C (share of items whose label is their cluster's
  majority label; k-means++ seed 0, 20 iterations), against the same purity of a random
  assignment to k equal clusters (what the class imbalance alone gives).

Usage::

    PYTHONPATH=src python scripts/cold_start_structure.py --ws tuxpaint=WS --pretrain tuxpaint=/tmp/pre/tuxpaint
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_cold_start import load  # noqa: E402


def purity(assign: np.ndarray, y: np.ndarray) -> float:
    tot = 0
    for c in np.unique(assign):
        tot += np.bincount(y[assign == c]).max()
    return tot / len(y)


def structure(x: np.ndarray, y: np.ndarray, C: int) -> dict:
    from mmal.cluster import kmeans

    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    out = {"nn1": float(np.mean(y[s.argmax(1)] == y))}
    rng = np.random.default_rng(0)
    for k in (C, 5 * C):
        _, a, _ = kmeans(x, k, seed=0)
        out[f"purity_k{k}"] = float(purity(a, y))
        out[f"purity_k{k}_random"] = float(np.mean([purity(rng.permutation(np.arange(len(y)) % k), y) for _ in range(5)]))
    return out


def main(argv=None):
    import torch

    from mmal.models.mmssl import ProjectionHead, embed
    from mmal.select.coldstart import concat_features

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ws", action="append", default=[])
    ap.add_argument("--pretrain", action="append", default=[], help="NAME=FOLDER with heads.pt and meta.json")
    a = ap.parse_args(argv)
    pre = dict(p.split("=", 1) for p in a.pretrain)
    res = {}
    for spec in a.ws:
        name, _, d = spec.partition("=")
        ids, y, split, feats, C = load(d)
        cand = np.flatnonzero(split != "test")
        spaces = {"raw": concat_features({m: f[cand] for m, f in feats.items()})}
        if name in pre:
            meta = json.loads((Path(pre[name]) / "meta.json").read_text())
            sd = torch.load(Path(pre[name]) / "heads.pt", weights_only=True)
            heads = {}
            for m, st in sd.items():
                h = ProjectionHead(st["net.0.weight"].shape[1], meta["config"]["hidden"], meta["config"]["dim"])
                h.load_state_dict(st)
                heads[m] = h
            spaces["mmssl"] = concat_features(embed(heads, {m: f[cand] for m, f in feats.items()}))
        for m, f in feats.items():
            spaces[f"raw {m} only"] = f[cand]
        res[name] = {k: structure(np.asarray(v, np.float64), y[cand], C) for k, v in spaces.items()}
        for k, v in res[name].items():
            print(f"{name:16s} {k:18s} " + "  ".join(f"{kk} {vv:.3f}" for kk, vv in v.items()), flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
