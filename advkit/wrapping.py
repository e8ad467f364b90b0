"""What attack-wrapping plugins return: a library attack run as ``attack(x, y)``, kept inside the threat model.

Shared by the torchattacks, ART and AutoAttack plugins (and open to third-party ones).
"""

from __future__ import annotations

import importlib.metadata as md


def dist_version(name: str) -> str:
    """Installed version of a distribution, or ``"?"``."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "?"


class BoundAttack:
    """``attack(x, y) -> x_adv`` around ``run(x, y)``.

    The result is detached, moved to ``x``'s device and dtype, and passed through
    ``threat.restrict``: a point outside the threat model is replaced by its
    clean input (selection, never clipping). Gradients are enabled during the
    run so the attack also works when called under ``torch.no_grad()``.
    """

    def __init__(self, run, threat, implementation: str, *, black_box: bool = False, report: dict | None = None,
                 state: dict | None = None):
        self.run = run
        self.threat = threat
        self.implementation = implementation
        self.black_box = black_box
        self.report = dict(report or {})
        self.state = state if state is not None else {}  # the library's attack object, once built

    def __call__(self, x, y):
        import torch

        with torch.enable_grad():
            x_adv = self.run(x.detach(), y.detach().to(x.device))
        x_adv = torch.as_tensor(x_adv).detach().to(device=x.device, dtype=x.dtype)
        if x_adv.shape != x.shape:
            raise RuntimeError(f"{self.implementation} returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}")
        return self.threat.restrict(x.detach(), x_adv)

    def __repr__(self) -> str:
        return f"<{self.implementation} under {self.threat}>"
