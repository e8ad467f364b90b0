"""Label smoothing as a modifier that composes with any objective.

It owns no point: its ``setup`` sets ``ctx.label_smoothing``, which every
objective applies to its cross-entropy terms through ``ctx.cross_entropy``
(PGD-AT: CE on the adversarial and, with ``clean_weight``, clean examples;
TRADES: the natural CE; MART: the CE part of its boosted CE). Alone it smooths
plain training's cross-entropy (on the adversarial batch when an adversary
defense such as ``mixed`` runs). ``--defense pgd-at --defense label-smoothing``
is PGD-AT with smoothed labels.
"""

from __future__ import annotations

from advkit.plugin import Defense, UserError
from advkit_training import _checks


class LabelSmoothing(Defense):
    """Cross-entropy against smoothed labels in whatever objective trains (a modifier, no point of its own)."""

    def __init__(self, smoothing: float = 0.1):
        super().__init__(smoothing=smoothing)
        self.smoothing = _checks.fraction("label-smoothing.smoothing", smoothing, upper_open=True)

    def setup(self, model, data, ctx):
        if ctx.label_smoothing:
            raise UserError("label smoothing is set twice; keep one --defense label-smoothing")
        ctx.label_smoothing = self.smoothing
