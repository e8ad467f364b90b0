"""TRADES (Zhang et al., 2019): CE(clean) + beta · KL(p(x) || p(x_adv)).

An *objective* whose adversary maximises the KL term (:meth:`attack_loss`),
so any adversary defense (PGD, PART) runs on the TRADES loss. The default
adversary is the engine's training PGD started, as in the reference code,
from ``x + 0.001·N(0, 1)``. The natural cross-entropy goes through
``ctx.cross_entropy`` (``--defense label-smoothing`` smooths it).
"""

from __future__ import annotations

from advkit.plugin import Defense
from advkit_training import _checks


class TRADES(Defense):
    """TRADES (Zhang et al. 2019): clean CE plus beta times KL(clean || adversarial)."""

    needs_adversary = True

    def __init__(self, beta: float = 6.0, steps: int = 10, step_size: float | None = None):
        super().__init__(beta=beta, steps=steps, step_size=step_size)
        self.beta = _checks.nonneg("trades.beta", beta)
        self.steps = _checks.steps("trades.steps", steps)
        self.step_size = _checks.step_size("trades.step_size", step_size)

    def default_adversary(self) -> Defense:
        from advkit.plugin import PGDAdversary

        return PGDAdversary(self.steps, self.step_size, start="normal", start_std=0.001)

    def attack_loss(self, logits_adv, logits_clean, y):
        import torch.nn.functional as F

        if logits_clean is None:  # an adversary that does not pass clean logits
            return F.cross_entropy(logits_adv, y)
        return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="sum")

    def loss(self, model, x, x_adv, y, ctx):
        import torch.nn.functional as F

        logits = model(x)
        natural = ctx.cross_entropy(logits, y)
        if x_adv is None:
            return natural
        logits_adv = model(x_adv)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return natural + self.beta * robust
