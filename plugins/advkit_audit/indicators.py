"""The indicators of attack failure (Pintor et al., NeurIPS 2022), computed per point on the audit's sample.

Our own implementation of the published definitions. Silent success, incomplete
optimization and non-converging restarts read the trajectory of every point under
the white-box reference attack run with ``TRACE_STEPS`` iterations (the margin,
true logit minus the best other, of every forward pass the attack made on an input
in the point's ball: :meth:`AuditContext.trace`), three times with different
seeds; the runs are shared between the three checks. A check flags when more
than ``share`` of the points it looked at (and at least ``least`` of them) show
the indicator. Transfer failure attacks the run's ``--surrogate`` and judges the examples on the
model (:meth:`AuditContext.transfer`); without a surrogate it does not apply.
"""

from __future__ import annotations

import torch

from advkit.plugin import Check, Passes, finding

TRACE_STEPS = 100
RESTARTS = 3


def _flag(k: int, m: int, share: float, least: int) -> bool:
    return k > share * m and k >= least


def _trace_params(ctx) -> tuple[str, dict]:
    name = ctx.reference("white-box")
    it = ctx.iterations(name)
    return name, {**ctx.options(name), **({it: TRACE_STEPS} if it else {})}


def traced(ctx, r: int):
    """Run ``r`` of the traced reference attack (results, margins), computed once per audit."""
    key = ("trace", r)
    if key not in ctx.memo:
        name, params = _trace_params(ctx)
        ctx.memo[key] = ctx.trace(name, tag=f"trace:{r}", **params)
    return ctx.memo[key]


def trace_cost(ctx, runs) -> Passes:
    """The passes of the traced runs ``runs`` not yet counted by another check."""
    counted = ctx.memo.setdefault("costed", set())
    name, params = _trace_params(ctx)
    per = ctx.declared(name, **params)
    total = Passes()
    for r in runs:
        if ("trace", r) not in counted:
            counted.add(("trace", r))
            total = total + Passes(per.forward * len(ctx.points), per.backward * len(ctx.points))
    return total


def _held(res: dict, i: int) -> bool:
    return res[i]["score"] >= 0.5  # correct on most draws


class UnavailableGradients(Check):
    """Points whose input gradient (of the cross-entropy of the model attacks see) is all zero or NaN."""

    remedy = "bpda"

    def cost(self, ctx) -> Passes:
        m = len(ctx.points)
        return Passes(m * ctx.eot + m, m * ctx.eot, ctx.eot + 1, ctx.eot)

    def run(self, ctx) -> dict:
        g = ctx.input_gradients(ctx.x, ctx.y)
        zero, nan = g.abs().nan_to_num(0).amax(1) == 0, torch.isnan(g).any(1)
        k, m = int((zero | nan).sum()), len(g)
        saturated = int((zero & (ctx.outputs(ctx.x).float().softmax(1).amax(1) == 1.0)).sum())
        if 2 * saturated > k:  # mostly saturated outputs (logits so large that the softmax rounds to one-hot)
            return finding(self, not _flag(k, m, 0.02, 2), f"{int(zero.sum())} of {m} points have an all-zero "
                           f"input gradient ({saturated} of them with a saturated softmax: the top probability "
                           f"is 1 in float32), {int(nan.sum())} a NaN one", "the cross-entropy of saturated "
                           "logits has no gradient: attack the logits rescaled, or with a margin loss",
                           flagged=k, points=m, remedy="rescale")
        return finding(self, not _flag(k, m, 0.02, 2), f"{int(zero.sum())} of {m} points have an all-zero input "
                       f"gradient, {int(nan.sum())} a NaN one", "gradient attacks cannot move these points: "
                       "shattered gradients (non-differentiable or quantizing layers) or saturated outputs; "
                       "differentiate through an approximation (BPDA) or use black-box attacks",
                       flagged=k, points=m)


class UnstablePredictions(Check):
    """Points whose prediction changes between passes on the same input, or under noise a thousandth of eps."""

    remedy = "eot"
    repeats = 8

    def cost(self, ctx) -> Passes:  # the unperturbed pass and the repeats, one pass per image each
        return Passes((self.repeats + 1) * len(ctx.points), 0, self.repeats + 1, 0)

    def run(self, ctx) -> dict:
        x = ctx.x
        d = x[0].numel()
        radius = 1e-3 * ctx.threat.eps * (1.0 if ctx.threat.norm == "Linf" else d ** -0.5)
        base = ctx.predictions(x)
        moved = torch.zeros(len(x), dtype=torch.bool)
        for _ in range(self.repeats):
            noisy = (x + radius * (2 * torch.rand_like(x) - 1)).clamp(*ctx.threat.bounds)
            moved |= ctx.predictions(noisy) != base
        k, m = int(moved.sum()), len(x)
        applied = f"; the run already attacks through EOT over {ctx.eot} samples" if ctx.stochastic else ""
        return finding(self, not _flag(k, m, 0.02, 2), f"{k} of {m} points change their prediction between "
                       f"passes or under noise of {radius:.2g}{applied}", "a random or discontinuous model: one "
                       "forward pass says little; attack the expectation (EOT) and judge over several draws",
                       flagged=k, points=m)


class SilentSuccess(Check):
    """Points an attack iterate misclassified whose returned example is classified correctly."""

    remedy = "best-iterate"

    def cost(self, ctx) -> Passes:
        return trace_cost(ctx, [0])

    def run(self, ctx) -> dict:
        res, margins = traced(ctx, 0)
        silent = [i for i in ctx.points if margins[i] and min(margins[i]) < 0 and _held(res, i)]
        k, m = len(silent), len(ctx.points)
        name = ctx.reference("white-box")
        return finding(self, not _flag(k, m, 0.02, 2), f"{name}-{TRACE_STEPS} passed through an adversarial "
                       f"input and returned a correctly classified one on {k} of {m} points",
                       "the attack returns its last iterate: keep the best one (APGD and AutoAttack do)",
                       flagged=k, points=m)


class IncompleteOptimization(Check):
    """Unbroken points whose best margin still fell in the last tenth of the attack's iterations."""

    remedy = "more-iterations"

    def cost(self, ctx) -> Passes:
        return trace_cost(ctx, [0])

    def run(self, ctx) -> dict:
        res, margins = traced(ctx, 0)
        held = [i for i in ctx.points if _held(res, i) and len(margins[i]) >= 10]
        late = []
        for i in held:
            best = torch.tensor(margins[i]).cummin(0).values
            tail = max(1, len(best) // 10)
            gain, total = float(best[-tail - 1] - best[-1]), float(best[0] - best[-1])
            if gain > max(0.05 * total, 1e-4):
                late.append(i)
        k, m = len(late), len(held)
        return finding(self, not _flag(k, m, 0.10, 3), f"on {k} of the {m} points {ctx.reference('white-box')}-"
                       f"{TRACE_STEPS} left unbroken, the margin was still falling in its last tenth",
                       "the attack had not converged: more iterations (and a smaller step) would break more",
                       flagged=k, points=m)


class NonConvergingRestarts(Check):
    """Points that some restarts of the reference attack break and others do not."""

    remedy = "more-restarts"

    def cost(self, ctx) -> Passes:
        return trace_cost(ctx, range(RESTARTS))

    def run(self, ctx) -> dict:
        runs = [traced(ctx, r)[0] for r in range(RESTARTS)]
        split = [i for i in ctx.points if len({_held(res, i) for res in runs}) > 1]
        k, m = len(split), len(ctx.points)
        return finding(self, not _flag(k, m, 0.05, 3), f"{RESTARTS} seeded runs of {ctx.reference('white-box')}-"
                       f"{TRACE_STEPS} disagree on {k} of {m} points", "the outcome depends on the random start: "
                       "run more restarts and keep the worst case", flagged=k, points=m)


class TransferFailure(Check):
    """Points whose transfer attack fooled the surrogate (--surrogate) but not the model."""

    remedy = "bpda"

    def cost(self, ctx) -> Passes:
        if ctx.surrogate is None:
            return Passes()
        name, params = _trace_params(ctx)
        per, m = ctx.declared(name, **params), len(ctx.points)  # declared counts EOT: the surrogate draws once
        return Passes(per.forward // ctx.eot * m + 2 * m, per.backward // ctx.eot * m)  # and judges clean and adv

    def run(self, ctx) -> dict:
        if ctx.surrogate is None:
            return finding(self, True, "not checked: no surrogate model (--surrogate), so no attack transfers",
                           applies=False)
        name, params = _trace_params(ctx)
        res = ctx.transfer(name, tag="transfer", **params)
        right = [i for i in ctx.points if res[i]["surrogate_correct"]]  # a clean mistake is no transfer
        fooled = [i for i in right if res[i]["fooled_surrogate"]]
        failed = [i for i in fooled if _held(res, i)]
        k, m = len(failed), len(ctx.points)
        return finding(self, not _flag(k, m, 0.10, 3), f"{name}-{TRACE_STEPS} on the surrogate fooled it on "
                       f"{len(fooled)} of the {len(right)} points it classifies correctly (of {m}); on {k} of them "
                       "the model still classified the example correctly", "the flag concerns the surrogate, not "
                       "the run's own attacks: it is too unlike the model for a transfer attack (--adaptive "
                       "transfer) to measure it; attack the model's outputs through the surrogate's gradient "
                       "(BPDA), or choose a closer surrogate", flagged=k, points=m)
