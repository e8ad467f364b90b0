"""``fast``: a cascade of AutoAttack's own attacks, scheduled to reach its worst case at a fraction of its passes.

The attacks are fra31's APGD-CE, APGD-T and FAB-T (from ``autoattack`` when
installed, else ``pyautoattack``: the same code), unchanged; the schedule is
advkit's own, designed from measurements (docs/benchmarks.md, "fast"). Each stage
runs only on the points no earlier stage broke, so a point costs nothing once
broken (per-point early stop), and the budgets follow the number of classes K and
the norm; nothing is left for the user to tune. With k = min(3, K-1) and
m = min(9, K-1) (AutoAttack's number of APGD-T targets):

1. *sieve*: APGD-T on the runner-up class, 3 iterations, then 10: most points a
   model does not defend leave after a dozen passes (AutoAttack's first attack
   spends two hundred on each);
2. *main*: APGD-T on all m targets, 20 iterations each (the class that breaks a
   point is not always among the top three of its clean logits), then APGD-CE,
   50 iterations; under L2, FAB-T on the top k targets (100 iterations) before
   APGD-CE: APGD alone falls short of AutoAttack there;
3. *extra*: the survivors closest to the boundary (best targeted DLR loss of
   stage 2 above -0.1; at most a quarter of the survivors) get APGD-CE and
   APGD-T on the top k targets, 100 iterations each, from new random starts.

Published ideas behind it: the minimum-margin attack's targeted top-k runs (Gao
et al. 2022) and A3's spending of the budget where points can still be broken
(Liu et al. 2022). Its result is not standard AutoAttack's; ``--confirm`` checks
a sample of the points it leaves unbroken with standard AutoAttack.
"""

from __future__ import annotations

import importlib
import math

import torch

from advkit.plugin import Stage, UserError, activity

TAU, EXTRA_SHARE = 0.1, 0.25  # "close to the boundary": best targeted DLR loss above -TAU; at most this share


def library():
    """The fra31 attack modules: the official ``autoattack`` when installed, else ``pyautoattack``."""
    for name in ("autoattack", "pyautoattack"):
        try:
            apgd = importlib.import_module(f"{name}.autopgd_base")
            fab = importlib.import_module(f"{name}.fab_pt")
            return name, apgd, fab
        except ImportError:
            continue
    raise UserError("the fast attack needs fra31's AutoAttack code: pip install pyautoattack")


def schedule(n_classes: int, norm: str) -> list[tuple[str, str, dict]]:
    """``(label, attack kind, settings)`` of every stage, from the number of classes and the norm."""
    if norm not in ("Linf", "L2"):
        raise UserError(f"the fast attack supports Linf and L2 threat models, not {norm}")
    k, m = min(3, n_classes - 1), min(9, n_classes - 1)
    main_t = m if norm == "Linf" else k
    stages = [("sieve: APGD-T 1x3", "apgd-t", {"n_iter": 3, "n_target_classes": 1}),
              ("sieve: APGD-T 1x10", "apgd-t", {"n_iter": 10, "n_target_classes": 1}),
              (f"main: APGD-T {main_t}x20", "apgd-t", {"n_iter": 20, "n_target_classes": main_t, "track": True})]
    if norm == "L2":
        stages.append((f"main: FAB-T {k}x100", "fab-t", {"n_iter": 100, "n_target_classes": k}))
    stages += [("main: APGD-CE 50", "apgd-ce", {"n_iter": 50}),
               ("extra: APGD-CE 100", "apgd-ce", {"n_iter": 100, "seed": 1, "near": True}),
               (f"extra: APGD-T {k}x100", "apgd-t", {"n_iter": 100, "n_target_classes": k, "seed": 1, "near": True})]
    return stages


def plan(n_classes: int, norm: str) -> list[Stage]:
    """Worst-case passes per point of each stage: APGD one forward and one backward per iteration and target
    (one forward more to start); FAB-T two forwards and one backward per iteration, three forwards more.
    The extra stages work on at most a quarter of the points still live when they start."""
    out = []
    for label, kind, s in schedule(n_classes, norm):
        it, t = s["n_iter"], s.get("n_target_classes", 1)
        f, b = ((2 * it + 3) * t, it * t) if kind == "fab-t" else ((it + 1) * t, it * t)
        out.append(Stage(label, f, b, share=EXTRA_SHARE if s.get("near") else 1.0))
    return out


def build(apgd, fab, model, kind: str, norm: str, eps: float, seed: int, settings: dict, device):
    """One configured library attack (fra31 defaults otherwise: rho 0.75, one restart, no EOT)."""
    s = seed + settings.get("seed", 0)
    if kind == "apgd-ce":
        return apgd.APGDAttack(model, n_iter=settings["n_iter"], norm=norm, n_restarts=1, eps=eps, seed=s,
                               loss="ce", eot_iter=1, rho=0.75, device=device)
    if kind == "apgd-t":
        return apgd.APGDAttack_targeted(model, n_iter=settings["n_iter"], norm=norm, n_restarts=1, eps=eps, seed=s,
                                        n_target_classes=settings["n_target_classes"], eot_iter=1, rho=0.75,
                                        device=device)
    return fab.FABAttack_PT(model, norm=norm, n_restarts=1, n_iter=settings["n_iter"], eps=eps, seed=s,
                            targeted=True, n_target_classes=settings["n_target_classes"], device=device)


class Cascade:
    """The points of one batch: which are still robust, their adversarial points, how close each came."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        with torch.no_grad():
            self.robust = model(x).argmax(1) == y  # AutoAttack attacks only the correctly classified points
        self.x_adv = x.clone()
        self.score = torch.full((len(x),), -math.inf, device=x.device)  # best targeted DLR loss (0: boundary)

    def near(self) -> torch.Tensor:
        """Survivors whose best targeted DLR loss is above -TAU, at most EXTRA_SHARE of the survivors."""
        score = torch.where(self.robust, self.score, torch.full_like(self.score, -math.inf))
        cap = math.ceil(EXTRA_SHARE * int(self.robust.sum()))
        chosen = torch.zeros_like(self.robust)
        chosen[score.topk(min(cap, len(score))).indices] = True
        return chosen & (score > -TAU) & self.robust

    def run(self, attack, only: torch.Tensor | None, track: bool) -> None:
        """``attack.perturb`` on the robust points (among ``only``); keep what it breaks (and its losses)."""
        ids = (self.robust if only is None else self.robust & only).nonzero().flatten()
        if not len(ids):
            return
        runs = _record_losses(attack) if track else None
        adv = attack.perturb(self.x[ids], self.y[ids])
        with torch.no_grad():
            broke = self.model(adv).argmax(1) != self.y[ids]
        self.robust[ids[broke]] = False
        self.x_adv[ids[broke]] = adv[broke].to(self.x_adv.dtype)
        for inputs, loss in runs or ():
            pos = ids[_rows(self.x[ids], inputs)]
            self.score[pos] = torch.maximum(self.score[pos], loss.to(self.score.device))


def _record_losses(attack) -> list:
    """Keep ``(inputs, best loss per input)`` of each of APGD-T's runs (one per target class)."""
    runs, single = [], type(attack).attack_single_run

    def attack_single_run(x, y, x_init=None):
        res = single(attack, x, y, x_init)
        runs.append((x, res[2].detach().clone()))
        return res

    attack.attack_single_run = attack_single_run
    return runs


def _rows(batch: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
    """Positions in ``batch`` of the rows of ``subset`` (APGD-T runs on ``x[still robust]``): exact match."""
    where = {row.numpy().tobytes(): i for i, row in enumerate(batch.detach().flatten(1).float().cpu())}
    return torch.tensor([where[row.numpy().tobytes()] for row in subset.detach().flatten(1).float().cpu()],
                        device=batch.device)


def fast_attack(model, x, y, *, norm: str, eps: float, seed: int, n_classes: int) -> torch.Tensor:
    """Run the schedule on one batch; returns the adversarial points (the input where nothing broke)."""
    _, apgd, fab = library()
    c = Cascade(model, x, y)
    for i, (label, kind, settings) in enumerate(schedule(n_classes, norm)):
        if not c.robust.any():
            break
        activity(f"fast: {label} ({i + 1}/{len(schedule(n_classes, norm))})", force=True, stage=i)
        attack = build(apgd, fab, model, kind, norm, eps, seed, settings, x.device)
        c.run(attack, c.near() if settings.get("near") else None, settings.get("track", False))
    return c.x_adv
