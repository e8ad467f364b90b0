"""AutoAttack's checks on a model's outputs (after ``autoattack/checks.py``), on the audit's sample.

Our own code: three forward passes, no attack.
"""

from __future__ import annotations

import torch

from advkit.plugin import Check, Passes, finding


class ProbabilityOutputs(Check):
    """Outputs that are probabilities (non-negative rows summing to 1) rather than logits."""

    remedy = "logits"

    def cost(self, ctx) -> Passes:
        return Passes(len(ctx.points), 0, 1, 0)

    def run(self, ctx) -> dict:
        out = ctx.outputs(ctx.x)
        rows = ((out >= 0).all(1) & (out <= 1).all(1) & ((out.sum(1) - 1).abs() < 1e-4))
        k = int(rows.sum())
        return finding(self, k == 0, f"{k} of {len(out)} output rows are probability distributions (in [0, 1], "
                       f"summing to 1)", "attacks need logits: a softmax output saturates, and the cross-entropy of "
                       "probabilities has vanishing gradients (the logits are recovered as log-probabilities under "
                       "--adaptive)", flagged=k, points=len(out))


class BatchDependent(Check):
    """Outputs for a point that change with the other points of its batch."""

    def cost(self, ctx) -> Passes:
        return Passes(2 * len(ctx.points), 0, 3, 0)

    def run(self, ctx) -> dict:
        if ctx.stochastic or len(ctx.points) < 2:
            return finding(self, True, "not checked: a random model's outputs differ between passes anyway"
                           if ctx.stochastic else "not checked: one point", applies=False)
        half = len(ctx.x) // 2
        whole = ctx.outputs(ctx.x)
        apart = torch.cat([ctx.outputs(ctx.x[:half]), ctx.outputs(ctx.x[half:])])
        scale = float(whole.abs().amax().clamp(min=1.0))
        moved = ((whole - apart).abs().amax(1) > 1e-3 * scale)
        k = int(moved.sum())
        return finding(self, k == 0, f"{k} of {len(whole)} points change their outputs when the batch is split",
                       "batch statistics at evaluation (a normalization layer in training mode?) make every "
                       "per-point result depend on the batching", flagged=k, points=len(whole))


class FewClasses(Check):
    """Fewer than 4 classes: the DLR loss and the targeted attacks of AutoAttack need more."""

    def cost(self, ctx) -> Passes:  # one image through the model, for the number of outputs
        return Passes(1, 0, 1, 0)

    def run(self, ctx) -> dict:
        c = ctx.num_classes
        return finding(self, c >= 4, f"{c} classes", "the DLR loss uses the three largest logits and APGD-T/FAB-T "
                       "target up to 9 other classes: with fewer than 4 classes use the cross-entropy and "
                       "untargeted attacks only")
