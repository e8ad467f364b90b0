"""An example advkit plugin: one attack and one explainer, registered through the ``advkit`` entry point."""

from __future__ import annotations

import advkit


def noise_attack(model, threat, draws: int = 8):
    """Best of DRAWS uniform random perturbations in the eps-ball (a sanity baseline)."""
    import torch

    def attack(x, y):
        best = x.clone()
        lo, hi = threat.bounds
        for _ in range(draws):
            if threat.norm == "Linf":
                delta = (torch.rand_like(x) * 2 - 1) * threat.eps
            else:
                delta = torch.randn_like(x)
                norms = delta.flatten(1).norm(p=2 if threat.norm == "L2" else 1, dim=1).clamp_min(1e-12)
                delta = delta * (threat.eps / norms).view(-1, *([1] * (x.dim() - 1)))
            cand = (x + delta).clamp(lo, hi)
            with torch.no_grad():
                wrong = model(cand).argmax(1) != y
            best[wrong] = cand[wrong]
        return best

    attack.implementation = "advkit-plugin-example 0.1.0 noise"
    return attack


def saliency(target: str = "label"):
    """Absolute input gradient of the target logit (TARGET: label or pred)."""
    import torch

    from advkit import Explanation

    def explain(model, x, y, ctx):
        x = x.clone().requires_grad_(True)
        logits = model(x)
        cls = y if target == "label" else logits.argmax(1)
        (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), x)
        return Explanation(method="saliency", inputs=x.detach(), maps=grad.abs().detach(), meta={"target": target})

    return explain


@advkit.hookimpl
def advkit_register_attacks(register):
    register("noise", noise_attack, aliases=("random-noise",), black_box=True,
             ranges={"draws": advkit.Range(1)})


@advkit.hookimpl
def advkit_register_explainers(register):
    register("saliency", saliency)
