"""The counting wrapper around the model an attack sees (see :mod:`advkit._internal.passes`).

advkit's own code: no library counts the passes an attack spends.
"""

from __future__ import annotations

import torch
from torch import nn

from advkit._internal.passes import Passes


class PassCounter(nn.Module):
    """The model, with its forward and backward passes counted (per image). Everything else is the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.count = Passes()
        self.last_batch = 0  # images in the latest forward: how many points an attack still works on
        self.listeners: list = []

    def forward(self, x, *args, **kwargs):
        out = self.model(x, *args, **kwargs)
        n = int(x.shape[0]) if torch.is_tensor(x) and x.dim() else 1
        self.count.forward += n
        self.count.forward_calls += 1
        self.last_batch = n
        if torch.is_tensor(out) and out.requires_grad and torch.is_grad_enabled():
            out.register_hook(lambda grad, n=n: self._backward(n, grad))
        self._tell()
        return out

    def _backward(self, n: int, grad):
        self.count.backward += n
        self.count.backward_calls += 1
        self._tell()
        return grad

    def _tell(self) -> None:
        for fn in self.listeners:
            fn(self)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)  # num_classes, input_shape, ... of the model


def find_counter(model) -> PassCounter | None:
    """The :class:`PassCounter` inside ``model`` (the outermost one), if any."""
    if isinstance(model, PassCounter):
        return model
    for m in model.modules() if isinstance(model, nn.Module) else ():
        if isinstance(m, PassCounter):
            return m
    return None


def counted(model) -> tuple[nn.Module, PassCounter]:
    """``model`` with a counter: as it is when it holds one already, else wrapped in a new one."""
    found = find_counter(model)
    if found is not None:
        return model, found
    wrapped = PassCounter(model)
    return wrapped, wrapped
