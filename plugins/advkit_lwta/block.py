"""The stochastic local winner-takes-all block (Panousis et al., 2021), our own implementation.

Units are grouped in blocks of ``U`` consecutive channels (feature maps of a
4-D input, at each spatial location; units of a 2-D input). In each block one
winner is sampled from the softmax of the units' values (Gumbel-max), the
winner's value passes and the losers output 0. Gradients flow through the
Gumbel-softmax relaxation at temperature 0.67 in training and 0.01 at test
(straight-through: the forward pass is the hard one-hot, the backward pass
that of the relaxed sample). ``hard=False`` uses the relaxed sample itself in
training, as in the original paper. ``deterministic=True`` takes the argmax
winner (no sampling): the surrogate an adaptive attack differentiates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advkit.plugin import UserError


class LWTA(nn.Module):
    """Stochastic LWTA activation: one sampled winner per block of ``U`` units."""

    def __init__(self, U: int = 2, temperature: float = 0.67, test_temperature: float = 0.01,
                 deterministic: bool = False, hard: bool = True, pad: bool = False, where: str = ""):
        super().__init__()
        self.U = int(U)
        self.temperature = float(temperature)
        self.test_temperature = float(test_temperature)
        self.deterministic = bool(deterministic)
        self.hard = bool(hard)
        self.pad = bool(pad)
        self.where = where

    def extra_repr(self) -> str:
        return f"U={self.U}, temperature={self.temperature}, test_temperature={self.test_temperature}, deterministic={self.deterministic}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise UserError(f"lwta at {self.where or 'a layer'}: needs inputs with a channel dimension, got shape {tuple(x.shape)}")
        c = x.shape[1]
        extra = (-c) % self.U
        if extra:
            if not self.pad:
                raise UserError(
                    f"lwta at {self.where or 'a layer'}: {c} channels do not split into blocks of U={self.U}; "
                    f"choose U dividing {c} or pass lwta:pad=true"
                )
            x = torch.cat([x, x.new_zeros((x.shape[0], extra, *x.shape[2:]))], dim=1)
        out = self._compete(x)
        return out[:, :c] if extra else out

    def _compete(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        blocks = x.reshape(n, c // self.U, self.U, -1)  # competition along dim 2, per location
        tau = self.temperature if self.training else self.test_temperature
        if self.deterministic:
            scores = blocks
        else:
            u = torch.rand_like(blocks).clamp_(min=1e-20)
            scores = blocks - torch.log(-torch.log(u))  # Gumbel perturbation: argmax ~ softmax(blocks)
        soft = F.softmax(scores / tau, dim=2)
        if self.training and not self.hard:
            xi = soft
        else:
            xi = first_max(scores) - soft.detach() + soft
        return (blocks * xi).reshape(x.shape)


def first_max(scores: torch.Tensor, dim: int = 2) -> torch.Tensor:
    """One-hot of the (first) maximum along a short dimension, by elementwise ops (fast on CPU)."""
    slices = scores.unbind(dim)
    best = slices[0]
    for s in slices[1:]:
        best = torch.maximum(best, s)
    taken = torch.zeros_like(best, dtype=torch.bool)
    hot = []
    for s in slices:
        win = (s == best) & ~taken
        taken |= win
        hot.append(win)
    return torch.stack(hot, dim).to(scores.dtype)
