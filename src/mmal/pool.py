"""Core types shared by scoring, selection and the workspace: :class:`ScoredPool` and :class:`Selection`.

DESIGN.md "Core types". Pure data; their files are read and written by
:mod:`mmal.workspace.pool_io` (``save_pool``/``load_pool``/``save_selection``).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Iterable

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
    ordered : bool
        True when the labels are ordered (relevance levels), so a bad case is scored by
        000 eq. 11 (``|E_p[y] - y|``); False (classes): by ``1 - p_y``. Set from the task.
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
    ordered: bool = False

    def __post_init__(self):
        self.fused_blocks = bool(self.fused_blocks)
        self.ordered = bool(self.ordered)
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

    def info_json(self) -> str:
        return json.dumps(self.info, default=float)


# ---- modality coalitions (BMMAL's value function, 002 eq. 3.12-3.14) ------------------------------
def coalition_key(subset: Iterable[str]) -> str:
    """Key of a modality subset in ``coalition_probs`` / ``pool.extras["coalition:<key>"]``: sorted names joined by ``+``."""
    return "+".join(sorted(subset))


def coalition_subsets(modalities: list[str], coalitions) -> list[tuple[str, ...]]:
    """``True`` -> all 2^M subsets (M <= 4); or an explicit list of subsets (validated)."""
    if coalitions is True:
        if len(modalities) > 4:
            raise ConfigError(
                f"coalitions=True with {len(modalities)} modalities would need {2 ** len(modalities)} passes; "
                "pass an explicit list of subsets"
            )
        return [s for r in range(len(modalities) + 1) for s in itertools.combinations(sorted(modalities), r)]
    out = []
    for s in coalitions or []:
        s = tuple(sorted([s] if isinstance(s, str) else s))
        bad = set(s) - set(modalities)
        if bad:
            raise ConfigError(f"coalition {s} names modalities {sorted(bad)} the model does not have; model has {modalities}")
        out.append(s)
    return out
