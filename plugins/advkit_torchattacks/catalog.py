"""The attack classes exported by torchattacks 3.5.1, as data.

Kept here so that every ``ta.*`` name (and its parameters) is known without
importing torchattacks, which keeps ``advkit list`` fast. Each :class:`Spec`
says how the threat model maps onto the class's own constructor:

* ``budget``: the constructor argument that receives ``threat.eps``
  (``eps``, or ``max_epsilon`` for the PI-FGSM family); ``None`` for
  unbounded and minimum-norm attacks.
* ``norms``: the threat norms the class honours; ``None`` means any norm: the
  class does not take a budget, and its output is restricted to the threat
  model (a point not broken within the budget counts as not broken).
* ``params``: the parameters a user may set, with torchattacks' defaults.
  ``alpha: None`` scales the library's default step with eps (the default
  alpha/eps ratio of the class, e.g. eps/4 for PGD).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TORCHATTACKS_VERSION = "3.5.1"

_EPS = 8 / 255


@dataclass(frozen=True)
class Spec:
    """How one torchattacks class is exposed."""

    cls: str
    summary: str
    params: dict = field(default_factory=dict)
    norms: tuple[str, ...] | None = ("Linf",)
    budget: str | None = "eps"
    default_eps: float = _EPS  # the class's own eps default, to scale alpha
    default_alpha: float | None = None  # the class's own alpha default
    takes_norm: bool = False  # the constructor has a ``norm`` argument
    infer_classes: bool = False  # the constructor has ``n_classes``
    quiet: bool = False  # the constructor has ``verbose`` (set to False)
    black_box: bool = False
    keeps_best: bool = False  # returns what any iterate broke (APGD's best iterate, a per-point early stop)
    rgb_only: bool = False  # hard-codes 3 input channels

    @property
    def minimum_norm(self) -> bool:
        return self.budget is None


def _linf(cls, summary, params=None, alpha=2 / 255, **kw):
    p = {"alpha": None, **(params or {})} if alpha is not None else dict(params or {})
    return Spec(cls, summary, p, default_alpha=alpha, **kw)


def _free(cls, summary, params=None, **kw):
    return Spec(cls, summary, dict(params or {}), norms=None, budget=None, **kw)


_STEPS = {"steps": 10}

SPECS: list[Spec] = [
    _free("VANILA", "identity: returns the input unchanged (a baseline) - torchattacks"),
    _free("GN", "Gaussian noise, std 0.1, kept only where inside the threat model - torchattacks", {"std": 0.1}, black_box=True),
    _linf("FGSM", "FGSM (Goodfellow et al.), Linf, one step of size eps - torchattacks", alpha=None),
    _linf("BIM", "BIM / I-FGSM (Kurakin et al.), Linf, 10 steps of eps/4, no random start - torchattacks", _STEPS),
    _linf("RFGSM", "R+FGSM (Tramer et al.), Linf, random step then 10 steps of eps/4 - torchattacks", _STEPS),
    _linf("PGD", "PGD (Madry et al.), Linf, 10 steps of eps/4, random start - torchattacks", {**_STEPS, "random_start": True}),
    _linf(
        "EOTPGD",
        "PGD with expectation over transformation (Athalye et al.), Linf, 10 steps of eps/4, eot_iter 2 - torchattacks",
        {**_STEPS, "eot_iter": 2, "random_start": True},
    ),
    _linf("FFGSM", "fast FGSM (Wong et al.), Linf, random start then one step of 1.25 eps - torchattacks", alpha=10 / 255),
    _linf("TPGD", "PGD on the TRADES KL loss (Zhang et al.), Linf, 10 steps of eps/4 - torchattacks", _STEPS),
    _linf("MIFGSM", "MI-FGSM momentum iterative (Dong et al.), Linf, 10 steps of eps/4, decay 1 - torchattacks", {**_STEPS, "decay": 1.0}),
    _linf(
        "UPGD",
        "PGD with choice of loss (ce, margin, dlr), momentum and EOT, Linf, 10 steps of eps/4 - torchattacks",
        {**_STEPS, "random_start": False, "loss": "ce", "decay": 1.0, "eot_iter": 1},
    ),
    Spec(
        "APGD",
        "Auto-PGD (Croce & Hein), CE loss, Linf/L2, 10 steps (torchattacks default) - torchattacks",
        {"steps": 10, "n_restarts": 1, "seed": 0, "loss": "ce", "eot_iter": 1, "rho": 0.75},
        norms=("Linf", "L2"), takes_norm=True, quiet=True, keeps_best=True,
    ),
    Spec(
        "APGDT",
        "targeted Auto-PGD on the DLR loss (Croce & Hein), Linf/L2, 10 steps, all other classes as targets - torchattacks",
        {"steps": 10, "n_restarts": 1, "seed": 0, "eot_iter": 1, "rho": 0.75},
        norms=("Linf", "L2"), takes_norm=True, infer_classes=True, quiet=True, keeps_best=True,
    ),
    _linf(
        "DIFGSM",
        "DI-FGSM input-diversity transfer attack (Xie et al.), Linf, 10 steps of eps/4 - torchattacks",
        {**_STEPS, "decay": 0.0, "resize_rate": 0.9, "diversity_prob": 0.5, "random_start": False},
    ),
    _linf(
        "TIFGSM",
        "TI-FGSM translation-invariant transfer attack (Dong et al.), Linf, 10 steps of eps/4; RGB only - torchattacks",
        {
            **_STEPS, "decay": 0.0, "kernel_name": "gaussian", "len_kernel": 15, "nsig": 3.0,
            "resize_rate": 0.9, "diversity_prob": 0.5, "random_start": False,
        },
        rgb_only=True,
    ),
    _linf(
        "Jitter",
        "Jitter (Schwinn et al.), Linf, 10 steps of eps/4, random start - torchattacks",
        {**_STEPS, "scale": 10.0, "std": 0.1, "random_start": True},
    ),
    _linf("NIFGSM", "NI-FGSM Nesterov iterative (Lin et al.), Linf, 10 steps of eps/4 - torchattacks", {**_STEPS, "decay": 1.0}),
    _linf(
        "PGDRS",
        "PGD against randomized smoothing (Salman et al.), Linf, 10 steps of eps/4 - torchattacks",
        {**_STEPS, "noise_type": "guassian", "noise_sd": 0.5, "noise_batch_size": 5, "batch_max": 2048},
    ),
    _linf(
        "SINIFGSM",
        "SI-NI-FGSM scale-invariant Nesterov (Lin et al.), Linf, 10 steps of eps/4 - torchattacks",
        {**_STEPS, "decay": 1.0, "m": 5},
    ),
    _linf(
        "VMIFGSM",
        "VMI-FGSM variance-tuned momentum (Wang & He), Linf, 10 steps of eps/4 - torchattacks",
        {**_STEPS, "decay": 1.0, "N": 5, "beta": 1.5},
    ),
    _linf(
        "VNIFGSM",
        "VNI-FGSM variance-tuned Nesterov (Wang & He), Linf, 10 steps of eps/4 - torchattacks",
        {**_STEPS, "decay": 1.0, "N": 5, "beta": 1.5},
    ),
    _linf(
        "SPSA",
        "SPSA gradient-free attack (Uesato et al.), Linf, 1 iteration of 128 samples - torchattacks",
        {"delta": 0.01, "lr": 0.01, "nb_iter": 1, "nb_sample": 128, "max_batch_size": 64},
        alpha=None, black_box=True,
    ),
    _free(
        "JSMA",
        "JSMA saliency-map L0 attack (Papernot et al.), targets label+1 (assumes 10 classes) - torchattacks",
        {"theta": 1.0, "gamma": 0.1},
    ),
    _free(
        "EADL1",
        "EAD elastic-net attack, L1 decision rule (Chen et al.), minimum-norm - torchattacks",
        {"kappa": 0.0, "lr": 0.01, "binary_search_steps": 9, "max_iterations": 100, "abort_early": True,
         "initial_const": 0.001, "beta": 0.001},
    ),
    _free(
        "EADEN",
        "EAD elastic-net attack, EN decision rule (Chen et al.), minimum-norm - torchattacks",
        {"kappa": 0.0, "lr": 0.01, "binary_search_steps": 9, "max_iterations": 100, "abort_early": True,
         "initial_const": 0.001, "beta": 0.001},
    ),
    Spec(
        "PIFGSM",
        "PI-FGSM patch-wise iterative (Gao et al.), Linf, 10 iterations; RGB only - torchattacks",
        {"num_iter_set": 10, "momentum": 1.0, "amplification": 10.0, "prob": 0.7},
        budget="max_epsilon", default_eps=16 / 255, rgb_only=True,
    ),
    Spec(
        "PIFGSMPP",
        "PI-FGSM++ (Gao et al.), Linf, 10 iterations; RGB only - torchattacks",
        {"num_iter_set": 10, "momentum": 1.0, "amplification": 10.0, "prob": 0.7, "project_factor": 0.8},
        budget="max_epsilon", default_eps=16 / 255, rgb_only=True,
    ),
    _free("CW", "Carlini-Wagner L2 (minimum-norm), c 1, kappa 0, 50 steps, lr 0.01 - torchattacks",
          {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01}),
    Spec(
        "PGDL2",
        "PGD, L2, 10 steps of eps/5, random start - torchattacks",
        {"alpha": None, "steps": 10, "random_start": True, "eps_for_division": 1e-10},
        norms=("L2",), default_eps=1.0, default_alpha=0.2,
    ),
    _free("DeepFool", "DeepFool (Moosavi-Dezfooli et al.), minimum-norm L2, 50 steps, overshoot 0.02 - torchattacks",
          {"steps": 50, "overshoot": 0.02}),
    Spec(
        "PGDRSL2",
        "PGD against randomized smoothing (Salman et al.), L2, 10 steps of eps/5 - torchattacks",
        {"alpha": None, "steps": 10, "noise_type": "guassian", "noise_sd": 0.5, "noise_batch_size": 5,
         "batch_max": 2048, "eps_for_division": 1e-10},
        norms=("L2",), default_eps=1.0, default_alpha=0.2,
    ),
    _free("SparseFool", "SparseFool sparse L1 attack (Modas et al.), 10 steps - torchattacks",
          {"steps": 10, "lam": 3.0, "overshoot": 0.02}),
    _free("OnePixel", "one-pixel attack by differential evolution (Su et al.), black-box - torchattacks",
          {"pixels": 1, "steps": 10, "popsize": 10, "inf_batch": 128}, black_box=True),
    _free(
        "Pixle",
        "Pixle pixel-rearrangement attack (Pomponi et al.), black-box - torchattacks",
        {"x_dimensions": (2, 10), "y_dimensions": (2, 10), "pixel_mapping": "random", "restarts": 20,
         "max_iterations": 10, "update_each_iteration": False},
        black_box=True,
    ),
    Spec(
        "FAB",
        "FAB minimum-norm attack (Croce & Hein), Linf/L2, 10 steps (torchattacks default), kept within eps - torchattacks",
        {"steps": 10, "n_restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9, "seed": 0, "multi_targeted": False},
        norms=("Linf", "L2"), takes_norm=True, infer_classes=True, quiet=True, keeps_best=True,
    ),
    Spec(
        "AutoAttack",
        "torchattacks' AutoAttack (reduced: 10-step APGD; not the standard AutoAttack) - torchattacks",
        {"version": "standard", "seed": 0},
        norms=("Linf", "L2"), takes_norm=True, infer_classes=True, quiet=True, keeps_best=True,
    ),
    Spec(
        "Square",
        "Square Attack (Andriushchenko et al.), score-based black-box, Linf/L2, 5000 queries - torchattacks",
        {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "loss": "margin", "resc_schedule": True, "seed": 0},
        norms=("Linf", "L2"), takes_norm=True, quiet=True, black_box=True, keeps_best=True,
    ),
]

BY_CLASS = {s.cls: s for s in SPECS}

# Exported by torchattacks but not attacks on a single model that advkit can drive.
SKIPPED = {
    "MultiAttack": "a wrapper that chains other attack objects (advkit's evaluation already takes several attacks)",
    "LGV": "needs a training DataLoader and fine-tunes surrogate copies of the model (a transfer attack)",
}
