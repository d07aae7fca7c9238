"""Save / load a trained classifier with its configs."""

from __future__ import annotations

from pathlib import Path

import torch

from mmal.errors import ConfigError, WorkspaceError
from mmal.models import ModelConfig, MultimodalClassifier
from mmal.train.config import TrainConfig

FORMAT = "mmal-classifier/1"


def write_payload(path, payload: dict) -> Path:
    """``torch.save`` a plain payload atomically (temp file + rename)."""
    from mmal.utils import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:  # a full disk: one line naming the file and the free space, no temp file left
        torch.save(payload, tmp)
    return path


def read_payload(path, fmt: str, what: str, fix: str = "", device: str = "cpu") -> dict:
    """Load a payload written by :func:`write_payload` with ``weights_only=True``.

    Raises :class:`WorkspaceError` naming ``path`` (and ``fix``, what to run) when the file
    is missing, unreadable (no pickle is ever executed) or not of format ``fmt``.
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise WorkspaceError(f"{path}: {what} not found{hint}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WorkspaceError(f"{path}: not a readable {what} ({type(e).__name__}: {e}){hint}") from e
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise WorkspaceError(f"{path}: expected an mmal {what} (format '{fmt}'){hint}")
    return payload


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
    return write_payload(path, payload)


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
    payload = read_payload(path, FORMAT, "checkpoint", device=device)
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
    return write_payload(path, {"format": LEARNER_FORMAT, "learner": learner.name, "config": learner.config(),
                                "state": learner.state(), "extra": extra or {}})


def read_learner(path, fix: str = "run `mmal train` again") -> dict:
    """The payload of a learner checkpoint written by :func:`save_learner` (``learner``, ``config``,
    ``state``, ``extra``); :func:`mmal.loop.core.load_learner` rebuilds the learner from it."""
    return read_payload(path, LEARNER_FORMAT, "checkpoint", fix)
