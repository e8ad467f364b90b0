"""Checking the arguments of an evaluation, once, before anything runs.

Every argument of :func:`advkit.evaluate` is checked here (the command line
passes its values through unchanged), so a bad value gives one
:class:`~advkit._internal.errors.UserError` line and every change advkit makes to what
was asked (a dtype converted, fewer points than ``n``) is said once, as a
warning, and recorded in the report's ``notes``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from advkit._internal.data import check_labels
from advkit._internal.errors import UserError
from advkit._internal.evaluation.probes import writes_input
from advkit._internal.plugins import registry
from advkit._internal.threat import ThreatModel, parse_eps, parse_norm


@dataclass
class Inputs:
    """The checked evaluation data and settings."""

    x: torch.Tensor
    y: torch.Tensor
    threat: ThreatModel
    attacks: list[str]
    attack_opts: dict[str, dict]
    data_meta: dict
    notes: list[str] = field(default_factory=list)  # what advkit changed, said as warnings too


def say(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, stacklevel=3)


def option_names(attacks, audit: bool) -> set[str]:
    """Attack names ``attack_opts`` may address: the attacks, their adaptive counterparts, the audit's references."""
    reg = registry("attack")
    names = set()
    for a in attacks:
        entry = reg.get(a)
        names |= {a.lower(), entry.name, *entry.aliases}
        if entry.can("adaptive"):
            names.add(str(entry.can("adaptive")).lower())
    if audit:
        for role in ("white-box", "black-box", "margin"):
            names |= {n for e in reg.with_capability("reference", role) for n in (e.name, *e.aliases)}
    return names


def _positive(name: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    if value <= 0:
        raise UserError(f"{name} must be positive, got {value!r}")


def _tensors(data, n, notes) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(x, y, meta)`` of the first ``n`` points of an ImageData or an ``(x, y)`` pair."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        try:
            x, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])  # tensors, numpy arrays or lists
        except (TypeError, ValueError, RuntimeError) as exc:
            raise UserError(f"evaluation data: an (images, labels) pair of tensors or arrays, got "
                            f"({type(data[0]).__name__}, {type(data[1]).__name__}): {exc}") from None
        if x.dim() != 4 or y.dim() != 1 or y.is_floating_point():
            raise UserError(f"evaluation data: images must be (N, C, H, W) and labels (N,) integers, got "
                            f"{tuple(x.shape)} and {y.dtype} {tuple(y.shape)}")
        if len(x) != len(y):
            raise UserError(f"evaluation data: {len(x)} images but {len(y)} labels")
        meta = {"name": "tensors", "default_eps": "8/255"}
    elif not hasattr(data, "tensors"):
        raise UserError(f"evaluation data: a dataset name, an advkit.ImageData or an (images, labels) pair, "
                        f"got {type(data).__name__}")
    else:
        info = getattr(data, "info", None)
        meta = {"name": getattr(info, "name", ""), "split": getattr(info, "split", ""),
                "default_eps": getattr(info, "default_eps", "8/255"), "source": getattr(info, "source", ""),
                "classes": getattr(info, "classes", [])}
        total = len(data)
        data = data.first(n) if (n and hasattr(data, "first")) else data
        x, y = data.tensors()
        if n and n > total:
            say(notes, f"-n {n} asks for more points than the data holds: evaluating all {total}")
        n = None
    if n and n > len(x):
        say(notes, f"-n {n} asks for more points than the data holds: evaluating all {len(x)}")
    x, y = (x[:n], y[:n]) if n else (x, y)
    if not len(x):
        raise UserError("evaluation data holds no image")
    return x, y, meta


def check_images(x: torch.Tensor, bounds) -> None:
    """Finite float images inside ``bounds``."""
    from advkit._internal.data import check_images as inside

    if not torch.is_tensor(x) or not x.is_floating_point():
        raise UserError("evaluation data: expected a float tensor of images in [0, 1]")
    bad = (~torch.isfinite(x.reshape(len(x), -1)).all(1)).nonzero().flatten().tolist()
    if bad:
        raise UserError(f"evaluation data: {len(bad)} image(s) hold NaN or inf pixels (points {_few(bad)})")
    inside(x, bounds, where="evaluation data")


def _few(idx: list[int], k: int = 5) -> str:
    return ", ".join(map(str, idx[:k])) + (f" and {len(idx) - k} more" if len(idx) > k else "")


def model_dtype(model: nn.Module, notes: list[str]) -> nn.Module:
    """Evaluation runs in float32: a model in another float dtype is converted, and that is said."""
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        say(notes, f"the model's parameters are {'/'.join(dtypes)}; converted to float32 for evaluation")
        model = model.float()
    return model


def num_classes(model: nn.Module, x: torch.Tensor, device, who: str = "the model") -> int:
    """The model's number of classes, checked on one forward pass over two points (a copy): the output must
    be float logits of shape (2, K), K the declared class count when there is one."""
    probe = x[: min(len(x), 2)].to(device, copy=True)
    with torch.inference_mode():
        try:
            out = model(probe)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise UserError(f"{who} raised on a batch of {len(probe)} image(s) of shape {tuple(probe.shape[1:])}: "
                            f"{type(exc).__name__}: {first}") from None
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != len(probe) or not out.is_floating_point():
        got = (f"{str(out.dtype).replace('torch.', '')} of shape {tuple(out.shape)}" if torch.is_tensor(out)
               else type(out).__name__)
        raise UserError(f"{who} returned {got} for {len(probe)} images: a model returns float logits of shape "
                        f"(N, classes), one row per image (a wrapper returning a tuple or probabilities needs an "
                        f"nn.Module that returns the logits)")
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and declared > 0 and declared != out.shape[1]:
        raise UserError(f"{who} declares {declared} classes but returns {out.shape[1]} logits")
    return int(out.shape[1])


def model_label(model: nn.Module, meta: dict | None) -> str:
    """``model 'smallcnn-fmnist'``: the name the user gave, else the architecture or the class."""
    name = (meta or {}).get("model") or getattr(model, "arch", None) or type(model).__name__
    return f"model {str(name)!r}"


def validate(model, data, attacks, *, eps, norm, attack_opts, n, batch_size, eot, audit, device,
             who: str = "the model", draws=None) -> tuple[nn.Module, Inputs]:
    """Check every argument once; return the model ready to evaluate (eval mode, float32, on ``device``)."""
    _positive("-n", n)
    _positive("--batch-size", batch_size)
    _positive("--eot", eot)
    _positive("--draws", draws)
    notes: list[str] = []
    attacks = [a for a in attacks if a]
    for a in attacks:
        registry("attack").get(a)  # unknown names: one line with the closest ones
    attack_opts = {k.lower(): dict(v) for k, v in (attack_opts or {}).items()}
    unused = [k for k in attack_opts if k not in option_names(attacks, audit)]
    if unused:
        raise UserError(f"--attack-opt names {unused[0]!r}, which is not among --attacks {','.join(attacks)}")
    x, y, meta = _tensors(data, n, notes)
    if x.dtype != torch.float32 and x.is_floating_point():
        say(notes, f"the images are {str(x.dtype).replace('torch.', '')}; converted to float32")
        x = x.float()
    y = torch.as_tensor(y)
    norm = parse_norm(norm)
    threat = ThreatModel(norm, parse_eps(eps if eps is not None else meta.get("default_eps", "8/255"), norm))
    if model.training:
        say(notes, "the model was in training mode; switched to eval mode for evaluation")
    model = model_dtype(model.to(device).eval(), notes)
    check_images(x, threat.bounds)
    writes_input(model, x[: min(len(x), 8)].to(device, copy=True), who)
    y = check_labels(y, num_classes(model, x, device, who), count=len(x), where="evaluation data")
    return model, Inputs(x.contiguous(), y, threat, attacks, attack_opts, meta, notes)
