"""Encoding a workspace's items into its feature cache (the shell around :mod:`mmal.features.cache`).

``ws`` is a :class:`mmal.workspace.Workspace` (its ``config``, ``items``, ``modalities`` and
``features_dir`` are read; nothing else).
"""

from __future__ import annotations

from mmal.errors import ConfigError
from mmal.features.cache import FeatureCache, encode_items


def encoder_params(ws, modality: str) -> dict:
    """Encoder keyword params from ``mmal.toml [encode]`` for one modality."""
    enc = ws.config.get("encode", {})
    if modality == "audio":
        return {"pad_to_30s": bool(enc.get("whisper_pad_to_30s", False))}
    return {}


def workspace_encoders(ws, encoders: str | None = None) -> dict[str, str]:
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


def encode_workspace(ws, *, encoders: str | None = None, batch_size: int | None = None, progress: bool = True) -> list[dict]:
    """Encode every item of ``ws`` that the cache does not have yet, per modality; one result dict each.

    ``batch_size`` (or ``mmal.toml [encode] batch_size``) sets the items per chunk and per
    forward pass for every tower; when neither is given each tower uses its own
    (``Encoder.default_batch_size``). Decoding runs in threads beside the forward pass and
    torch's thread count follows the cores and the load (:func:`mmal.features.cache.encode_items`).
    """
    cache = FeatureCache(ws.features_dir)
    specs = workspace_encoders(ws, encoders)
    configured = ws.config.get("encode", {}).get("batch_size")
    out = []
    for modality, spec in specs.items():
        out.append(
            encode_items(
                cache, ws.items, modality, spec,
                batch_size=int(batch_size or configured) if (batch_size or configured) else None,
                n_frames=int(ws.setting("encode", "n_frames")),
                encoder_params=encoder_params(ws, modality),
                progress=progress,
            )
        )
    return out


def load_features(ws, ids=None, *, read_only: bool = False) -> dict:
    """modality -> SequenceFeatures for the workspace's encoders, aligned to ``ids``.

    ``read_only``: write nothing into the workspace (:meth:`FeatureCache.read`: no
    consolidated view is built); ``mmal simulate WS`` reads the features this way."""
    from mmal.errors import WorkspaceError
    from mmal.features.cache import resolve_fingerprint

    cache = FeatureCache(ws.features_dir)
    ids = ws.items.column("id").to_pylist() if ids is None else ids
    out = {}
    for modality, spec in workspace_encoders(ws).items():
        fp = resolve_fingerprint(cache, spec, encoder_params(ws, modality))
        if fp is None:
            raise WorkspaceError(f"{ws.dir}: no cached {modality} features for {spec}; run `mmal encode {ws.dir}` first")
        out[modality] = (cache.read if read_only else cache.load)(fp, modality, ids)
    return out
