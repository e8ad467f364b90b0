"""Swap every ReLU-family activation module of a backbone for an :class:`~advkit_lwta.block.LWTA` block.

Activation *modules* are replaced (torch's ReLU, ReLU6, LeakyReLU, PReLU, ELU,
SELU, CELU, GELU, SiLU, Mish, Hardswish and timm's activation layers, also
inside timm's norm-act layers); activations called as functions inside a
``forward`` are out of reach. Gates (sigmoid, tanh) are kept.

:func:`functional_activations` finds what the swap cannot reach, by reading
the code rather than by running it: a submodule whose class's ``forward``
source calls a ReLU-family function (``F.relu(x)``, ``torch.relu(x)``,
``x.relu()``, ...), or that holds such a function as an attribute (as
``nn.TransformerEncoderLayer(activation=F.relu)`` does). Reading the source
finds calls in every branch, also those a probe input would not take.
"""

from __future__ import annotations

import inspect
import re
import textwrap

import torch.nn.functional as F
from torch import nn

from advkit.plugin import UserError

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


_NAMES = ("relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "prelu", "elu", "elu_", "selu", "selu_", "celu",
          "celu_", "gelu", "silu", "mish", "hardswish", "hardswish_")
# F.relu(x), torch.relu(x), x.relu(); not self.relu(x), a call of the module attribute ``relu``
_CALL = re.compile(r"(?:\b(?:F|functional|torch|nn\.functional)\.|(?<!\bself)\.)(" + "|".join(_NAMES) + r")\s*\(")
_FUNCTIONS = tuple(getattr(F, n) for n in _NAMES if hasattr(F, n))


def _calls_in_forward(cls: type) -> list[str]:
    """The ReLU-family functions ``cls.forward`` calls, read from its source (empty when it has none)."""
    try:
        src = textwrap.dedent(inspect.getsource(cls.forward))
    except (OSError, TypeError):  # built in or defined without source: nothing to read
        return []
    code = "\n".join(line.split("#", 1)[0] for line in src.splitlines())
    return sorted(set(_CALL.findall(code)))


def functional_activations(backbone: nn.Module) -> list[str]:
    """``"name (Class.forward calls F.relu)"`` for each submodule using an activation the swap cannot reach."""
    types = activation_types()
    found = []
    for name, m in backbone.named_modules():
        if isinstance(m, types):
            continue
        calls = _calls_in_forward(type(m))
        held = sorted(k for k, v in vars(m).items() if any(v is f for f in _FUNCTIONS))
        if calls or held:
            what = [f"{type(m).__name__}.forward calls {', '.join(calls)}"] if calls else []
            what += [f"holds {k} = a functional activation" for k in held]
            found.append(f"{name or 'the backbone'} ({'; '.join(what)})")
    return found


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
