"""Workspace-level encoding and status (the imperative shell around :mod:`mmal.features.cache`)."""

from __future__ import annotations

from collections import Counter

from mmal.errors import ConfigError
from mmal.features.cache import FeatureCache, encode_items, features_status
from mmal.workspace import Workspace


def encoder_params(ws: Workspace, modality: str) -> dict:
    """Encoder keyword params from ``mmal.toml [encode]`` for one modality."""
    enc = ws.config.get("encode", {})
    if modality == "audio":
        return {"pad_to_30s": bool(enc.get("whisper_pad_to_30s", False))}
    return {}


def workspace_encoders(ws: Workspace, encoders: str | None = None) -> dict[str, str]:
    """modality -> encoder spec, from ``--encoders`` or ``mmal.toml [encoders]``."""
    specs = dict(ws.config.get("encoders", {}))
    if encoders:
        chosen = {}
        for spec in [s.strip() for s in encoders.split(",") if s.strip()]:
            kind = spec.split(":", 1)[0]
            modality = {"text": "text", "image": "image", "audio": "audio"}.get(kind)
            if modality is None:
                raise ConfigError(f"--encoders: spec {spec!r} must start with text:, image: or audio:")
            if modality not in ws.modalities:
                raise ConfigError(f"--encoders: the workspace has no {modality} modality (has {', '.join(ws.modalities)})")
            chosen[modality] = spec
        specs = chosen
    return specs


def encode_workspace(directory, *, encoders: str | None = None, batch_size: int | None = None, progress: bool = True) -> list[dict]:
    ws = Workspace(directory)
    cache = FeatureCache(ws.features_dir)
    specs = workspace_encoders(ws, encoders)
    enc_cfg = ws.config.get("encode", {})
    out = []
    for modality, spec in specs.items():
        out.append(
            encode_items(
                cache, ws.items, modality, spec,
                batch_size=int(batch_size or enc_cfg.get("batch_size", 16)),
                n_frames=int(enc_cfg.get("n_frames", 3)),
                encoder_params=encoder_params(ws, modality),
                progress=progress,
            )
        )
    return out


def load_features(ws: Workspace, ids=None) -> dict:
    """modality -> SequenceFeatures for the workspace's encoders, aligned to ``ids``."""
    from mmal.errors import WorkspaceError
    from mmal.features.cache import resolve_fingerprint

    cache = FeatureCache(ws.features_dir)
    ids = ws.items.column("id").to_pylist() if ids is None else ids
    out = {}
    for modality, spec in workspace_encoders(ws).items():
        fp = resolve_fingerprint(cache, spec, encoder_params(ws, modality))
        if fp is None:
            raise WorkspaceError(f"{ws.dir}: no cached {modality} features for {spec}; run `mmal encode {ws.dir}` first")
        out[modality] = cache.load(fp, modality, ids)
    return out


def workspace_info(directory) -> dict:
    ws = Workspace(directory)
    t = ws.items
    labels = ws.current_labels()
    names = t.column_names
    mod_counts = {}
    for m in ws.modalities:
        cols = ["image", "video"] if m == "image" else [m]
        have = None
        for c in cols:
            if c in names:
                col = [v not in (None, "") for v in t.column(c).to_pylist()]
                have = col if have is None else [a or b for a, b in zip(have, col)]
        mod_counts[m] = int(sum(have or []))
    cache = FeatureCache(ws.features_dir)
    specs = workspace_encoders(ws)
    return {
        "dir": str(ws.dir),
        "task": ws.config["task"]["type"],
        "n_classes": ws.n_classes,
        "counts": ws.counts(),
        "labels_per_class": dict(sorted(Counter(labels.values()).items())),
        "modality_counts": mod_counts,
        "features": features_status(cache, t, specs, {m: encoder_params(ws, m) for m in specs}),
    }
