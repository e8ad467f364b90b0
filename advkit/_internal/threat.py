"""The threat model: norm, budget and input bounds, and the check of adversarial examples.

``ThreatModel.verify`` is what the evaluation engine runs on every adversarial
batch: inside the eps-ball in the threat norm (up to float tolerance), inside
the input bounds, same shape, finite. A per-pixel budget (PART) is an ``eps``
tensor broadcastable to the input, checked point by point under Linf.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import torch

from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.values import parse_number

NORMS = {"linf": "Linf", "inf": "Linf", "l_inf": "Linf", "l2": "L2", "2": "L2", "l1": "L1", "1": "L1"}


def parse_norm(text: str) -> str:
    """``"linf"``, ``"Linf"``, ``"inf"`` -> ``"Linf"``; also ``L2`` and ``L1``."""
    key = str(text).strip().lower()
    if key not in NORMS:
        raise UserError(f"unknown norm {text!r}; use Linf, L2 or L1")
    return NORMS[key]


def parse_eps(text, norm: str = "Linf") -> float:
    """Parse a budget given as ``8/255``, ``0.031`` or ``2e-2``.

    Refuses what is not a finite non-negative number, and warns when a Linf
    budget above 1 looks like a value on the 0-255 scale.
    """
    if isinstance(text, bool) or not isinstance(text, (str, numbers.Real)):
        raise UserError(f"eps must be one number (write 8/255, 0.031 or 2e-2), got {type(text).__name__} {text!r}")
    try:
        value = float(parse_number(text)) if isinstance(text, str) else float(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise UserError(f"eps {text!r} is not a number (write 8/255, 0.031 or 2e-2): {exc}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"eps {text!r} must be a finite number >= 0")
    if norm == "Linf" and value > 1:
        warnings.warn(
            f"eps={value:g} under Linf exceeds the [0, 1] image range: it looks like a 0-255 value; "
            f"did you mean {value:g}/255?",
            stacklevel=2,
        )
    return value


@dataclass(frozen=True)
class Violation:
    """How a batch broke the threat model."""

    count: int
    total: int
    max_excess: float
    reason: str

    def __str__(self) -> str:
        return f"{self.count}/{self.total} points {self.reason} (worst by {self.max_excess:.3g})"


def lp_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations."""
    flat = delta.reshape(delta.shape[0], -1).double()
    if norm == "Linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "L2":
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius ``eps`` around each input, intersected with the input bounds."""

    norm: str = "Linf"
    eps: float = 8 / 255
    bounds: tuple[float, float] = (0.0, 1.0)
    tol: float = field(default=1e-5, compare=False)

    @classmethod
    def parse(cls, norm: str = "Linf", eps="8/255", **kw) -> "ThreatModel":
        n = parse_norm(norm)
        return cls(norm=n, eps=parse_eps(eps, n), **kw)

    def __str__(self) -> str:
        e = self.eps
        shown = f"{round(e * 255)}/255" if self.norm == "Linf" and abs(e * 255 - round(e * 255)) < 1e-6 and e else f"{e:g}"
        return f"{self.norm} eps={shown}"

    def as_dict(self) -> dict:
        return {"norm": self.norm, "eps": self.eps, "bounds": list(self.bounds)}

    def with_eps(self, eps: float) -> "ThreatModel":
        return ThreatModel(self.norm, float(eps), self.bounds, self.tol)

    def norms(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per-sample size of ``x_adv - x`` in the threat norm."""
        return lp_norms(x_adv.detach() - x.detach(), self.norm)

    def inside(self, x: torch.Tensor, x_adv: torch.Tensor, eps=None) -> torch.Tensor:
        """Boolean per sample: is ``x_adv`` within the ball (and the bounds)?"""
        eps = self.eps if eps is None else eps
        lo, hi = self.bounds
        finite = torch.isfinite(x_adv.reshape(x_adv.shape[0], -1)).all(dim=1)
        in_bounds = ((x_adv >= lo - self.tol) & (x_adv <= hi + self.tol)).reshape(x.shape[0], -1).all(dim=1)
        if torch.is_tensor(eps) and eps.numel() > 1:
            excess = (x_adv - x).abs() - eps.to(x.device)
            in_ball = (excess <= self.tol).reshape(x.shape[0], -1).all(dim=1)
        else:
            in_ball = self.norms(x, x_adv) <= float(eps) + self.tol * max(1.0, float(eps))
        return finite & in_bounds & in_ball.to(finite.device)

    def check(self, x: torch.Tensor, x_adv: torch.Tensor, eps=None) -> Violation | None:
        """Return what is wrong with ``x_adv``, or ``None`` when it is inside the threat model."""
        n = x.shape[0]
        if not torch.is_tensor(x_adv):
            return Violation(n, n, float("inf"), f"are not a tensor ({type(x_adv).__name__})")
        if x_adv.shape != x.shape:
            return Violation(n, n, float("inf"), f"have shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
        flat = x_adv.detach().reshape(n, -1)
        bad = ~torch.isfinite(flat).all(dim=1)
        if bad.any():
            return Violation(int(bad.sum()), n, float("inf"), "are not finite (NaN or inf)")
        lo, hi = self.bounds
        below = (lo - flat).clamp(min=0).amax(dim=1)
        above = (flat - hi).clamp(min=0).amax(dim=1)
        out = torch.maximum(below, above)
        bad = out > self.tol
        if bad.any():
            return Violation(int(bad.sum()), n, float(out.max()), f"leave the input bounds {list(self.bounds)}")
        eps = self.eps if eps is None else eps
        if torch.is_tensor(eps) and eps.numel() > 1:
            excess = ((x_adv.detach() - x).abs() - eps.to(x.device)).reshape(n, -1).amax(dim=1)
            bad = excess > self.tol
            if bad.any():
                return Violation(int(bad.sum()), n, float(excess.max()), "exceed their per-pixel Linf budget")
            return None
        size = self.norms(x, x_adv)
        excess = size - float(eps)
        bad = excess > self.tol * max(1.0, float(eps))
        if bad.any():
            return Violation(
                int(bad.sum()), n, float(excess.max()), f"exceed {self.norm} eps={float(eps):.6g} (max norm {float(size.max()):.6g})"
            )
        return None

    def verify(self, x: torch.Tensor, x_adv: torch.Tensor, who: str = "attack", eps=None) -> None:
        """Raise :class:`ThreatViolation` naming ``who`` if ``x_adv`` leaves the threat model."""
        v = self.check(x, x_adv, eps=eps)
        if v is not None:
            raise ThreatViolation(f"{who} violated the threat model {self}: {v}")
