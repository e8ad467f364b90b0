"""Audit check ``constant-outputs``: points whose logits do not change anywhere in their eps-ball.

A model that ignores its input near the data (a lookup, a hard threshold) gives every attack nothing to
follow and looks perfectly robust. The check compares the outputs on each point with those on four
random points of its ball and flags the points where they are identical.
"""

from __future__ import annotations

from advkit.plugin import Check, Passes, finding


class ConstantOutputs(Check):
    """Points whose logits are the same at four random points of their eps-ball."""

    remedy = "black-box"
    tries = 4

    def cost(self, ctx) -> Passes:
        return Passes((self.tries + 1) * len(ctx.points), 0, self.tries + 1, 0)

    def run(self, ctx) -> dict:
        import torch

        base = ctx.outputs(ctx.x)
        same = torch.ones(len(base), dtype=torch.bool)
        for _ in range(self.tries):
            step = ctx.threat.eps * (2 * torch.rand_like(ctx.x) - 1) if ctx.threat.norm == "Linf" else 0 * ctx.x
            same &= (ctx.outputs((ctx.x + step).clamp(*ctx.threat.bounds)) == base).all(1)
        k, m = int(same.sum()), len(base)
        return finding(self, k == 0, f"{k} of {m} points have the same logits at {self.tries} random points of "
                       f"their ball", "outputs that never move give gradient attacks nothing to follow",
                       flagged=k, points=m)
