"""Monte-Carlo dropout: stochastic forward passes with only dropout active.

Y. Gal, Z. Ghahramani. Dropout as a Bayesian Approximation. ICML 2016; used by BALD
(:mod:`mmal.select.bald`).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from torch import nn

from mmal.errors import ConfigError

# every dropout flavour (Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout)
# derives from this private base class
_DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)


def is_dropout(module: nn.Module) -> bool:
    """True for every ``torch.nn`` dropout variant."""
    return isinstance(module, _DROPOUT_TYPES)


@contextlib.contextmanager
def mc_dropout(model: nn.Module):
    """Put ONLY dropout modules in train mode; everything else (BatchNorm, ...) in eval.

    Each module's previous ``training`` flag is restored on exit, also on error.

    Parameters
    ----------
    model : torch.nn.Module
    """
    before = {m: m.training for m in model.modules()}
    try:
        for m in model.modules():
            m.training = is_dropout(m)  # set per module, not recursively
        yield model
    finally:
        for m, flag in before.items():
            m.training = flag


def mc_dropout_probs(predict_fn: Callable[[], torch.Tensor], T: int, seed: int) -> np.ndarray:
    """Run ``predict_fn`` ``T`` times and stack the probabilities: ``[T, N, C]``.

    Call it inside :func:`mc_dropout` so the passes differ. The global torch RNG state is
    forked, seeded with ``seed`` and restored afterwards, so results are reproducible and
    the caller's random stream is untouched.

    Parameters
    ----------
    predict_fn : callable() -> torch.Tensor [N, C]
        Class probabilities of one stochastic pass.
    T : int
        Number of passes (>= 1).
    seed : int

    Returns
    -------
    float32 numpy array [T, N, C]
    """
    if int(T) < 1:
        raise ConfigError(f"MC dropout needs T >= 1 passes, got {T}")
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    outs = []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(int(seed))
        for _ in range(int(T)):
            p = predict_fn()
            if not isinstance(p, torch.Tensor) or p.ndim != 2:
                raise ConfigError(f"predict_fn must return a torch tensor [N, C], got {type(p).__name__} "
                                  f"{getattr(p, 'shape', '')}")
            outs.append(p.detach().to("cpu", torch.float32))
    return torch.stack(outs).numpy()  # T x [N, C] -> [T, N, C]
