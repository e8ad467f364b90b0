"""Label smoothing as a training objective.

Cross-entropy against smoothed targets, on the adversarial batch when an
adversary defense runs (``--defense mixed --defense label-smoothing``) and on
the clean batch otherwise. It owns the *objective* point, so it cannot join
another objective; ``pgd-at`` and ``trades`` take a ``smoothing`` parameter
for that.
"""

from __future__ import annotations

from advkit.defense import Defense
from advkit_training import _checks


class LabelSmoothing(Defense):
    """Cross-entropy with smoothed labels (on adversarial examples when an adversary runs)."""

    def __init__(self, smoothing: float = 0.1):
        super().__init__(smoothing=smoothing)
        self.smoothing = _checks.fraction("label-smoothing.smoothing", smoothing, upper_open=True)

    def loss(self, model, x, x_adv, y, ctx):
        import torch.nn.functional as F

        return F.cross_entropy(model(x if x_adv is None else x_adv), y, label_smoothing=self.smoothing)
