"""MART (Wang et al., 2020): boosted CE on adversarial examples + misclassification-weighted KL.

``BCE(p(x_adv), y) + beta · KL(p(x) || p(x_adv)) · (1 - p_y(x))``, where the
boosted CE adds ``-log(1 - max_{k != y} p_k(x_adv))``; the terms follow the
reference implementation. The adversary maximises CE, started from
``x + 0.001·N(0, 1)`` as there. The CE term goes through ``ctx.cross_entropy``
(``--defense label-smoothing`` smooths it; the boosting term keeps hard labels).
"""

from __future__ import annotations

from advkit.plugin import Defense
from advkit_training import _checks


class MART(Defense):
    """MART (Wang et al. 2020): boosted CE on adversarial examples plus weighted KL."""

    needs_adversary = True

    def __init__(self, beta: float = 6.0, steps: int = 10, step_size: float | None = None):
        super().__init__(beta=beta, steps=steps, step_size=step_size)
        self.beta = _checks.nonneg("mart.beta", beta)
        self.steps = _checks.steps("mart.steps", steps)
        self.step_size = _checks.step_size("mart.step_size", step_size)

    def default_adversary(self) -> Defense:
        from advkit.plugin import PGDAdversary

        return PGDAdversary(self.steps, self.step_size, start="normal", start_std=0.001)

    def loss(self, model, x, x_adv, y, ctx):
        import torch
        import torch.nn.functional as F

        logits = model(x)
        logits_adv = model(x if x_adv is None else x_adv)
        adv_probs = F.softmax(logits_adv, dim=1)
        top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
        other = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        bce = ctx.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), other)
        nat_probs = F.softmax(logits, dim=1)
        true_probs = nat_probs.gather(1, y.unsqueeze(1)).squeeze(1)
        kl = (nat_probs * (torch.log(nat_probs + 1e-12) - torch.log(adv_probs + 1e-12))).sum(dim=1)
        return bce + self.beta * (kl * (1.0000001 - true_probs)).mean()
