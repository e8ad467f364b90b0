"""Swap every ReLU-family activation module of a backbone for an :class:`~advkit_lwta.block.LWTA` block.

Activation *modules* are replaced (torch's ReLU, ReLU6, LeakyReLU, PReLU, ELU,
SELU, CELU, GELU, SiLU, Mish, Hardswish and timm's activation layers, also
inside timm's norm-act layers); activations called as functions inside a
``forward`` are out of reach. Gates (sigmoid, tanh) are kept.
"""

from __future__ import annotations

from torch import nn

from advkit.errors import UserError
from advkit_lwta.block import LWTA

_TORCH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish)
_TIMM = ("Swish", "Mish", "HardSwish", "HardMish", "PReLU", "GELU", "GELUTanh", "QuickGELU",
         "SwishMe", "MishMe", "HardSwishMe", "HardMishMe")


def activation_types() -> tuple[type, ...]:
    types = list(_TORCH)
    try:
        from timm.layers import activations, activations_me
    except ImportError:
        return tuple(types)
    for mod in (activations, activations_me):
        types += [getattr(mod, n) for n in _TIMM if isinstance(getattr(mod, n, None), type)]
    return tuple(types)


def replace_activations(backbone: nn.Module, make) -> int:
    """Replace activation modules in place with ``make(qualified_name)``; return how many."""
    types = activation_types()
    targets = [(name, m) for name, m in backbone.named_modules() if name and isinstance(m, types)]
    for name, _ in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, attr, make(name))
    if isinstance(backbone, types):
        raise UserError("lwta: the backbone itself is an activation; there is nothing to replace it in")
    return len(targets)
