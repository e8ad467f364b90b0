"""PGD adversarial training (Madry et al., 2018): cross-entropy on PGD examples.

An *objective*: the examples come from the adversary point, by default the
engine's training PGD configured by this defense's ``steps``, ``step_size``
(eps/4 when omitted) and ``random_start``. ``clean_weight`` mixes in the clean
cross-entropy (``(1-w)·CE(adv) + w·CE(clean)``). Its cross-entropy terms go
through ``ctx.cross_entropy``, so ``--defense label-smoothing`` smooths them.
"""

from __future__ import annotations

from advkit.plugin import Defense
from advkit_training import _checks


class PGDAT(Defense):
    """PGD-AT (Madry et al. 2018): cross-entropy on PGD adversarial examples."""

    needs_adversary = True

    def __init__(self, steps: int = 10, step_size: float | None = None, random_start: bool = True,
                 clean_weight: float = 0.0):
        super().__init__(steps=steps, step_size=step_size, random_start=random_start, clean_weight=clean_weight)
        self.steps = _checks.steps("pgd-at.steps", steps)
        self.step_size = _checks.step_size("pgd-at.step_size", step_size)
        self.random_start = bool(random_start)
        self.clean_weight = _checks.fraction("pgd-at.clean_weight", clean_weight)

    def default_adversary(self) -> Defense:
        from advkit.plugin import PGDAdversary

        return PGDAdversary(self.steps, self.step_size, self.random_start)

    def loss(self, model, x, x_adv, y, ctx):
        adv = ctx.cross_entropy(model(x if x_adv is None else x_adv), y)
        if not self.clean_weight:
            return adv
        clean = ctx.cross_entropy(model(x), y)
        return (1 - self.clean_weight) * adv + self.clean_weight * clean
