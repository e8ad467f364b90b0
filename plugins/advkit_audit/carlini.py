"""Gradient-masking checks after Carlini et al. (2019), "On evaluating adversarial robustness".

1. :class:`EpsMonotone`: white-box accuracy does not rise with eps and reaches about 0 at a huge eps;
2. :class:`MoreSteps`: 10x the iterations and a restart are not weaker than the reference attack as run;
3. :class:`BlackBox`: the black-box reference breaks no more points than noise allows among those the
   strongest white-box run of the audit could not break (a one-sided binomial test, :func:`noise_limit`).

The attacks are the ones registered as the audit's references (``reference="white-box"`` /
``"black-box"``); the white-box one's iterations are the parameter it declares as ``iterations``.
"""

from __future__ import annotations

import math

from advkit.plugin import Check, Passes, finding

# On a sound model a random search still tips over a few borderline points that the strongest white-box run
# left: 0-3 of 27-83 (at most 5.6 %, 3 % pooled) on the bundled and the zoo's adversarially trained models,
# against 29 of 31 and 32 of 52 on masked ones. black-box-gap flags when Square's rate on those points is
# above NOISE_RATE at the CONFIDENCE level (docs/audit.md#black-box-gap).
NOISE_RATE = 0.05
CONFIDENCE = 0.95


def _large_eps(threat, shape) -> float:
    d = math.prod(shape)  # half the input range everywhere: enough to turn any image into flat grey
    return {"Linf": 0.5, "L2": 0.5 * math.sqrt(d), "L1": 0.5 * d}[threat.norm]


def _accuracy(res: dict, pts) -> float:
    return sum(res[i]["score"] for i in pts) / len(pts)


def _white(ctx) -> tuple[str, str | None, int | None]:
    name = ctx.reference("white-box")
    it = ctx.iterations(name)
    return name, it, (int(ctx.parameter(name, it)) if it else None)


def _times(ctx, name, runs: int, **params) -> Passes:
    per = ctx.declared(name, **params)
    return Passes(per.forward * runs * len(ctx.points), per.backward * runs * len(ctx.points))


class EpsMonotone(Check):
    """White-box accuracy falls as eps grows and reaches about 0 at a huge eps."""

    remedy = "more-iterations"

    def _budgets(self, ctx) -> list[float]:
        t = ctx.threat
        big = _large_eps(t, ctx.x.shape[1:])
        return sorted({min(t.eps * k, big) for k in (0.25, 0.5, 1.0, 2.0, 4.0)} | {big})

    def _params(self, ctx) -> tuple[str, dict]:
        name, it, steps = _white(ctx)
        return name, {**ctx.options(name), **({it: max(steps, 20)} if it else {})}

    def cost(self, ctx) -> Passes:
        name, params = self._params(ctx)
        return _times(ctx, name, len(self._budgets(ctx)), **params)

    def run(self, ctx) -> dict:
        name, params = self._params(ctx)
        budgets = self._budgets(ctx)
        accs = [_accuracy(ctx.attack(name, tag="eps", eps=e, **params), ctx.points) for e in budgets]
        tol = 1.0 / len(ctx.points) + 1e-9
        ok = not any(accs[i] > accs[i - 1] + tol for i in range(1, len(accs))) and accs[-1] <= 0.05
        return finding(self, ok, ", ".join(f"eps={e:.4g}: {100 * a:.1f}%" for e, a in zip(budgets, accs)),
                       "accuracy that rises with eps or stays high at a huge eps signals gradient masking or a "
                       "broken attack", points=len(ctx.points))


class MoreSteps(Check):
    """Ten times the iterations and a restart never help the model."""

    remedy = "more-iterations"

    def cost(self, ctx) -> Passes:
        return strongest_cost(ctx)

    def run(self, ctx) -> dict:
        name, it, steps = _white(ctx)
        if it is None:
            return finding(self, True, f"not checked: {name} declares no iterations parameter", applies=False)
        base_res, strong = strongest(ctx)
        m = len(ctx.points)
        acc_base = _accuracy(base_res, ctx.points)
        acc_strong = sum(min(r[i]["score"] for r in strong) for i in ctx.points) / m
        ok = acc_strong <= acc_base + 1.0 / m + 1e-9
        note = ""
        if ok and acc_base - acc_strong > 0.05:
            note = (f"; the attack as run is not converged ({name}-{10 * steps} is "
                    f"{100 * (acc_base - acc_strong):.1f} points stronger): report stronger attacks")
        return finding(self, ok, f"{name}-{steps}: {100 * acc_base:.1f}%, {name}-{10 * steps} x2 restarts: "
                       f"{100 * acc_strong:.1f}%{note}", "more iterations should never help the model: the attack "
                       "or the gradients are unreliable", points=m)


def strongest_cost(ctx) -> Passes:
    """The passes of :func:`strongest`, unless another check counted them already."""
    counted = ctx.memo.setdefault("costed", set())
    if "strongest" in counted:
        return Passes()
    counted.add("strongest")
    name, it, steps = _white(ctx)
    base = _times(ctx, name, 1, **ctx.options(name))
    return base + _times(ctx, name, 2, **{**ctx.options(name), it: 10 * steps}) if it else base


def strongest(ctx) -> tuple[dict, list[dict]]:
    """The reference attack as run, and two restarts with ten times its iterations (computed once per audit)."""
    if "strongest" not in ctx.memo:
        name, it, steps = _white(ctx)
        base = ctx.attack(name, tag=f"base:{steps}", **ctx.options(name))
        strong = [ctx.attack(name, tag=f"strong:{10 * steps}:{r}", **{**ctx.options(name), it: 10 * steps})
                  for r in range(2)] if it else []
        ctx.memo["strongest"] = (base, strong)
    return ctx.memo["strongest"]


class BlackBox(Check):
    """The black-box reference breaks (beyond noise) no point the strongest white-box run left."""

    remedy = "bpda"

    def cost(self, ctx) -> Passes:
        black = ctx.reference("black-box")
        return _times(ctx, black, 1, **ctx.options(black)) + strongest_cost(ctx)

    def run(self, ctx) -> dict:
        white, _, steps = _white(ctx)
        black = ctx.reference("black-box")
        base, strong = strongest(ctx)
        survivors = [i for i in ctx.points if all(r[i]["score"] >= 0.5 for r in (base, *strong))]
        res = ctx.attack(black, tag="black-box", points=survivors, **ctx.options(black)) if survivors else {}
        extra = sum(1 for i in survivors if res[i]["score"] < 0.5)
        allowed = noise_limit(len(survivors))
        label = f"the strongest {white} run ({white}-{steps}" + (f" and {white}-{10 * steps} x2 restarts)" if strong else ")")
        return finding(self, extra <= allowed, f"{black} broke {extra} of the {len(survivors)} points {label} could "
                       f"not break (flagged above {allowed}: a rate above {100 * NOISE_RATE:.0f} % at "
                       f"{100 * CONFIDENCE:.0f} % confidence)",
                       "a black-box attack beating gradient attacks is the classic sign of gradient masking",
                       flagged=extra, points=len(survivors))


def noise_limit(m: int, rate: float = NOISE_RATE, confidence: float = CONFIDENCE) -> int:
    """The most breaks among ``m`` points that a break rate of ``rate`` explains: the largest ``k`` with
    P(Binomial(m, rate) >= k) >= 1 - confidence (one-sided exact test; advkit's own, no statistics library
    needed). Above it, the rate is above ``rate`` at that confidence."""
    if m == 0:
        return 0
    log = [math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) + k * math.log(rate)
           + (m - k) * math.log1p(-rate) for k in range(m + 1)]
    tail = 0.0
    for k in range(m, -1, -1):  # tail = P(X >= k), accumulated from the top
        tail += math.exp(log[k])
        if tail >= 1 - confidence - 1e-12:  # (float rounding at m = 1)
            return k
    return 0
