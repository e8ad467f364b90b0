"""Explainer ``saliency``: the absolute input gradient of the target logit (Simonyan et al., 2014)."""

from __future__ import annotations


def saliency(target: str = "label"):
    """Absolute input gradient of the target logit (TARGET: label or pred)."""
    from advkit.plugin import Explanation, UserError

    if target not in ("label", "pred"):
        raise UserError(f"saliency: target must be 'label' or 'pred', got {target!r}")

    def explain(model, x, y, ctx):
        import torch

        x = x.clone().requires_grad_(True)
        logits = model(x)
        cls = y if target == "label" else logits.argmax(1)
        (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), x)
        maps = grad.abs().amax(1, keepdim=True).detach()  # (N, 1, H, W): the largest over channels
        return Explanation(method="saliency", inputs=x.detach(), maps=maps,
                           meta={"target": target, "dataset": ctx.dataset})

    return explain
