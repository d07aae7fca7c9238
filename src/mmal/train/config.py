"""Training hyper-parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from mmal.errors import ConfigError

MONITORS = ("val_loss", "val_accuracy")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`mmal.train.fit`.

    Parameters
    ----------
    lr, weight_decay : AdamW learning rate (1e-3) and decoupled weight decay (0.01).
    epochs : maximum number of epochs (30).
    batch_size : training batch size (32).
    patience : stop after this many epochs without improvement of ``monitor`` (5); the
        best state is restored. ``None`` = never stop early.
    monitor : ``"val_loss"`` (fused-head cross-entropy on ``val_idx``) or ``"val_accuracy"``.
    seed : seeds weight init, dropout and shuffling (same seed -> identical weights).
    unimodal_weight : weighting of the uni-modal heads' losses when the model has
        ``heads="fused+unimodal"``. ``None`` (default, METHODS E) averages all heads:
        ``loss = (CE_fused + sum_m CE_m) / (1 + M)`` — ⅓ each for two modalities, generalised
        to M modalities. A float ``w`` gives ``CE_fused + w * sum_m CE_m``. ``CE_m`` averages
        over the batch items that have modality ``m`` (items lacking it do not train head m).
    class_weight : ``None`` or ``"balanced"`` (inverse class frequency on the training labels)
        for the cross-entropies.
    grad_clip : max global gradient norm (1.0); ``None`` disables clipping.
    threads : torch intra-op threads during fit/score (``None`` = leave torch's setting).
    device : ``"cpu"`` or ``"cuda"``.
    finetune_towers : train end to end through the encoder towers. Needs raw
        inputs, so it is done by :func:`mmal.train.finetune.fit_end_to_end` (which sets this
        flag in the config it records); :func:`mmal.train.fit` only has cached features and
        raises :class:`~mmal.errors.ConfigError` pointing there. Slow on CPU: meant for GPU
        machines (``device="cuda"``); see docs/models.md.
    """

    lr: float = 1e-3
    weight_decay: float = 0.01
    epochs: int = 30
    batch_size: int = 32
    patience: int | None = 5
    monitor: str = "val_loss"
    seed: int = 0
    unimodal_weight: float | None = None
    class_weight: str | None = None
    grad_clip: float | None = 1.0
    threads: int | None = None
    device: str = "cpu"
    finetune_towers: bool = False

    def __post_init__(self):
        checks = [
            (self.lr > 0, f"lr = {self.lr}: expected > 0"),
            (self.weight_decay >= 0, f"weight_decay = {self.weight_decay}: expected >= 0"),
            (self.epochs >= 1, f"epochs = {self.epochs}: expected >= 1"),
            (self.batch_size >= 1, f"batch_size = {self.batch_size}: expected >= 1"),
            (self.patience is None or self.patience >= 1, f"patience = {self.patience}: expected >= 1 or None"),
            (self.monitor in MONITORS, f"monitor = '{self.monitor}': expected one of {MONITORS}"),
            (self.class_weight in (None, "balanced"), f"class_weight = '{self.class_weight}': expected None or 'balanced'"),
            (self.unimodal_weight is None or self.unimodal_weight >= 0, f"unimodal_weight = {self.unimodal_weight}: expected >= 0 or None"),
            (self.threads is None or self.threads >= 1, f"threads = {self.threads}: expected >= 1 or None"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError("TrainConfig." + msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"TrainConfig: unknown fields {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**dict(d))


def check_device(device: str, *, where: str = "device") -> None:
    """ConfigError (one line starting with ``where``) unless torch can run on ``device`` here.

    ``"cpu"`` always can; ``"cuda"`` / ``"cuda:N"`` need a CUDA build of torch, a visible GPU
    and, for ``N``, that many devices. Checked before training starts, instead of a traceback
    from deep inside the first ``.to(device)``.
    """
    if device == "cpu":
        return
    import torch

    fix = 'set device = "cpu" (or remove the key), or run on a machine with a GPU'
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA" if not torch.backends.cuda.is_built() else "no CUDA device is visible")
        raise ConfigError(f"{where}: CUDA is not available ({why}; torch {torch.__version__}); {fix}")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"{where}: no CUDA device {device[5:]} (this machine has {torch.cuda.device_count()}); {fix}")
