"""Feature extractors for the Fréchet distance: the FID Inception, the explained model, or any advkit model.

``inception`` is the FID Inception-v3 (:mod:`advkit_explainers.inception`):
with it the Fréchet distance is the FID. ``model`` (the explained model's
representation) and a ``load_model`` spec give a Fréchet distance in that
network's features, which is not FID and says so in its description. For
those, images are adapted to the network's input (grey ↔ RGB, bilinear resize).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advkit.plugin import UserError
from advkit_explainers.inception import fid_inception
from advkit_explainers.layers import Representation

INCEPTION_NAMES = ("inception", "inception-v3", "inception_v3", "fid")


def adapt(x: torch.Tensor, shape) -> torch.Tensor:
    """Images ``x`` converted to ``shape`` = (C, H, W): channels repeated or averaged, then resized."""
    c, h, w = (int(s) for s in shape)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise UserError(f"cannot feed {x.shape[1]}-channel images to an extractor taking {c} channels")
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    return x


class Extractor:
    """Images in [0, 1] → (N, k) features of ``net`` at ``layer`` (see :class:`Representation`)."""

    is_fid = False

    def __init__(self, net, input_shape, layer: str = "", description: str = ""):
        self.net = net.eval()
        self.input_shape = tuple(int(s) for s in input_shape)
        dev = next((p.device for p in net.parameters()), torch.device("cpu"))
        self.rep = Representation(net, torch.rand(1, *self.input_shape, device=dev), layer)
        self.description = f"{description} ({self.rep.description})"

    def __call__(self, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        with torch.inference_mode():
            out = torch.cat([self.rep(adapt(x[i : i + batch_size], self.input_shape)) for i in range(0, x.shape[0], batch_size)])
        return out.clone()


class InceptionExtractor:
    """The FID Inception as an extractor (``feature``: 2048 for FID, 192 for the inversion distance of ``invert``)."""

    is_fid = True

    def __init__(self, where: str, weights: str, feature: str, device, hint: str = ""):
        self.net = fid_inception(where, weights, feature, device, hint)
        self.description = self.net.description
        self.standard, self.sha256 = self.net.standard, self.net.sha256

    def __call__(self, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        return self.net(x, batch_size)


def load_extractor(where: str, spec: str, layer: str, weights: str, model, x: torch.Tensor, dataset: str | None = None):
    """``inception``: the FID Inception; ``model``: the explained model; else any ``load_model`` spec."""
    spec = spec.strip()
    if spec.lower() in INCEPTION_NAMES:
        if layer:
            raise UserError(f"{where}: layer= applies to model extractors; the FID Inception uses its pool3 features")
        hint = "; extractor=model gives a Fréchet distance in the model's own features instead (not FID)"
        return InceptionExtractor(where, weights, "2048", x.device, hint)
    if spec.lower() == "model":
        return Extractor(model, x.shape[1:], layer, "the explained model")
    if not spec:
        raise UserError(f"{where}: extractor must be inception, model or a model spec")
    from types import SimpleNamespace

    from advkit.plugin import load_model

    # a new backbone gets the explained model's classes, input shape and normalization; a complete model
    # (a bundled or saved one) keeps its own
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    like = SimpleNamespace(
        name=dataset or "", num_classes=getattr(model, "num_classes", 10), input_shape=tuple(x.shape[1:]),
        mean=mean.flatten().tolist() if mean is not None else [0.0] * x.shape[1],
        std=std.flatten().tolist() if std is not None else [1.0] * x.shape[1],
    )
    net = load_model(spec, dataset=like, weights=weights or None, device=x.device)
    return Extractor(net, net.input_shape, layer, spec)
