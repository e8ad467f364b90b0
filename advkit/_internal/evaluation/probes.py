"""What the evaluation finds out about a model before it trusts it, from a few forward passes on copies.

- :func:`writes_input`: a model that writes into the tensor it is given would
  move the reference points of every attack; it is refused, naming the model
  (the probe runs on a copy, so the caller's data is untouched).
- the model is random when forward passes disagree (:func:`advkit._internal.stochastic.stochasticity`);
- :func:`gradient_warning`: all-zero or NaN input gradients on the first batch make gradient attacks
  fail silently, so every run warns (``--audit`` counts them per point);
- :func:`batch_dependence`: a deterministic model whose outputs for a point
  change with the other points of its batch (batch statistics at evaluation):
  every per-point result then depends on the batch, so the run warns.

A model that raises in a probe stops the run with one line naming the batch size.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from advkit._internal.errors import UserError


def forward_named(model, x: torch.Tensor, who: str) -> torch.Tensor:
    try:
        with torch.inference_mode():
            return model(x)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{who} raised on a batch of {len(x)} image(s) of shape {tuple(x.shape[1:])}: "
                        f"{detail}") from None


def writes_input(model, x: torch.Tensor, who: str) -> None:
    """Refuse a model that changes the tensor it is given (probed on a copy)."""
    copy = x.clone()
    forward_named(model, copy, who)
    if not torch.equal(copy, x):
        raise UserError(f"{who} writes into its input tensor (an in-place operation on the images it is given): "
                        f"attacks and checks would see moved points; make its first operation out of place")


def batch_dependence(model, x: torch.Tensor, who: str) -> str:
    """A warning when a point's logits change with the other points of its batch, else ``""``."""
    if len(x) < 2:
        return ""
    half = len(x) // 2
    whole, alone = forward_named(model, x, who)[:half], forward_named(model, x[:half].clone(), who)
    finite = torch.isfinite(whole) & torch.isfinite(alone)
    same_nan = torch.equal(torch.isfinite(whole), torch.isfinite(alone))
    gap = (whole - alone)[finite].abs()
    scale = float(whole[finite].abs().amax().clamp(min=1.0)) if gap.numel() else 1.0
    if same_nan and (not gap.numel() or float(gap.amax()) <= 1e-3 * scale):
        return ""
    changed = int((whole.argmax(1) != alone.argmax(1)).sum())
    return (f"{who}'s outputs for a point depend on the other points of its batch (batch statistics at "
            f"evaluation?): {changed} of {half} predictions changed with the batch; per-point results (and "
            f"what an attack breaks) depend on the batching; put its normalization layers in eval mode")


def gradient_health(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, bool]:
    """Share of points whose input gradient of the cross-entropy is all zero, and whether any is NaN."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    if g is None:  # the output does not depend on the input at all (detached)
        return 1.0, False
    flat = g.reshape(len(x), -1)
    return float((flat.abs().amax(1) == 0).float().mean()), bool(torch.isnan(flat).any())


def gradient_warning(model, x: torch.Tensor, y: torch.Tensor) -> None:
    """Warn when the first batch's input gradients are mostly zero or NaN (gradient attacks would fail silently)."""
    zero, nan = gradient_health(model, x, y)
    if nan or zero > 0.5:
        what = "NaN" if nan else f"all zero for {100 * zero:.0f}% of the first {len(x)} points"
        warnings.warn(f"the model's input gradients are {what}: gradient attacks will fail silently and "
                      f"overstate robustness (masked or shattered gradients); run with --audit, "
                      f"and add a black-box attack", stacklevel=2)
