"""Optimizer and learning-rate schedule of the training engine.

Parameters that must not be weight-decayed are named by their modules in a
``_no_weight_decay`` tuple (noise-injection scales) or by a backbone's timm
style ``no_weight_decay()``; they go into a parameter group without decay.
"""

from __future__ import annotations

import contextlib
import difflib
import math

import torch
from torch import nn

from advkit._internal.errors import UserError

SCHEDULES = ("multistep", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam")


def lr_at(base: float, schedule: str, epoch: int, epochs: int) -> float:
    """Learning rate of (0-based) ``epoch``: multistep (x0.1 at 50% and 75% of epochs), cosine or constant."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "multistep":
        milestones = {m for m in (int(epochs * 0.5), int(epochs * 0.75)) if m > 0}
        return base * 0.1 ** sum(epoch >= m for m in milestones)
    raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def no_decay_parameters(model: nn.Module) -> set[int]:
    """Ids of parameters exempt from weight decay (``_no_weight_decay`` / timm's ``no_weight_decay()``)."""
    ids = set()
    for module in model.modules():
        for name in getattr(module, "_no_weight_decay", ()) or ():
            p = getattr(module, name, None)
            if isinstance(p, nn.Parameter):
                ids.add(id(p))
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            try:
                names = fn()
            except TypeError:
                names = ()
            for name in names or ():
                with contextlib.suppress(AttributeError):
                    ids.add(id(module.get_parameter(name)))
    return ids


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float):
    """SGD (momentum, weight decay) or Adam, with a no-decay group when some parameters ask for it."""
    skip = no_decay_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in skip], "weight_decay": weight_decay}]
    if any(id(p) in skip for p in params):
        groups.append({"params": [p for p in params if id(p) in skip], "weight_decay": 0.0})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    raise UserError(f"optimizer must be sgd or adam, got {name!r}")


def whole(value, option: str, lo: int = 1) -> int:
    """A whole number >= ``lo`` (``True`` and ``1.7`` are refused, not read as 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UserError(f"--{option} must be a whole number >= {lo}, got {value!r}")
    return value


def real(value, option: str) -> float:
    """A number (not a flag, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UserError(f"--{option} must be a number, got {value!r}")
    return float(value)


def check_settings(epochs, batch_size, lr, schedule, optimizer, momentum, weight_decay) -> None:
    """The engine's one check of the optimisation arguments (the CLI does not repeat it)."""
    whole(epochs, "epochs")
    whole(batch_size, "batch-size")
    if not real(lr, "lr") > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    if not (0 <= real(momentum, "momentum") < 1):
        raise UserError(f"--momentum must lie in [0, 1), got {momentum}")
    if not real(weight_decay, "weight-decay") >= 0:
        raise UserError(f"--weight-decay must be >= 0, got {weight_decay}")
    for option, value, allowed in (("schedule", schedule, SCHEDULES), ("optimizer", optimizer, OPTIMIZERS)):
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"--{option} must be one of {', '.join(allowed)}, got {value!r}{hint}")
