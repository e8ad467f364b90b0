"""Adversary helpers of the contract: projection onto the threat model and PGD on an arbitrary loss (our own code).

Attack libraries maximise their own fixed loss (cross-entropy) under a
scalar budget. Adversarial training needs more: the loss to maximise comes
from the objective (cross-entropy for PGD-AT and MART, the KL divergence for
TRADES, through ``ctx.attack_loss``), and the budget may be a per-pixel map
(PART's ``ctx.state["eps_map"]``). :func:`pgd` does both; :class:`PGDAdversary`
puts it at the *adversary* point, and it is what the training engine uses when
an objective needs adversarial examples and no defense owns that point. The
settings of that adversary (:class:`PGDSettings`) reach every defense through
``ctx.adversary`` (PART reuses them with its per-pixel budget).

:func:`project` and :func:`l2_normalize` are the one implementation of the L2
geometry advkit's own code uses (explainers' L2 PGD included).

Input gradients come from ``torch.autograd.grad``, so no parameter ``.grad``
is touched (safe under DistributedDataParallel).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advkit._internal.defense import Defense
from advkit._internal.errors import UserError


def _ce(logits_adv, logits_clean, y):
    return F.cross_entropy(logits_adv, y)


_ce.uses_clean = False


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Parameters not requiring gradients for the block (attacks and maps need input gradients only)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _bshape(x):
    return (-1,) + (1,) * (x.dim() - 1)


def l2_normalize(v: torch.Tensor) -> torch.Tensor:
    """Each sample of ``v`` divided by its L2 norm (zero stays zero)."""
    n = v.reshape(v.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    return v / n.view(_bshape(v))


def l2_project(delta: torch.Tensor, eps) -> torch.Tensor:
    """Each sample of ``delta`` scaled onto the L2 ball of radius ``eps`` where it lies outside."""
    n = delta.reshape(delta.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    factor = (float(eps) / n).clamp(max=1.0)
    return delta * factor.view(_bshape(delta))


def random_start(x: torch.Tensor, norm: str, eps, kind: str = "uniform", std: float = 0.001, generator=None) -> torch.Tensor:
    """A starting perturbation: uniform in the eps-ball, small Gaussian (TRADES, MART) or none."""
    if kind == "none":
        return torch.zeros_like(x)
    if kind == "normal":
        return std * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    if kind != "uniform":
        raise UserError(f"start must be uniform, normal or none, got {kind!r}")
    if norm == "Linf":
        u = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return (2 * u - 1) * eps
    # uniform in the L2 ball: Gaussian direction, radius eps * u^(1/d)
    d = x[0].numel()
    direction = l2_normalize(torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator))
    r = torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator).pow(1.0 / d) * float(eps)
    return direction * r.view(_bshape(x))


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps, bounds=(0.0, 1.0)) -> torch.Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` (Linf: scalar or per-pixel eps; L2) and the bounds."""
    delta = x_adv - x
    if norm == "Linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps) if torch.is_tensor(eps) else delta.clamp(-eps, eps)
    elif norm == "L2":
        delta = l2_project(delta, eps)
    else:
        raise UserError(f"the training adversary supports Linf and L2 threat models, not {norm}")
    return (x + delta).clamp(*bounds)


def pgd_perturbation(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "Linf",
    eps=8 / 255,
    steps: int = 10,
    step_size=None,
    loss_fn=None,
    start: str = "uniform",
    start_std: float = 0.001,
    bounds=(0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn(logits_adv, logits_clean, y)`` over the eps-ball around ``x``.

    ``eps`` is a float or (Linf only) a tensor broadcastable to ``x`` (a
    per-pixel budget); ``step_size`` defaults to ``eps / 4`` (per pixel for a
    map). Linf steps follow the gradient's sign, L2 steps its direction.
    Returns a detached tensor inside the ball and the bounds.
    """
    if norm not in ("Linf", "L2"):
        raise UserError(f"the training adversary supports Linf and L2 threat models, not {norm}")
    if torch.is_tensor(eps) and eps.numel() > 1 and norm != "Linf":
        raise UserError("a per-pixel eps map needs the Linf threat model")
    loss_fn = loss_fn or _ce
    x = x.detach()
    if torch.is_tensor(eps):
        eps = eps.to(device=x.device, dtype=x.dtype)
    alpha = eps / 4 if step_size is None else step_size
    logits_clean = None
    if getattr(loss_fn, "uses_clean", True):  # TRADES' KL needs the clean logits; cross-entropy does not
        with torch.no_grad():
            logits_clean = model(x).detach()
    x_adv = project(x, x + random_start(x, norm, eps, start, start_std, generator), norm, eps, bounds)
    for _ in range(int(steps)):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv), logits_clean, y)
            (grad,) = torch.autograd.grad(loss, [x_adv])
        with torch.no_grad():
            step = grad.sign() if norm == "Linf" else l2_normalize(grad)
            x_adv = project(x, x_adv.detach() + alpha * step, norm, eps, bounds)
    return x_adv.detach()


@dataclass(frozen=True)
class PGDSettings:
    """Steps, step size (``None``: eps/4) and random start of a training PGD."""

    steps: int = 10
    step_size: float | None = None
    start: str = "uniform"  # uniform | normal | none
    start_std: float = 0.001

    def __post_init__(self):
        if int(self.steps) < 1:
            raise UserError(f"the training PGD needs steps >= 1, got {self.steps}")
        if self.step_size is not None and not float(self.step_size) > 0:
            raise UserError(f"the training PGD needs step_size > 0, got {self.step_size}")
        if self.start not in ("uniform", "normal", "none"):
            raise UserError(f"start must be uniform, normal or none, got {self.start!r}")


class PGDAdversary(Defense):
    """PGD on the objective's attack loss (CE for PGD-AT, KL for TRADES), per-pixel eps aware."""

    def __init__(self, steps: int = 10, step_size: float | None = None, random_start: bool = True,
                 start: str | None = None, start_std: float = 0.001):
        super().__init__(steps=steps, step_size=step_size, random_start=random_start)
        self.name = "pgd-adversary"
        self.settings = PGDSettings(int(steps), step_size, start or ("uniform" if random_start else "none"),
                                    float(start_std))

    def perturb(self, model, x, y, ctx):
        threat, s = ctx.threat, self.settings
        eps = ctx.state.get("eps_map")
        eps = threat.eps if eps is None else eps
        return pgd_perturbation(
            model, x, y, norm=threat.norm, eps=eps, steps=s.steps, step_size=s.step_size,
            loss_fn=ctx.attack_loss, start=s.start, start_std=s.start_std,
            bounds=threat.bounds, generator=ctx.generator,
        )
