"""Parametric noise injection on weights (Rakin et al., 2019), our own implementation.

Each wrapped convolution or linear layer computes with ``W + alpha · N(0, std(W)²)``
(a fresh noise sample per forward pass; ``std(W)`` is the layer's weight
standard deviation, taken as a constant) where ``alpha`` is learned, one per
layer or one per output channel. The noise stays on at evaluation: the model
is stochastic. The weight is wrapped with ``torch.nn.utils.parametrize``, so
any ``nn.Conv2d``/``nn.Linear`` subclass keeps its own forward; the state dict
then holds ``parametrizations.weight.original`` and ``...weight.0.alpha``.

``alpha`` must not be weight-decayed (decay would drive it, and the defense,
to zero): :class:`WeightNoise` lists it in ``_no_weight_decay``, which the
training engine reads to put it in a parameter group without decay.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class WeightNoise(nn.Module):
    """The parametrization ``W -> W + alpha · std(W) · N(0, 1)``."""

    _no_weight_decay = ("alpha",)

    def __init__(self, weight: torch.Tensor, init: float = 0.25, per_channel: bool = False):
        super().__init__()
        shape = (weight.shape[0],) + (1,) * (weight.dim() - 1) if per_channel else ()
        self.alpha = nn.Parameter(torch.full(shape, float(init), dtype=weight.dtype, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        std = weight.detach().std()
        return weight + self.alpha * std * torch.randn_like(weight)


def inject(backbone: nn.Module, init: float = 0.25, per_channel: bool = False) -> int:
    """Parametrize the weight of every ``nn.Conv2d`` and ``nn.Linear``; return how many."""
    layers = [m for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not parametrize.is_parametrized(m, "weight")]
    for m in layers:
        parametrize.register_parametrization(m, "weight", WeightNoise(m.weight, init, per_channel))
    return len(layers)
