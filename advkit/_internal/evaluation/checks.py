"""Sanity checks for gradient masking, after Carlini et al. (2019), "On evaluating adversarial robustness".

One function per check, each returning ``{"check", "passed", "detail", "suggests"}``
with one message (the shape of AutoAttack's ``checks.py``):

1. :func:`check_eps_monotone`: white-box accuracy does not rise with eps and reaches about 0 at a huge eps;
2. :func:`check_more_steps`: 10x the steps and a restart is not weaker than the default white-box attack;
3. :func:`check_black_box`: the black-box reference breaks no more points than noise allows among those
   the *strongest* white-box run of the audit could not break;
4. :func:`check_gradients`: input gradients are neither all zero nor NaN.

The audit's reference attacks are the ones registered with ``reference="white-box"`` /
``"black-box"``. Checks run on at most ``limit`` clean-correct points, through the same
seeded, resumable runner as the evaluation. :func:`gradient_warning` is the cheap form
of check 4 that every run does on its first batch.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from advkit._internal.errors import UserError
from advkit._internal.evaluation.runner import swapped_threat
from advkit._internal.plugins import registry


def reference_attack(role: str) -> str:
    """The attack registered as the audit's ``role`` reference (``"white-box"`` or ``"black-box"``)."""
    found = registry("attack").with_capability("reference", role)
    if not found:
        raise UserError(f"--audit needs a {role} reference attack and no plugin registers one")
    return found[0].name


def _check(name: str, passed: bool, detail: str, suggests: str) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail, "suggests": "" if passed else suggests}


def gradient_health(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, bool]:
    """Share of points whose input gradient of the cross-entropy is all zero, and whether any is NaN."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    if g is None:  # the output does not depend on the input at all (detached)
        return 1.0, False
    flat = g.reshape(len(x), -1)
    return float((flat.abs().amax(1) == 0).float().mean()), bool(torch.isnan(flat).any())


def gradient_warning(model, x: torch.Tensor, y: torch.Tensor) -> None:
    """Warn when the first batch's input gradients are mostly zero or NaN (gradient attacks would fail silently)."""
    zero, nan = gradient_health(model, x, y)
    if nan or zero > 0.5:
        what = "NaN" if nan else f"all zero for {100 * zero:.0f}% of the first {len(x)} points"
        warnings.warn(f"the model's input gradients are {what}: gradient attacks will fail silently and "
                      f"overstate robustness (masked or shattered gradients); run with --audit, "
                      f"and add a black-box attack", stacklevel=2)


def _large_eps(threat, shape) -> float:
    # Half the input range everywhere: enough to turn any image into flat grey.
    d = math.prod(shape)
    return {"Linf": 0.5, "L2": 0.5 * math.sqrt(d), "L1": 0.5 * d}[threat.norm]


def _broken(s, name: str, pts, threat, tag: str, **params) -> set[int]:
    """Points of ``pts`` that the attack ``name`` breaks under ``threat`` (a random model: on most draws)."""
    atk = s.build(name, threat, **params)
    with swapped_threat(s.runner, threat):
        res, _, _ = s.runner.attack(f"audit:{tag}:{threat.eps:.8g}", atk, pts,
                                 label=f"audit: {atk.name} ({tag}, {threat})")
    return {i for i, v in res.items() if v["score"] < 0.5}


def check_eps_monotone(s, pts, white: str, steps: int) -> dict:
    threat = s.inputs.threat
    big = _large_eps(threat, s.inputs.x.shape[1:])
    budgets = sorted({min(threat.eps * k, big) for k in (0.25, 0.5, 1.0, 2.0, 4.0)} | {big})
    accs = [1 - len(_broken(s, white, pts, threat.with_eps(e), f"eps:{steps}:0", steps=steps)) / len(pts)
            for e in budgets]
    tol = 1.0 / len(pts) + 1e-9
    ok = not any(accs[i] > accs[i - 1] + tol for i in range(1, len(accs))) and accs[-1] <= 0.05
    return _check("eps-monotone", ok, ", ".join(f"eps={e:.4g}: {100 * a:.1f}%" for e, a in zip(budgets, accs)),
                  "accuracy that rises with eps or stays high at a huge eps signals gradient masking or a broken attack")


def check_more_steps(s, pts, white: str, steps: int) -> tuple[dict, set[int]]:
    """Also returns the points the strongest white-box run broke (the default run's and the strong runs')."""
    threat, m = s.inputs.threat, len(pts)
    base = _broken(s, white, pts, threat, f"base:{steps}:0", steps=steps)
    strong: set[int] = set()
    for r in range(2):
        strong |= _broken(s, white, pts, threat, f"strong:{10 * steps}:{r}", steps=10 * steps)
    acc_base, acc_strong = 1 - len(base) / m, 1 - len(strong) / m
    ok = acc_strong <= acc_base + 1.0 / m + 1e-9
    note = ""
    if ok and acc_base - acc_strong > 0.05:
        note = (f"; the default attack is not converged ({white}-{10 * steps} is "
                f"{100 * (acc_base - acc_strong):.1f} points stronger): report stronger attacks")
    detail = f"{white}-{steps}: {100 * acc_base:.1f}%, {white}-{10 * steps} x2 restarts: {100 * acc_strong:.1f}%{note}"
    return (_check("more-steps", ok, detail, "more iterations should never help the model: "
                   "the attack or the gradients are unreliable"), base | strong)


def check_black_box(s, pts, black: str, white_broken: set[int], white_label: str) -> dict:
    survivors = [i for i in pts if i not in white_broken]
    extra = len(_broken(s, black, survivors, s.inputs.threat, "black-box")) if survivors else 0
    allowed = max(2, math.ceil(0.02 * len(pts)))  # borderline points a random search may tip over
    return _check("black-box", extra <= allowed,
                  f"{black} broke {extra} of the {len(survivors)} points {white_label} could not break "
                  f"(flagged above {allowed})",
                  "a black-box attack beating gradient attacks is the classic sign of gradient masking")


def check_gradients(s, pts) -> dict:
    idx = pts[:64]
    x, y = s.inputs.x[idx].to(s.runner.device), s.inputs.y[idx].to(s.runner.device)
    zero, nan = gradient_health(s.eval_model, x, y)
    return _check("gradients", not nan and zero <= 0.5,
                  f"{100 * zero:.0f}% of points have an all-zero input gradient; NaN: {'yes' if nan else 'no'}",
                  "zero or NaN gradients make gradient attacks fail silently (shattered gradients); "
                  "use BPDA or black-box attacks")


def run_audit(s, limit: int = 200) -> list[dict]:
    """The four checks on the first ``limit`` clean-correct points of session ``s``."""
    pts = s.correct[:limit]
    if not pts:
        return [_check("audit", False, "no clean-correct point to audit", "check the model and data")]
    white, black = reference_attack("white-box"), reference_attack("black-box")
    steps = int(s.inputs.attack_opts.get(white, {}).get("steps", 10))
    monotone = check_eps_monotone(s, pts, white, max(steps, 20))
    more, strongest = check_more_steps(s, pts, white, steps)
    label = f"the strongest {white} run ({white}-{10 * steps} x2 restarts and {white}-{steps})"
    return [monotone, more, check_black_box(s, pts, black, strongest, label), check_gradients(s, pts)]
