"""Core selection types: :class:`ScoredPool` and :class:`Selection` (DESIGN.md "Core types")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError


@dataclass
class ScoredPool:
    """Everything a strategy may read about the candidate items.

    Parameters
    ----------
    ids : array-like of str, shape [N]
    probs : float array [N, C]
        Predicted class probabilities of the current model.
    embedding : float array [N, D]
        The fused CLS state ``H_cls`` (numpy array or memmap; never copied here).
    modality : dict name -> float array [N, D_m], optional
        Per-modality embeddings (inputs of the fused head, for BADGE/BMMAL blocks).
    labels : int array [N], optional
        Known labels, ``-1`` where unknown.
    split : array of str [N], optional
        ``train`` / ``pool`` / ``test``; test items are never selectable.
    extras : dict name -> array [N, ...], optional
        Further per-item arrays (e.g. unimodal-head probabilities ``probs:<modality>``).
    fused_blocks : bool
        True when ``modality[m]`` are exactly the input blocks of the fused classifier's last
        linear layer, i.e. that layer reads ``concat(modality[m] for m in sorted(modality))``
        (the ``late-fusion`` learner). Only then are per-modality gradient blocks exact
        (BMMAL, 002 eq. 3.12-3.14). False for learners that cannot give true blocks.
    """

    ids: np.ndarray
    probs: np.ndarray
    embedding: np.ndarray | None = None
    modality: dict = field(default_factory=dict)
    labels: np.ndarray | None = None
    split: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    fused_blocks: bool = False

    def __post_init__(self):
        self.fused_blocks = bool(self.fused_blocks)
        self.ids = np.asarray(self.ids).astype(str)
        n = len(self.ids)
        if self.probs is None or self.probs.ndim != 2 or self.probs.shape[0] != n:
            shape = None if self.probs is None else self.probs.shape
            raise ConfigError(f"ScoredPool: probs must be [N={n}, C], got {shape}")
        if self.embedding is not None and (self.embedding.ndim != 2 or self.embedding.shape[0] != n):
            raise ConfigError(f"ScoredPool: embedding must be [N={n}, D], got {self.embedding.shape}")
        for name, arr in self.modality.items():
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ConfigError(f"ScoredPool: modality '{name}' must be [N={n}, D], got {arr.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != (n,):
                raise ConfigError(f"ScoredPool: labels must be [N={n}], got {self.labels.shape}")
        if self.split is not None:
            self.split = np.asarray(self.split).astype(str)
            if self.split.shape != (n,):
                raise ConfigError(f"ScoredPool: split must be [N={n}], got {self.split.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return int(self.probs.shape[1])

    def selectable(self, labeled_mask=None) -> np.ndarray:
        """Boolean mask [N]: not labeled and not a test item."""
        mask = np.ones(len(self), dtype=bool)
        if labeled_mask is not None:
            labeled_mask = np.asarray(labeled_mask, dtype=bool)
            if labeled_mask.shape != (len(self),):
                raise ConfigError(
                    f"labeled_mask must have shape [{len(self)}], got {labeled_mask.shape}"
                )
            mask &= ~labeled_mask
        if self.split is not None:
            mask &= self.split != "test"
        return mask

    # ---- on-disk form: a folder of .npy (memmap) + ids -------------------------------
    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "probs.npy", np.asarray(self.probs, dtype=np.float32))
        if self.embedding is not None:
            np.save(folder / "embedding.npy", np.asarray(self.embedding, dtype=np.float32))
        for name, arr in self.modality.items():
            np.save(folder / f"modality.{name}.npy", np.asarray(arr, dtype=np.float32))
        for name, arr in self.extras.items():
            np.save(folder / f"extra.{name}.npy", np.asarray(arr))
        if self.labels is not None:
            np.save(folder / "labels.npy", np.asarray(self.labels, dtype=np.int64))
        if self.split is not None:
            np.save(folder / "split.npy", np.asarray(self.split).astype("U8"))
        import pyarrow as pa
        import pyarrow.parquet as pq

        (folder / "meta.json").write_text(json.dumps({"fused_blocks": self.fused_blocks}))
        pq.write_table(pa.table({"id": pa.array(self.ids.tolist(), pa.string())}), folder / "ids.parquet")
        return folder

    @classmethod
    def load(cls, folder, mmap: bool = True) -> "ScoredPool":
        import pyarrow.parquet as pq

        folder = Path(folder)
        if not (folder / "ids.parquet").exists():
            raise ConfigError(f"{folder}: not a ScoredPool folder (no ids.parquet)")
        mode = "r" if mmap else None
        ids = np.asarray(pq.read_table(folder / "ids.parquet").column("id").to_pylist())
        opt = lambda name: np.load(folder / name, mmap_mode=mode) if (folder / name).exists() else None  # noqa: E731
        modality = {p.name[len("modality."):-4]: np.load(p, mmap_mode=mode) for p in sorted(folder.glob("modality.*.npy"))}
        extras = {p.name[len("extra."):-4]: np.load(p, mmap_mode=mode) for p in sorted(folder.glob("extra.*.npy"))}
        meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
        return cls(
            ids=ids,
            fused_blocks=bool(meta.get("fused_blocks", False)),
            probs=np.load(folder / "probs.npy", mmap_mode=mode),
            embedding=opt("embedding.npy"),
            modality=modality,
            labels=opt("labels.npy"),
            split=opt("split.npy"),
            extras=extras,
        )


@dataclass
class Selection:
    """The result of a strategy.

    ``ids`` are unique; ``score`` is the strategy's score of each (higher = chosen first,
    NaN where a strategy has none); ``reason`` says why (e.g. the seed bad case an LSB
    neighbour came from, ``""`` when none); ``strategy`` names the strategy per id (a mix
    records its parts).
    """

    ids: np.ndarray
    strategy: np.ndarray
    score: np.ndarray
    reason: np.ndarray
    round: int = 0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        self.ids = np.asarray(self.ids).astype(str)
        if isinstance(self.strategy, str):
            self.strategy = np.full(n, self.strategy, dtype=object)
        self.strategy = np.asarray(self.strategy, dtype=object)
        self.score = np.asarray(self.score, dtype=np.float64)
        if self.reason is None:
            self.reason = np.full(n, "", dtype=object)
        self.reason = np.asarray(self.reason, dtype=object)
        for name in ("strategy", "score", "reason"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"Selection.{name} has {len(getattr(self, name))} entries for {n} ids")
        if len(set(self.ids.tolist())) != n:
            raise ConfigError("Selection ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def to_table(self):
        import pyarrow as pa

        return pa.table(
            {
                "id": pa.array(self.ids.tolist(), pa.string()),
                "strategy": pa.array([str(s) for s in self.strategy], pa.string()),
                "score": pa.array(self.score.tolist(), pa.float64()),
                "reason": pa.array([str(r) for r in self.reason], pa.string()),
                "round": pa.array([self.round] * len(self), pa.int64()),
            }
        )

    def info_json(self) -> str:
        return json.dumps(self.info, default=float)
