"""Relevance heads over the fusion ``[CLS]`` vector: ``hsoftmax``, ``bce``, ``mse``, ``ordinal``.

Labels are the four ordered levels 0 bad, 1 less, 2 good, 3 excellent (003 §3.3).

- ``hsoftmax`` — two-layer symmetric hierarchical softmax (003 eq. 7-9; METHODS.md G):
  three sigmoids ``p_pos, p_le, p_ex`` of three logits, ``p0 = (1-p_pos)(1-p_le)``,
  ``p1 = (1-p_pos) p_le``, ``p2 = p_pos (1-p_ex)``, ``p3 = p_pos p_ex``; score
  ``r = p1 + 2 p2 + 3 p3``. Loss (eq. 10 with the sign fixed, METHODS.md G)::

      L = mean(-log p_l) + w * mean((r - l)^2)

  ``-log p_l`` is computed along the label's path as BCE-with-logits terms (``softplus``),
  never as ``log`` of a product of probabilities, so it stays finite for any logits.
- ``bce`` — the paper's previous objective: one logit, BCE on {0,1} -> 0, {2,3} -> 1;
  score = sigmoid.
- ``mse`` — one output regressed on the level, ``(s - l)^2``; score = s.
- ``ordinal`` — cumulative-link (proportional odds) ordinal regression:
  ``P(y <= k) = sigmoid(theta_k - s)`` with ordered thresholds
  ``theta_1 < theta_2 < theta_3`` (``theta_1`` free, then ``+ softplus`` increments);
  ``-log p_l`` uses ``log(sigmoid(b) - sigmoid(a)) = logsig(b) + logsig(-a) + log(1 - e^{a-b})``;
  score = expected level ``sum_k k p_k``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmal.errors import ConfigError

HEADS = ("hsoftmax", "bce", "mse", "ordinal")
LEVEL_VALUES = (0.0, 1.0, 2.0, 3.0)


# ---- hierarchical softmax (eq. 7-10) ---------------------------------------------------------
def hsoftmax_probs(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 7-8: logits ``[B, 3]`` (pos, le, ex) -> level probabilities ``[B, 4]``."""
    p_pos, p_le, p_ex = torch.sigmoid(logits).unbind(-1)
    return torch.stack([(1 - p_pos) * (1 - p_le), (1 - p_pos) * p_le, p_pos * (1 - p_ex), p_pos * p_ex], -1)


def expected_level(probs: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``r = p1 + 2 p2 + 3 p3`` for level probabilities ``[B, 4]`` -> ``[B]``."""
    return probs @ torch.tensor(LEVEL_VALUES, dtype=probs.dtype, device=probs.device)


def hsoftmax_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-log p_l`` per row ``[B]``, as BCE-with-logits along the label's path (stable).

    ``l in {0,1}``: ``BCE(z_pos, 0) + BCE(z_le, l == 1)``; ``l in {2,3}``:
    ``BCE(z_pos, 1) + BCE(z_ex, l == 3)``; ``BCE(z, t) = softplus(z) - t z``.
    """
    y = labels.long()
    z_pos, z_le, z_ex = logits.unbind(-1)
    pos = (y >= 2).to(logits.dtype)
    nll_pos = F.binary_cross_entropy_with_logits(z_pos, pos, reduction="none")
    nll_le = F.binary_cross_entropy_with_logits(z_le, (y == 1).to(logits.dtype), reduction="none")
    nll_ex = F.binary_cross_entropy_with_logits(z_ex, (y == 3).to(logits.dtype), reduction="none")
    return nll_pos + (1 - pos) * nll_le + pos * nll_ex


def hsoftmax_loss(logits: torch.Tensor, labels: torch.Tensor, w: float = 1.0) -> torch.Tensor:
    """Eq. 10 with the sign fixed: ``mean(-log p_l) + w * mean((r - l)^2)`` (METHODS.md G)."""
    r = expected_level(hsoftmax_probs(logits))
    return hsoftmax_nll(logits, labels).mean() + float(w) * ((r - labels.to(r.dtype)) ** 2).mean()


# ---- cumulative-link ordinal regression -----------------------------------------------------
def ordered_thresholds(raw: torch.Tensor) -> torch.Tensor:
    """Raw ``[3]`` -> increasing thresholds ``theta_1 = raw_0``, ``theta_k = theta_{k-1} + softplus(raw_k)``."""
    return torch.cat([raw[:1], raw[:1] + torch.cumsum(F.softplus(raw[1:]), 0)])


def ordinal_probs(s: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``P(y <= k) = sigmoid(theta_k - s)`` -> level probabilities ``[B, 4]`` (s ``[B]``)."""
    cdf = torch.sigmoid(theta[None, :] - s[:, None])  # [B, 3]
    ones, zeros = torch.ones_like(s[:, None]), torch.zeros_like(s[:, None])
    cdf = torch.cat([zeros, cdf, ones], 1)  # [B, 5]
    return cdf[:, 1:] - cdf[:, :-1]


def ordinal_nll(s: torch.Tensor, theta: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-log P(y = l)`` per row, stable: ``P = sigmoid(b - s) - sigmoid(a - s)``, a < b."""
    y = labels.long()
    big = torch.tensor(1e4, dtype=s.dtype, device=s.device)
    edges = torch.cat([-big[None], theta, big[None]])  # [5]
    a = edges[y] - s  # lower edge
    b = edges[y + 1] - s  # upper edge
    log_p = F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1((a - b).clamp(max=-1e-6)))
    return -log_p


class RelevanceHead(nn.Module):
    """A named relevance head on a ``dim``-wide joint vector (see module docstring).

    Parameters
    ----------
    kind : one of :data:`HEADS`.
    dim : input width.
    w : weight of the ``(r - l)^2`` term of ``hsoftmax`` (default 1, METHODS.md G).
    prior_scale : ``None`` (default), or the starting weight ``a`` of a per-pair prior score
        ``s`` (the untrained cosine): the output becomes ``linear(z) + a·s`` on every logit,
        with ``linear`` zero-initialised, so before any training the head is a monotone
        function of ``s`` and ranks the pairs exactly as ``s`` does; training learns the
        residual and ``a``.
    """

    def __init__(self, kind: str, dim: int, w: float = 1.0, prior_scale: float | None = None):
        super().__init__()
        if kind not in HEADS:
            raise ConfigError(f"unknown relevance head {kind!r}; expected one of {', '.join(HEADS)}")
        self.kind, self.w = kind, float(w)
        self.linear = nn.Linear(dim, 3 if kind == "hsoftmax" else 1)
        if kind == "ordinal":
            self.raw_theta = nn.Parameter(torch.tensor([-1.0, 0.0, 0.0]))
        self.prior_scale = None
        if prior_scale is not None:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
            self.prior_scale = nn.Parameter(torch.tensor(float(prior_scale)))

    def forward(self, z: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, dim]`` (and the prior ``[B]`` when the head has one) -> head output
        (``[B, 3]`` logits for hsoftmax, else ``[B]``)."""
        out = self.linear(z)
        if self.prior_scale is not None:
            if prior is None:
                raise ConfigError("this relevance head starts from a prior score: pass prior=[B]")
            out = out + self.prior_scale * prior.to(out.dtype)[:, None]
        return out if self.kind == "hsoftmax" else out[:, 0]

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = labels.to(out.dtype)
        if self.kind == "hsoftmax":
            return hsoftmax_loss(out, labels, self.w)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(out, (labels >= 2).to(out.dtype))
        if self.kind == "mse":
            return F.mse_loss(out, y)
        return ordinal_nll(out, ordered_thresholds(self.raw_theta), labels).mean()

    def probs(self, out: torch.Tensor) -> torch.Tensor | None:
        """Level distribution ``[B, 4]`` (hsoftmax, ordinal); None for bce / mse."""
        if self.kind == "hsoftmax":
            return hsoftmax_probs(out)
        if self.kind == "ordinal":
            return ordinal_probs(out, ordered_thresholds(self.raw_theta))
        return None

    def score(self, out: torch.Tensor) -> torch.Tensor:
        """Relevance score ``[B]``: eq. 9 (hsoftmax, ordinal), sigmoid (bce), raw (mse)."""
        p = self.probs(out)
        if p is not None:
            return expected_level(p)
        return torch.sigmoid(out) if self.kind == "bce" else out
