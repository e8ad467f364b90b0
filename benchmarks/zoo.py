"""The zoo of broken defenses: small models advkit trains, each behind a defense that an adaptive attack
broke in the literature, with the sound adversarially trained models beside them.

Every entry is a recipe: :func:`build` trains what it needs with ``advkit.train`` (SmallCNN on the first
5,000 ``fmnist-mini`` training images, 5 epochs, Adam 1e-3 with a cosine schedule, seed 0: the protocol of
docs/results.md) into ``OUT/NAME/last.safetensors`` and wraps it; a model already trained is reused. The
defenses below are written here, for this benchmark only: they are the published designs at the size of
this network, not library features.

- ``quantize``: input quantization to 16 grey levels (4 bits: the level step, 1/15, is below eps) (bit-depth reduction, Xu et al. 2018; Guo et al. 2018)
  in front of the undefended model; BPDA surrogate: the undefended model (straight-through).
- ``jpeg``: a JPEG-like compression (4x4 block DCT, coefficients rounded to a frequency-growing step) in
  front of the undefended model (Dziugaite et al. 2016; Guo et al. 2018); surrogate: straight-through.
- ``thermometer``: thermometer encoding with 16 levels (Buckman et al. 2018), the network trained on the
  codes; surrogate: the same network on the piecewise-linear (ramp) code, as Athalye et al. 2018 did.
- ``resize-pad``: random resize to 28-33 pixels and random zero padding to 34 (Xie et al. 2018) in front
  of the undefended model; random, no surrogate needed (EOT).
- ``distillation``: trained at softmax temperature 100 and deployed at 1 (Papernot et al. 2016; the
  student step omitted: the deployed logits are 100 times the trained ones, which is what saturates the
  softmax, Carlini & Wagner 2016); surrogate: the network at its training temperature.
- ``kwta``: k-winners-take-all activations keeping 10 % of each layer's units (Xiao et al. 2020), trained
  so; surrogate: the same weights with a sigmoid-smoothed k-WTA mask.
- ``lwta``, ``noise-injection``: advkit's stochastic defenses with PGD-AT (the rows of docs/results.md).
- ``pgd-at``, ``trades``, ``mart``: sound adversarial training (3 PGD steps of 0.04 at eps 0.1).
- ``undefended``: the plain network every wrapper above stands in front of.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = (0.286,), (0.353,)  # fmnist-mini's normalization (as the bundled models)
RECIPE = dict(epochs=5, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine",
              n_train=5000, n_val=0, seed=0, quiet=True)
AT = "{}:steps=3,step_size=0.04"


class Quantize(nn.Module):
    """Rounds every pixel to one of ``levels`` grey levels: zero gradient almost everywhere."""

    def __init__(self, levels: int = 16):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        s = self.levels - 1
        return torch.round(x * s) / s


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix of size ``n`` (rows: frequencies)."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


class JpegLike(nn.Module):
    """Block DCT, coefficients rounded to a step that grows with frequency, inverse DCT, clip to [0, 1]."""

    def __init__(self, block: int = 4, step: float = 0.08):
        super().__init__()
        self.block = block
        self.register_buffer("d", dct_matrix(block))
        u = torch.arange(block, dtype=torch.float32)
        self.register_buffer("q", step * (1 + u.view(-1, 1) + u.view(1, -1)))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.block
        blocks = x.reshape(b, c, h // n, n, w // n, n).transpose(3, 4)  # (b, c, H, W, n, n)
        coef = self.d @ blocks @ self.d.T
        coef = torch.round(coef / self.q) * self.q
        back = (self.d.T @ coef @ self.d).transpose(3, 4).reshape(b, c, h, w)
        return back.clamp(0, 1)


class Thermometer(nn.Module):
    """Thermometer code of each pixel in ``levels`` channels: channel k is 1 where x >= (k + 0.5) / levels,
    computed with ``floor`` so that its gradient is zero (not undefined). ``ramp=True``: the piecewise-linear
    code clamp(levels * x - k, 0, 1), equal at the level centres and differentiable (the BPDA approximation)."""

    def __init__(self, levels: int = 16, ramp: bool = False):
        super().__init__()
        self.levels, self.ramp = levels, ramp
        self.register_buffer("k", torch.arange(levels, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        if self.ramp:
            return (self.levels * x - self.k).clamp(0, 1)
        return (torch.floor(self.levels * x - self.k - 0.5) + 1).clamp(0, 1)


class ResizePad(nn.Module):
    """Xie et al.'s randomization: resize to a random size in [size, pad), pad with zeros to ``pad`` at a
    random offset; one draw per call (the whole batch)."""

    def __init__(self, size: int = 28, pad: int = 34):
        super().__init__()
        self.size, self.pad = size, pad

    def forward(self, x):
        r = int(torch.randint(self.size, self.pad, ()).item())
        x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        left, top = (int(v) for v in torch.randint(0, self.pad - r + 1, (2,)))
        return F.pad(x, (left, self.pad - r - left, top, self.pad - r - top))


class Scale(nn.Module):
    """Multiplies the logits by ``factor`` (1/T: a network trained at temperature T)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, z):
        return z * self.factor


class KWTA(nn.Module):
    """k-winners-take-all over each sample's units (channels and positions): keeps the ``ratio`` largest,
    zeroes the rest (Xiao et al. 2020). ``smooth``: a sigmoid mask around the k-th value instead (BPDA)."""

    def __init__(self, ratio: float = 0.1, smooth: bool = False):
        super().__init__()
        self.ratio, self.smooth = ratio, smooth

    def forward(self, a):
        flat = a.flatten(1)
        k = max(1, int(self.ratio * flat.shape[1]))
        t = flat.topk(k, dim=1).values[:, -1:].detach()
        if self.smooth:
            tau = 0.1 * flat.detach().std(1, keepdim=True).clamp_min(1e-6)
            return (flat * torch.sigmoid((flat - t) / tau)).view_as(a)
        return (flat * (flat >= t)).view_as(a)


class Before(nn.Module):
    """``transform`` then ``model``: a defense in front of a classifier that takes images in [0, 1]."""

    def __init__(self, transform: nn.Module, model: nn.Module):
        super().__init__()
        self.transform, self.model = transform, model

    def forward(self, x):
        return self.model(self.transform(x))


@dataclass
class Entry:
    name: str
    kind: str  # "broken", "stochastic", "sound", "undefended"
    what: str
    literature: str  # what the literature's adaptive attack reached, and the target advkit's --adaptive aims at


ENTRIES = [
    Entry("undefended", "undefended", "SmallCNN, standard training", ""),
    Entry("quantize", "broken", "input quantization, 16 levels", "BPDA: the undefended model's (Athalye et al. 2018)"),
    Entry("jpeg", "broken", "JPEG-like compression (4x4 DCT)", "BPDA: the undefended model's (Athalye et al. 2018)"),
    Entry("thermometer", "broken", "thermometer encoding, 16 levels", "BPDA: the undefended model's (Athalye et al. 2018: 0 %)"),
    Entry("resize-pad", "broken", "random resize and pad", "EOT: the undefended model's (Athalye et al. 2018)"),
    Entry("distillation", "broken", "distillation, T = 100", "logit attack: the undefended model's "
          "(Carlini & Wagner 2016)"),
    Entry("kwta", "broken", "k-WTA activations, 10 %", "the undefended model's (Tramèr et al. 2020)"),
    Entry("lwta", "stochastic", "stochastic LWTA + PGD-AT", "the PGD-AT row's"),
    Entry("noise-injection", "stochastic", "noise injection + PGD-AT", "the PGD-AT row's"),
    Entry("pgd-at", "sound", "PGD-AT", ""),
    Entry("trades", "sound", "TRADES", ""),
    Entry("mart", "sound", "MART", ""),
]
TRAINED = {  # name -> (defenses, backbone factory or None for the registered smallcnn)
    "undefended": [], "lwta": [AT.format("pgd-at"), "lwta"], "noise-injection": [AT.format("pgd-at"), "noise-injection"],
    "pgd-at": [AT.format("pgd-at")], "trades": [AT.format("trades")], "mart": [AT.format("mart")],
}


def smallcnn(in_chans: int = 1) -> nn.Module:
    from advkit._internal.models import build_backbone

    return build_backbone("smallcnn", 10, (in_chans, 28, 28))


def classifier(backbone: nn.Module, mean=MEAN, std=STD):
    import advkit

    return advkit.ImageClassifier(backbone, mean, std, num_classes=10, input_shape=(1, 28, 28))


def kwta_cnn(smooth: bool = False) -> nn.Module:
    net = smallcnn()
    for seq in (net.features, net.head):
        for i, m in enumerate(seq):
            if isinstance(m, nn.ReLU):
                seq[i] = KWTA(0.1, smooth)
    return net


def _train(name: str, model, defenses, out: Path):
    """Train ``model`` (or the registered smallcnn when None) with the recipe; reuse ``out/NAME/last``."""
    import advkit

    last = out / name / "last.safetensors"
    done = last.exists() and json.loads(last.with_suffix(".json").read_text()).get("epoch") == RECIPE["epochs"]
    if model is None:
        if not done:
            advkit.train("smallcnn", "fmnist-mini", defenses=defenses, eps="0.1", val_attack="none",
                         out=str(out / name), resume=last.exists(), **RECIPE)
        return advkit.load_model(str(last)).eval()
    if done:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(last)))
    else:
        advkit.train(model, "fmnist-mini", eps="0.1", val_attack="none", out=str(out / name), resume=last.exists(),
                     **RECIPE)
    return model.eval()


def build(name: str, out: Path) -> tuple[nn.Module, nn.Module | None]:
    """``(model, BPDA surrogate or None)`` of entry ``name``, trained into ``out`` when missing."""
    if name in TRAINED:
        return _train(name, None, TRAINED[name], out), None
    base = _train("undefended", None, [], out)
    if name == "quantize":
        return Before(Quantize(16), base).eval(), base
    if name == "jpeg":
        return Before(JpegLike(), base).eval(), base
    if name == "resize-pad":
        return Before(ResizePad(), base).eval(), None
    if name == "thermometer":
        net = _train(name, classifier(nn.Sequential(Thermometer(16), smallcnn(16)), (0.0,), (1.0,)), [], out)
        ramp = classifier(nn.Sequential(Thermometer(16, ramp=True), net.backbone[1]), (0.0,), (1.0,))
        return net, ramp.eval()
    if name == "distillation":
        trained = _train(name, classifier(nn.Sequential(smallcnn(), Scale(0.01))), [], out)
        return classifier(trained.backbone[0]).eval(), trained
    if name == "kwta":
        net = _train(name, classifier(kwta_cnn()), [], out)
        smooth = classifier(kwta_cnn(smooth=True))
        smooth.load_state_dict(net.state_dict())
        return net, smooth.eval()
    raise KeyError(name)
