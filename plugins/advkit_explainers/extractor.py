"""Feature extractors for the Fréchet distance: the explained model, any advkit model, or Inception-v3.

Images are adapted to the extractor's input (grey ↔ RGB, bilinear resize).
Inception-v3 (torchvision's architecture, inputs scaled to [-1, 1], 2048
pooled features) is only built from a local weights file: advkit never
downloads weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advkit.errors import UserError

from advkit_explainers.layers import Representation


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


def inception(weights: str, device) -> Extractor:
    """Inception-v3 from a local torchvision/timm ImageNet state dict."""
    if not weights:
        raise UserError(
            "extractor=inception needs local Inception-v3 weights: pass --opt weights=FILE "
            "(a torchvision inception_v3 state dict, .pth or .safetensors); advkit does not download them"
        )
    from torchvision.models import inception_v3

    from advkit.checkpoint import load_state, load_weights_file
    from advkit.models import ImageClassifier

    net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    state = {k: v for k, v in load_weights_file(weights).items() if not k.startswith("AuxLogits.")}
    load_state(net, state, weights)
    model = ImageClassifier(net, [0.5] * 3, [0.5] * 3, num_classes=1000, input_shape=(3, 299, 299), arch="inception_v3")
    return model.to(device).eval()


def load_extractor(spec: str, layer: str, weights: str, model, x: torch.Tensor) -> Extractor:
    """``""``: the explained model; ``inception``: Inception-v3 from WEIGHTS; else any ``load_model`` spec."""
    spec = spec.strip()
    if not spec:
        return Extractor(model, x.shape[1:], layer, "the explained model")
    if spec.lower() in ("inception", "inception-v3", "inception_v3"):
        net = inception(weights, x.device)
        return Extractor(net, net.input_shape, layer, "inception-v3")
    from advkit.models import load_model

    mean = getattr(model, "mean", None)
    std = getattr(model, "std", None)
    net = load_model(
        spec, num_classes=getattr(model, "num_classes", 10), input_shape=tuple(x.shape[1:]),
        mean=mean.flatten().tolist() if mean is not None else None,
        std=std.flatten().tolist() if std is not None else None,
        weights=weights or None, device=x.device,
    )
    return Extractor(net, net.input_shape, layer, spec)
