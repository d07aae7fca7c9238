"""Save / load a trained classifier with its configs."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmal.errors import ConfigError, WorkspaceError
from mmal.models import ModelConfig, MultimodalClassifier
from mmal.train.config import TrainConfig

FORMAT = "mmal-classifier/1"


def save_checkpoint(path, model: MultimodalClassifier, model_config: ModelConfig | None = None,
                    train_config: TrainConfig | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` + configs to ``path`` atomically (temp file + rename).

    ``extra`` must hold plain Python values / tensors (loaded with ``weights_only=True``).
    """
    path = Path(path)
    model_config = model_config or model.config
    payload = {
        "format": FORMAT,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict() if train_config is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, device: str = "cpu"):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    (model in eval mode, ModelConfig, TrainConfig | None, extra dict)

    Raises
    ------
    WorkspaceError : file missing, unreadable, or not an mmal classifier checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WorkspaceError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WorkspaceError(f"{path}: expected an mmal classifier checkpoint (format '{FORMAT}')")
    try:
        mc = ModelConfig.from_dict(payload["model_config"])
        tc = TrainConfig.from_dict(payload["train_config"]) if payload["train_config"] is not None else None
        model = MultimodalClassifier(mc)
        model.load_state_dict(payload["state_dict"])
    except (ConfigError, RuntimeError, KeyError) as e:
        raise WorkspaceError(f"{path}: checkpoint does not match the model code ({e})") from e
    model.to(device).eval()
    return model, mc, tc, payload.get("extra", {})


LEARNER_FORMAT = "mmal-learner/1"


def save_learner(path, learner, extra: dict | None = None) -> Path:
    """Write a fitted learner (name, config, state) to ``path`` atomically.

    Everything is plain Python values and tensors, read back with ``weights_only=True``.
    """
    path = Path(path)
    payload = {"format": LEARNER_FORMAT, "learner": learner.name, "config": learner.config(),
               "state": learner.state(), "extra": extra or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_learner(path):
    """Read a learner written by :func:`save_learner`; returns ``(learner, extra)``.

    Raises
    ------
    WorkspaceError : file missing, unreadable, or not an mmal learner checkpoint.
    """
    from mmal.learners import make_learner

    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WorkspaceError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); run `mmal train` again") from e
    if not isinstance(payload, dict) or payload.get("format") != LEARNER_FORMAT:
        raise WorkspaceError(f"{path}: expected an mmal learner checkpoint (format '{LEARNER_FORMAT}'); run `mmal train` again")
    try:
        cfg = dict(payload["config"])
        learner = make_learner(payload["learner"], **cfg)
        learner.load_state(payload["state"])
    except (ConfigError, RuntimeError, KeyError, TypeError) as e:
        raise WorkspaceError(f"{path}: checkpoint does not match the model code ({e}); run `mmal train` again") from e
    return learner, payload.get("extra", {})
