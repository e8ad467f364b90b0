"""Curated short names for the common torchattacks attacks, with the field's standard defaults.

Steps are relative to the budget: ``alpha=None`` means eps/4 (2/255 at
eps 8/255). The attacks themselves are torchattacks'; only the parameters are
adapted here.
"""

from __future__ import annotations

from advkit.plugin import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, UserError
from advkit_torchattacks.adapter import bind


def _alpha(alpha, threat) -> float:
    return float(threat.eps) / 4 if alpha is None else float(alpha)


def _require(threat, name: str, *norms: str) -> None:
    if threat.norm not in norms:
        raise UserError(f"attack {name!r} supports {'/'.join(norms)} threat models only, not {threat}")


def fgsm(model, threat):
    """FGSM (Goodfellow et al.), Linf, one step of size eps - torchattacks"""
    _require(threat, "fgsm", "Linf")
    return bind("FGSM", model, threat, {"eps": float(threat.eps)})


def pgd(model, threat, steps: int = 10, alpha: float | None = None, random_start: bool = True):
    """PGD (Madry et al.), Linf, 10 steps, step eps/4, random start (L2 threat: PGDL2, same defaults) - torchattacks"""
    _require(threat, "pgd", "Linf", "L2")
    cls = "PGD" if threat.norm == "Linf" else "PGDL2"
    kw = {"eps": float(threat.eps), "alpha": _alpha(alpha, threat), "steps": steps, "random_start": random_start}
    return bind(cls, model, threat, kw)


def pgdl2(model, threat, steps: int = 10, alpha: float | None = None, random_start: bool = True):
    """PGD, L2, 10 steps, step eps/4, random start - torchattacks"""
    _require(threat, "pgdl2", "L2")
    kw = {"eps": float(threat.eps), "alpha": _alpha(alpha, threat), "steps": steps, "random_start": random_start}
    return bind("PGDL2", model, threat, kw)


def cw(model, threat, c: float = 1.0, kappa: float = 0.0, steps: int = 50, lr: float = 0.01):
    """Carlini-Wagner L2 (minimum-norm), c 1, kappa 0, 50 steps, lr 0.01; kept only where inside eps - torchattacks"""
    return bind("CW", model, threat, {"c": c, "kappa": kappa, "steps": steps, "lr": lr})


def mifgsm(model, threat, steps: int = 10, alpha: float | None = None, decay: float = 1.0):
    """MI-FGSM (Dong et al.), Linf, 10 steps, step eps/4, momentum decay 1 - torchattacks"""
    _require(threat, "mifgsm", "Linf")
    kw = {"eps": float(threat.eps), "alpha": _alpha(alpha, threat), "steps": steps, "decay": decay}
    return bind("MIFGSM", model, threat, kw)


def deepfool(model, threat, steps: int = 50, overshoot: float = 0.02):
    """DeepFool (Moosavi-Dezfooli et al.), minimum-norm L2, 50 steps, overshoot 0.02; kept only where inside eps - torchattacks"""
    return bind("DeepFool", model, threat, {"steps": steps, "overshoot": overshoot})


def square(model, threat, n_queries: int = 5000, n_restarts: int = 1, p_init: float = 0.8, seed: int = 0):
    """Square Attack (Andriushchenko et al.), black-box, Linf/L2, 5000 queries, p_init 0.8 - torchattacks"""
    _require(threat, "square", "Linf", "L2")
    kw = {"norm": threat.norm, "eps": float(threat.eps), "n_queries": n_queries, "n_restarts": n_restarts,
          "p_init": p_init, "seed": seed, "verbose": False}
    return bind("Square", model, threat, kw)


def apgd(model, threat, steps: int = 100, n_restarts: int = 1, loss: str = "ce", eot_iter: int = 1, seed: int = 0):
    """Auto-PGD (Croce & Hein), CE loss, Linf/L2, 100 steps, 1 restart - torchattacks"""
    _require(threat, "apgd", "Linf", "L2")
    kw = {"norm": threat.norm, "eps": float(threat.eps), "steps": steps, "n_restarts": n_restarts, "loss": loss,
          "eot_iter": eot_iter, "seed": seed, "verbose": False}
    return bind("APGD", model, threat, kw)


def apgdt(model, threat, steps: int = 100, n_restarts: int = 1, seed: int = 0):
    """targeted Auto-PGD on the DLR loss (Croce & Hein), Linf/L2, 100 steps, all other classes as targets - torchattacks"""
    _require(threat, "apgdt", "Linf", "L2")
    kw = {"norm": threat.norm, "eps": float(threat.eps), "steps": steps, "n_restarts": n_restarts, "seed": seed,
          "verbose": False}
    return bind("APGDT", model, threat, kw, infer_classes=True)


def fab(model, threat, steps: int = 100, n_restarts: int = 1, multi_targeted: bool = False, seed: int = 0):
    """FAB (Croce & Hein), Linf/L2, 100 steps, untargeted (multi_targeted=true: FAB-T); kept within eps - torchattacks"""
    _require(threat, "fab", "Linf", "L2")
    kw = {"norm": threat.norm, "eps": float(threat.eps), "steps": steps, "n_restarts": n_restarts,
          "multi_targeted": multi_targeted, "seed": seed, "verbose": False}
    return bind("FAB", model, threat, kw, infer_classes=True)


def eotpgd(model, threat, steps: int = 10, alpha: float | None = None, eot_iter: int = 20, random_start: bool = True):
    """EOT-PGD for randomized models, Linf, 10 steps, step eps/4, 20 gradient samples per step, random start - torchattacks"""
    _require(threat, "eotpgd", "Linf")
    kw = {"eps": float(threat.eps), "alpha": _alpha(alpha, threat), "steps": steps, "eot_iter": eot_iter,
          "random_start": random_start}
    return bind("EOTPGD", model, threat, kw)


def tpgd(model, threat, steps: int = 10, alpha: float | None = None):
    """TPGD: PGD on the TRADES KL loss (Zhang et al.), Linf, 10 steps, step eps/4 - torchattacks"""
    _require(threat, "tpgd", "Linf")
    kw = {"eps": float(threat.eps), "alpha": _alpha(alpha, threat), "steps": steps}
    return bind("TPGD", model, threat, kw)


def jitter(model, threat, steps: int = 10, alpha: float | None = None, scale: float = 10.0, std: float = 0.1,
           random_start: bool = True):
    """Jitter (Schwinn et al.), Linf, 10 steps, step eps/4, scale 10, std 0.1, random start - torchattacks"""
    _require(threat, "jitter", "Linf")
    kw = {"eps": float(threat.eps), "alpha": _alpha(alpha, threat), "steps": steps, "scale": scale, "std": std,
          "random_start": random_start}
    return bind("Jitter", model, threat, kw)


_STEPS = {"steps": AT_LEAST_ONE}
_PGD = {"steps": AT_LEAST_ONE, "alpha": POSITIVE}
_RESTARTS = {"steps": AT_LEAST_ONE, "n_restarts": AT_LEAST_ONE}

# (name, factory, aliases, capabilities declared at registration, parameter ranges)
CURATED = [
    ("fgsm", fgsm, (), {}, {}),
    ("pgd", pgd, ("pgd-linf",), {"reference": "white-box", "iterations": "steps", "default": 1,
                                         "validation": True}, _PGD),
    ("pgdl2", pgdl2, ("pgd-l2",), {}, _PGD),
    ("cw", cw, ("cw-l2",), {"minimum_norm": True, "default": 2}, {"c": POSITIVE, "kappa": NON_NEGATIVE, **_STEPS, "lr": POSITIVE}),
    ("mifgsm", mifgsm, (), {}, {**_PGD, "decay": NON_NEGATIVE}),
    ("deepfool", deepfool, (), {"minimum_norm": True}, {**_STEPS, "overshoot": NON_NEGATIVE}),
    ("square", square, (), {"black_box": True, "reference": "black-box", "keeps_best": True},
     {"n_queries": AT_LEAST_ONE, "n_restarts": AT_LEAST_ONE, "p_init": Range(0, 1, lo_open=True)}),
    ("apgd", apgd, (), {"keeps_best": True}, {**_RESTARTS, "eot_iter": AT_LEAST_ONE}),
    ("apgdt", apgdt, (), {"keeps_best": True}, _RESTARTS),
    ("fab", fab, (), {"keeps_best": True}, _RESTARTS),
    ("eotpgd", eotpgd, (), {}, {**_PGD, "eot_iter": AT_LEAST_ONE}),
    ("tpgd", tpgd, (), {}, _PGD),
    ("jitter", jitter, (), {}, {**_PGD, "scale": POSITIVE, "std": NON_NEGATIVE}),
]
