"""Visual-dependence token re-weighting (002 ch. 5, METHODS H): noise, d(y_t), weights, losses.

Pure functions over tensors; the captioner that produces the probabilities lives in
:mod:`mmal.models.captioner`, the orchestration (when to start, which features) in
:mod:`mmal.loop.captioning`.

- :func:`vcd_schedule`, :func:`q_sample`: the forward diffusion process that makes the
  noisy image ``v*`` (VCD's reference schedule, closed form ``q(x_t | x_0)``).
- :func:`visual_dependence`: eq. 5.1; :func:`dependence_groups`: the three token groups.
- :func:`token_weights`: eq. 5.3 / 5.4 / 5.5 with the EOS floor.
- :func:`caption_nll`, :func:`selective_eos_nll`: the MLE / re-weighted loss (eq. 5.5) and
  the selective-EOS-supervision baseline.

References
----------
002 ch. 5 (thesis, "Hallucination Reduction in LVLMs via Emphasizing Image-negative
Tokens"); Leng et al., "Mitigating Object Hallucinations in LVLMs through Visual
Contrastive Decoding" (VCD, CVPR 2024) for the noise schedule; Yue et al., "Less is More:
Mitigating Multimodal Hallucination from an EOS Decision Perspective" (ACL 2024) for EOS.
"""

from __future__ import annotations

import torch

from mmal.errors import ConfigError

NUM_STEPS = 1000
BETA_MIN, BETA_MAX = 1e-5, 5e-3
WEIGHT_KINDS = ("w-neg", "w-pos")
EOS_FLOOR_MODES = ("renormalise", "clip")


def vcd_schedule(num_steps: int = NUM_STEPS, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> dict:
    """VCD's reference noise schedule (METHODS H).

    ``beta = sigmoid(linspace(-6, 6, num_steps)) * (beta_max - beta_min) + beta_min``,
    ``alpha_bar = cumprod(1 - beta)``, computed in float64. Step ``t`` is 0-based
    (``t = 999`` is the last of 1000), as in VCD's code.

    Returns ``{"beta": [S], "alpha_bar": [S]}`` float64 tensors.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps = {num_steps}: expected >= 1")
    beta = torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=torch.float64)) * (beta_max - beta_min) + beta_min
    return {"beta": beta, "alpha_bar": torch.cumprod(1.0 - beta, 0)}


def q_moments(t: int, schedule: dict | None = None) -> tuple[float, float]:
    """``(sqrt(alpha_bar_t), 1 - alpha_bar_t)``: the mean scale and the variance of ``q(x_t | x_0)``."""
    ab = (schedule or vcd_schedule())["alpha_bar"]
    if not 0 <= int(t) < len(ab):
        raise ConfigError(f"noise step t = {t}: expected 0 <= t < {len(ab)}")
    a = float(ab[int(t)])
    return a ** 0.5, 1.0 - a


def q_sample(x0: torch.Tensor, t: int, noise: torch.Tensor | None = None, *, schedule: dict | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Forward diffusion in closed form: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (METHODS H).

    ``x0`` is the normalised image (any shape; mmal's image tower uses ``[-1, 1]`` pixels
    ``[3, S, S]``); ``eps ~ N(0, I)`` is ``noise`` when given (same shape), else drawn from
    ``generator``. So ``E[x_t] = sqrt(abar_t) x0`` and ``Var[x_t] = 1 - abar_t``. The result
    is not clipped (VCD does not clip either).
    """
    mean_scale, var = q_moments(t, schedule)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ConfigError(f"noise has shape {tuple(noise.shape)}, expected {tuple(x0.shape)} like x0")
    return mean_scale * x0 + var ** 0.5 * noise


def visual_dependence(p_clean: torch.Tensor, p_noisy: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 5.1: ``d(y_t) = (p(y_t|y<t, v) - p(y_t|y<t, v*)) / max(p(y_t|y<t, v), p(y_t|y<t, v*))``.

    ``p_clean``, ``p_noisy``: probabilities of the target tokens (teacher forcing) with the
    clean image ``v`` and the noised image ``v*``, same shape (e.g. ``[B, L]``). Returns
    ``d`` in ``[-1, 1]``, same shape. Choice where the thesis is silent: the denominator is
    floored at ``eps`` so two zero probabilities give ``d = 0``.
    """
    if p_clean.shape != p_noisy.shape:
        raise ConfigError(f"p_clean {tuple(p_clean.shape)} and p_noisy {tuple(p_noisy.shape)} must have the same shape")
    return (p_clean - p_noisy) / torch.clamp(torch.maximum(p_clean, p_noisy), min=eps)


def dependence_groups(d: torch.Tensor, positive: float = 0.25, negative: float = -0.25) -> torch.Tensor:
    """Token groups of 002 §5.2.1: ``+1`` image-positive (``d >= positive``), ``-1`` image-negative
    (``d <= negative``), ``0`` image-invariant; int64, same shape as ``d``."""
    if not negative < positive:
        raise ConfigError(f"thresholds: negative = {negative} must be < positive = {positive}")
    return (d >= positive).long() - (d <= negative).long()


def token_weights(d: torch.Tensor, mask: torch.Tensor, eos_mask: torch.Tensor, *, kind: str = "w-neg",
                  tau: float = 0.5, eos_floor: float = 1.0, eos_floor_mode: str = "renormalise") -> torch.Tensor:
    """Per-token loss weights of eq. 5.3-5.5: ``T * softmax(tau * w(y_t))`` over each sequence.

    Parameters
    ----------
    d : ``[B, L]`` visual dependence (eq. 5.1) of the target tokens.
    mask : ``[B, L]`` bool, the real target tokens (answer tokens incl. EOS; not padding).
    eos_mask : ``[B, L]`` bool, the EOS target position(s).
    kind : ``"w-neg"`` (eq. 5.3: ``w = -d`` where ``d <= 0`` else 0) or ``"w-pos"`` (eq. 5.4:
        ``w = d`` where ``d > 0`` else 0).
    tau : softmax temperature (thesis default 0.5; ``tau = 0`` gives all weights 1).
    eos_floor : the EOS weight is never below this (thesis: 1).
    eos_floor_mode : where the thesis is silent on how the floor meets eq. 5.5's sum:
        ``"renormalise"`` (default) raises EOS to the floor and scales the other tokens of
        the sequence so the weights still sum to T (a sequence whose only token is EOS
        keeps weight T); ``"clip"`` only raises EOS (the sum may exceed T).

    Returns
    -------
    ``[B, L]`` float weights, 0 on padding; per sequence they sum to T = ``mask.sum(1)``.
    """
    if kind not in WEIGHT_KINDS:
        raise ConfigError(f"kind = {kind!r}: expected one of {WEIGHT_KINDS}")
    if eos_floor_mode not in EOS_FLOOR_MODES:
        raise ConfigError(f"eos_floor_mode = {eos_floor_mode!r}: expected one of {EOS_FLOOR_MODES}")
    if d.shape != mask.shape or d.shape != eos_mask.shape:
        raise ConfigError(f"d {tuple(d.shape)}, mask {tuple(mask.shape)}, eos_mask {tuple(eos_mask.shape)}: "
                          "expected the same [B, L]")
    mask = mask.bool()
    eos_mask = eos_mask.bool() & mask
    w = torch.clamp(-d, min=0.0) if kind == "w-neg" else torch.clamp(d, min=0.0)  # eq. 5.3 / 5.4
    logits = (tau * w).masked_fill(~mask, float("-inf"))
    T = mask.sum(1, keepdim=True).to(d.dtype)  # [B, 1]
    weights = T * torch.softmax(logits, dim=1)  # eq. 5.5, [B, L]
    weights = torch.nan_to_num(weights, nan=0.0)  # an all-padding row
    low = eos_mask & (weights < eos_floor)
    if not low.any():
        return weights
    raised = torch.where(low, torch.full_like(weights, eos_floor), weights)
    if eos_floor_mode == "clip":
        return raised
    other = mask & ~eos_mask
    need = T - (raised * eos_mask).sum(1, keepdim=True)  # what the non-EOS tokens must sum to
    have = (weights * other).sum(1, keepdim=True)
    scale = torch.where(have > 0, torch.clamp(need, min=0.0) / torch.clamp(have, min=1e-12), torch.zeros_like(have))
    out = torch.where(other, weights * scale, raised)
    only_eos = other.sum(1, keepdim=True) == 0  # no other token to take the mass from
    return torch.where(only_eos & eos_mask, weights.clamp(min=eos_floor), out)


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p(y_t | y<t, v)`` ``[B, L]`` from logits ``[B, L, V]`` and targets ``[B, L]``."""
    return torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def caption_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5.5's loss: ``mean_b (1/T_b) sum_t weight_t * (-log p(y_t|y<t, v))``.

    ``weights = None`` is plain MLE (all weights 1). Shapes: logits ``[B, L, V]``, targets and
    mask ``[B, L]``. Sequences are averaged (each sequence counts once, as eq. 5.5 is per
    sequence).
    """
    nll = -target_logprobs(logits, targets) * mask  # [B, L]
    if weights is not None:
        nll = nll * weights
    T = mask.sum(1).clamp(min=1)
    return (nll.sum(1) / T).mean()


def selective_eos_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Selective EOS supervision (Yue et al. 2024; 002 §5.4.2 baseline "EOS").

    At every target position whose token is not EOS the EOS logit is removed from the
    softmax, so the model is never pushed away from ending the caption; at EOS positions
    the ordinary cross-entropy applies. Averaged per sequence as :func:`caption_nll`.
    """
    not_eos = (targets != eos_id).unsqueeze(-1)  # [B, L, 1]
    drop = torch.zeros_like(logits, dtype=torch.bool)
    drop[..., eos_id] = True
    adj = logits.masked_fill(drop & not_eos, float("-inf"))
    return caption_nll(adj, targets, mask)


__all__ = ["vcd_schedule", "q_moments", "q_sample", "visual_dependence", "dependence_groups", "token_weights",
           "target_logprobs", "caption_nll", "selective_eos_nll", "WEIGHT_KINDS", "EOS_FLOOR_MODES"]
