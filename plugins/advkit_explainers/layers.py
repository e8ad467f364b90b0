"""Finding the layers the explainers look at: the last convolutional stage and the representation.

Both are found by running one image through the model with a forward hook on
every submodule and reading the order in which modules finish:

- the *CAM layer* is the last module, finishing after the last ``nn.Conv2d``
  with a spatial output larger than 1x1, whose output keeps that convolution's
  spatial size, stopping at the first pooling layer (``backbone.features.8``,
  the ReLU after the last convolution of ``SmallCNN``; ``backbone.layer4`` of a
  ResNet, built-in or timm);
- the *representation* R(x) is the input of the last ``nn.Linear`` to run
  (the penultimate features feeding the classifier).

Either can be named instead with a dotted module name, relative to the model
(``backbone.layer3``) or to its backbone (``layer3``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advkit.plugin import UserError, closest


@dataclass
class Call:
    """One finished forward call of a submodule."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None  # output shape (None when not a tensor)
    in_shape: tuple[int, ...] | None


def _shape(t) -> tuple[int, ...] | None:
    return tuple(t.shape) if torch.is_tensor(t) else None


def trace(model: nn.Module, x: torch.Tensor) -> list[Call]:
    """The submodules of ``model`` in the order their forward calls finish on ``x``."""
    calls: list[Call] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, args, out, name=name):
            calls.append(Call(name, mod, _shape(out), _shape(args[0]) if args else None))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def resolve(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """The submodule called ``name`` (relative to ``model`` or to ``model.backbone``)."""
    modules = dict(model.named_modules())
    for candidate in (name, f"backbone.{name}"):
        if candidate in modules and candidate:
            return candidate, modules[candidate]
    hits = closest(name, [n for n in modules if n])
    hint = f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
    raise UserError(f"the model has no layer {name!r}{hint}")


def cam_layer(model: nn.Module, x: torch.Tensor, name: str = "") -> tuple[str, nn.Module]:
    """The layer a class activation map is read from (see the module docstring)."""
    if name:
        return resolve(model, name)
    calls = trace(model, x[:1].detach())
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.name] = counts.get(c.name, 0) + 1
    convs = [i for i, c in enumerate(calls) if isinstance(c.module, nn.Conv2d)]
    if not convs:
        raise UserError(f"{type(model).__name__} has no nn.Conv2d layer: name the layer for CAM with layer=NAME")
    spread = [i for i in convs if calls[i].shape[-2] * calls[i].shape[-1] > 1]  # skip 1x1 heads after pooling
    last = (spread or convs)[-1]
    spatial = calls[last].shape[-2:]
    choice = calls[last]
    for c in calls[last + 1 :]:
        if c.shape is None or len(c.shape) != 4 or c.shape[-2:] != spatial or "pool" in type(c.module).__name__.lower():
            break
        if counts[c.name] == 1:
            choice = c
    return choice.name, choice.module


def representation_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module]:
    """The last ``nn.Linear`` to run: its input is the representation R(x)."""
    linears = [c for c in trace(model, x[:1].detach()) if isinstance(c.module, nn.Linear)]
    if not linears:
        raise UserError(
            f"{type(model).__name__} has no nn.Linear classifier: name the representation layer with layer=NAME"
        )
    return linears[-1].name, linears[-1].module


class Representation:
    """R(x): the penultimate features of a model, as an (N, k) tensor.

    With ``layer=""`` R(x) is the input of the final ``nn.Linear``; with a
    name it is that module's output, flattened. Calls keep the autograd
    graph, so R can be optimised through.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, layer: str = ""):
        self.model = model
        if layer:
            self.name, self.module = resolve(model, layer)
            self.at_input = False
        else:
            self.name, self.module = representation_layer(model, x)
            self.at_input = True
        self._probe = x[:1].detach()

    @property
    def description(self) -> str:
        return f"{'input' if self.at_input else 'output'} of {self.name}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}

        def hook(mod, args, out):
            store["r"] = args[0] if self.at_input else out

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(x)
        finally:
            handle.remove()
        if "r" not in store:
            raise UserError(f"layer {self.name!r} did not run in the forward pass")
        return store["r"].flatten(1)

    def batched(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """R(x) for many images, without gradients."""
        with torch.inference_mode():
            out = torch.cat([self(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        return out.clone()  # a normal tensor, usable in autograd

    def pre_relu(self) -> "Representation":
        """The same features before the ReLU that produces them, when one does (else ``self``).

        ReLU(z) and z have the same maximisers where z > 0, but only z has a
        gradient where the unit is off: optimising z lets a visualisation
        start from images on which the feature is zero.
        """
        found: dict[str, object] = {}
        relus = [(n, m) for n, m in self.model.named_modules() if isinstance(m, nn.ReLU) and not m.inplace]
        outs: list[tuple[str, nn.Module, torch.Tensor]] = []
        handles = [m.register_forward_hook(lambda mod, a, o, n=n: outs.append((n, mod, o))) for n, m in relus]
        handles.append(self.module.register_forward_hook(lambda mod, a, o: found.setdefault("r", a[0] if self.at_input else o)))
        try:
            with torch.inference_mode():
                self.model(self._probe)
        finally:
            for h in handles:
                h.remove()
        hits = [(n, m) for n, m, o in outs if o is found.get("r")]
        if len(hits) != 1 or sum(1 for n, *_ in outs if n == hits[0][0]) != 1:
            return self
        pre = object.__new__(Representation)
        pre.model, pre._probe = self.model, self._probe
        pre.name, pre.module = hits[0]
        pre.at_input = True
        return pre
