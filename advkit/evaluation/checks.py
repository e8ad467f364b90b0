"""Sanity checks for gradient masking, after Carlini et al. (2019), "On evaluating adversarial robustness".

Each check returns ``{"check", "passed", "detail", "suggests"}``:

1. ``eps-monotone``: PGD accuracy does not rise with eps and reaches about 0 at a large eps;
2. ``more-steps``: PGD with 10x the steps and a restart is not weaker than the default PGD;
3. ``black-box``: a black-box attack (square) breaks no point that the white-box PGD could not;
4. ``gradients``: input gradients are neither all zero nor NaN.

They run on at most ``limit`` clean-correct points, through the same seeded,
resumable engine as the evaluation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from advkit.attack import create_attack
from advkit.errors import UserError
from advkit.plugins import registry


def reference_attack(role: str) -> str:
    """The attack registered as the audit's ``role`` reference (``"white-box"`` or ``"black-box"``)."""
    found = registry("attack").with_capability("reference", role)
    if not found:
        raise UserError(f"--audit needs a {role} reference attack and no plugin registers one")
    return found[0].name


def _large_eps(threat, shape) -> float:
    # Half the input range everywhere: enough to turn any image into flat grey.
    d = math.prod(shape)
    return {"Linf": 0.5, "L2": 0.5 * math.sqrt(d), "L1": 0.5 * d}[threat.norm]


def run_audit(engine, model, eval_model, threat, correct, robust, results, attack_opts, stochastic, n, limit: int = 200):
    pts = correct[:limit]
    if not pts:
        return [{"check": "audit", "passed": False, "detail": "no clean-correct point to audit", "suggests": "check the model and data"}]
    m = len(pts)
    white, black = reference_attack("white-box"), reference_attack("black-box")
    pgd_opts = dict(attack_opts.get(white, {}))
    base_steps = int(pgd_opts.pop("steps", 10))
    checks = []

    def pgd_acc(stage, t, steps, restarts=1):
        broken: set[int] = set()
        for r in range(restarts):
            atk = create_attack(white, eval_model, t, steps=steps, **pgd_opts)
            saved, engine.threat = engine.threat, t
            try:
                res, _ = engine.attack(f"audit:{stage}:{t.eps:.8g}:{steps}:{r}", atk, pts)
            finally:
                engine.threat = saved
            broken |= {i for i, v in res.items() if v["broken"]}
        return (m - len(broken)) / m, broken

    # 1. accuracy vs eps
    big = _large_eps(threat, engine.x.shape[1:])
    scales = [0.25, 0.5, 1.0, 2.0, 4.0]
    budgets = sorted({min(threat.eps * s, big) for s in scales} | {big})
    accs = [pgd_acc("eps", threat.with_eps(e), max(base_steps, 20))[0] for e in budgets]
    tol = 1.0 / m + 1e-9
    rises = [i for i in range(1, len(accs)) if accs[i] > accs[i - 1] + tol]
    ok = not rises and accs[-1] <= 0.05
    detail = ", ".join(f"eps={e:.4g}: {100 * a:.1f}%" for e, a in zip(budgets, accs))
    checks.append({
        "check": "eps-monotone", "passed": ok, "detail": detail,
        "suggests": "" if ok else "accuracy that rises with eps or stays high at a huge eps signals gradient masking or a broken attack",
    })

    # 2. more steps and a restart
    acc_base, broken_base = pgd_acc("base", threat, base_steps)
    acc_strong, _ = pgd_acc("strong", threat, 10 * base_steps, restarts=2)
    ok = acc_strong <= acc_base + tol
    note = ""
    if ok and acc_base - acc_strong > 0.05:
        note = f"; the default PGD is not converged (PGD-{10 * base_steps} is {100 * (acc_base - acc_strong):.1f} points stronger): report stronger attacks"
    checks.append({
        "check": "more-steps", "passed": ok,
        "detail": f"PGD-{base_steps}: {100 * acc_base:.1f}%, PGD-{10 * base_steps} x2 restarts: {100 * acc_strong:.1f}%{note}",
        "suggests": "" if ok else "more iterations should never help the model: the attack or the gradients are unreliable",
    })

    # 3. black-box vs white-box
    survivors = [i for i in pts if i not in broken_base]
    if survivors:
        atk = create_attack(black, eval_model, threat, **attack_opts.get(black, {}))
        res, _ = engine.attack(f"audit:{black}", atk, survivors)
        extra = sum(1 for v in res.values() if v["broken"])
    else:
        extra = 0
    ok = extra <= max(1, int(0.01 * m))
    checks.append({
        "check": "black-box", "passed": ok,
        "detail": f"{black} broke {extra} of the {len(survivors)} points PGD-{base_steps} could not break",
        "suggests": "" if ok else "a black-box attack beating gradient attacks is the classic sign of gradient masking",
    })

    # 4. input gradients
    idx = pts[: min(m, 64)]
    x = engine.x[idx].to(engine.device).clone().requires_grad_(True)
    y = engine.y[idx].to(engine.device)
    with torch.enable_grad():
        loss = F.cross_entropy(eval_model(x), y)
        (g,) = torch.autograd.grad(loss, x)
    flat = g.reshape(len(idx), -1)
    nan = bool(torch.isnan(flat).any())
    zero = float((flat.abs().amax(1) == 0).float().mean())
    ok = not nan and zero <= 0.5
    checks.append({
        "check": "gradients", "passed": ok,
        "detail": f"{100 * zero:.0f}% of points have an all-zero input gradient; NaN: {'yes' if nan else 'no'}",
        "suggests": "" if ok else "zero or NaN gradients make gradient attacks fail silently (shattered gradients); use BPDA or black-box attacks",
    })
    return checks
