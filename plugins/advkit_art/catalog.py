"""The ART evasion attacks that work on a ``PyTorchClassifier`` of images, as data.

Kept as data so that ``advkit list`` knows every ``art.*`` name without
importing ART. Each :class:`Spec` says how the threat model maps onto the
attack's constructor: ``eps_arg`` receives ``threat.eps``, ``norm_arg`` the
threat norm as ART writes it (``np.inf``, 2, 1), and each parameter in
``steps`` whose value is ``None`` becomes that multiple of eps. ``norms`` are
the threat norms the attack supports (``None``: any; the attack takes no
budget and its output is restricted to the threat model). Parameters that
only tune ART's batching keep their meaning; ``verbose`` is always off and
``targeted`` always false.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ART_VERSION = "1.20.1"

ALL = ("Linf", "L2", "L1")


@dataclass(frozen=True)
class Spec:
    """How one ART evasion attack is exposed as ``art.<name>``."""

    name: str
    cls: str
    summary: str
    params: dict = field(default_factory=dict)
    norms: tuple[str, ...] | None = ALL
    eps_arg: str | None = "eps"
    norm_arg: str | None = "norm"
    steps: dict = field(default_factory=dict)  # param -> multiple of eps used when the param is None
    black_box: bool = False
    keeps_best: bool = False  # keeps every point a query broke (Square drops a point from its search once broken)
    probabilities: bool = False  # the attack needs an estimator that outputs probabilities
    per_sample: bool = False  # the attack takes one sample per call
    requires: str | None = None  # an optional module the attack needs
    rename: dict = field(default_factory=dict)  # advkit parameter -> ART argument
    levels_arg: str | None = None  # receives eps in 8-bit levels (eps * 255 / bound range), when None

    @property
    def minimum_norm(self) -> bool:
        return self.eps_arg is None and self.levels_arg is None


_BS = {"batch_size": 128}


def _free(name, cls, summary, params=None, **kw):
    """An attack without a budget argument: minimum-norm, decision-based or unrestricted."""
    return Spec(name, cls, summary, dict(params or {}), norms=kw.pop("norms", None), eps_arg=None,
                norm_arg=kw.pop("norm_arg", None), **kw)


SPECS: list[Spec] = [
    Spec("fgsm", "FastGradientMethod", "FGSM / fast gradient method, Linf/L2/L1, one step of size eps - ART",
         {"num_random_init": 0, "minimal": False, "eps_step": None, **_BS}, steps={"eps_step": 0.25}),
    Spec("bim", "BasicIterativeMethod", "BIM (Kurakin et al.), Linf, 10 steps of eps/4, no random start - ART",
         {"eps_step": None, "max_iter": 10, **_BS}, norms=("Linf",), norm_arg=None, steps={"eps_step": 0.25}),
    Spec("pgd", "ProjectedGradientDescent", "PGD (Madry et al.), Linf/L2/L1, 10 steps of eps/4, one random start - ART",
         {"eps_step": None, "max_iter": 10, "num_random_init": 1, **_BS}, steps={"eps_step": 0.25}),
    Spec("mim", "MomentumIterativeMethod", "momentum iterative method (Dong et al.), Linf/L2/L1, 10 steps of eps/4, decay 1 - ART",
         {"eps_step": None, "decay": 1.0, "max_iter": 10, **_BS}, steps={"eps_step": 0.25}),
    Spec("autopgd", "AutoProjectedGradientDescent",
         "Auto-PGD (Croce & Hein), Linf/L2/L1, CE loss, 100 iterations, initial step 2 eps, 1 restart - ART",
         {"eps_step": None, "max_iter": 100, "nb_random_init": 1, "loss_type": "cross_entropy", **_BS},
         steps={"eps_step": 2.0}),
    Spec("autocg", "AutoConjugateGradient",
         "Auto Conjugate Gradient (Yamamura et al.), Linf/L2/L1, CE loss, 100 iterations, 1 restart - ART",
         {"eps_step": None, "max_iter": 100, "nb_random_init": 1, "loss_type": "cross_entropy", **_BS},
         steps={"eps_step": 2.0}),
    Spec("reacg", "RescalingAutoConjugateGradient",
         "Rescaling Auto Conjugate Gradient (ReACG), Linf/L2/L1, CE loss, 100 iterations, 1 restart - ART",
         {"eps_step": None, "max_iter": 100, "nb_random_init": 1, "loss_type": "cross_entropy", **_BS},
         steps={"eps_step": 2.0}),
    Spec("autoattack", "AutoAttack",
         "ART's AutoAttack ensemble (APGD-CE, APGD-DLR x5 restarts, DeepFool, Square x5); not the fra31 standard AA - ART",
         {"eps_step": None, "parallel_pool_size": 0, **_BS}, steps={"eps_step": 2.0}),
    Spec("square", "SquareAttack", "Square Attack (Andriushchenko et al.), black-box, Linf/L2, 5000 iterations, p_init 0.8 - ART",
         {"max_iter": 5000, "p_init": 0.8, "nb_restarts": 1, **_BS}, norms=("Linf", "L2"), black_box=True,
         keeps_best=True),
    Spec("vat", "VirtualAdversarialMethod", "virtual adversarial perturbation (Miyato et al.), L2 of size eps - ART",
         {"max_iter": 10, "finite_diff": 1e-6, **_BS}, norms=("L2",), norm_arg=None, probabilities=True),
    Spec("universal", "UniversalPerturbation",
         "universal perturbation (Moosavi-Dezfooli et al.), one perturbation for the batch, Linf/L2, DeepFool inner - ART",
         {"attacker": "deepfool", "delta": 0.2, "max_iter": 20, "batch_size": 32}, norms=("Linf", "L2")),
    _free("carlini-l2", "CarliniL2Method", "Carlini-Wagner L2 (minimum-norm), 10 binary-search steps x 10 iterations - ART",
          {"confidence": 0.0, "learning_rate": 0.01, "binary_search_steps": 10, "max_iter": 10, "initial_const": 0.01,
           "max_halving": 5, "max_doubling": 5, **_BS}),
    _free("carlini-linf", "CarliniLInfMethod", "Carlini-Wagner Linf (minimum-norm), 10 iterations - ART",
          {"confidence": 0.0, "learning_rate": 0.01, "max_iter": 10, "decrease_factor": 0.9, "initial_const": 1e-5,
           "largest_const": 20.0, "const_factor": 2.0, **_BS}),
    _free("carlini-l0", "CarliniL0Method", "Carlini-Wagner L0 (minimum number of pixels), 10 binary-search steps - ART",
          {"confidence": 0.0, "learning_rate": 0.01, "binary_search_steps": 10, "max_iter": 10, "initial_const": 0.01,
           "warm_start": True, "max_halving": 5, "max_doubling": 5, **_BS}),
    _free("deepfool", "DeepFool", "DeepFool (Moosavi-Dezfooli et al.), minimum-norm L2, 100 iterations, overshoot 1e-6 - ART",
          {"max_iter": 100, "epsilon": 1e-6, "nb_grads": 10, **_BS}),
    _free("newtonfool", "NewtonFool", "NewtonFool (Jang et al.), minimum-norm, 100 iterations - ART",
          {"max_iter": 100, "eta": 0.01, **_BS}),
    _free("elasticnet", "ElasticNet", "EAD elastic-net attack (Chen et al.), minimum L1/L2, 9 binary-search steps x 100 iterations - ART",
          {"confidence": 0.0, "learning_rate": 0.01, "binary_search_steps": 9, "max_iter": 100, "beta": 1e-3,
           "initial_const": 1e-3, "decision_rule": "EN", **_BS}),
    _free("jsma", "SaliencyMapMethod", "JSMA saliency-map L0 attack (Papernot et al.), theta 0.1, gamma 1 - ART",
          {"theta": 0.1, "gamma": 1.0, **_BS}),
    _free("brendel-bethge", "BrendelBethgeAttack", "Brendel-Bethge minimum-norm attack, Linf/L2/L1, 1000 steps (needs numba) - ART",
          {"overshoot": 1.1, "steps": 1000, "lr": 1e-3, "lr_decay": 0.5, "lr_num_decay": 20, "momentum": 0.8,
           "binary_search_steps": 10, "init_size": 100, "batch_size": 32},
          norms=ALL, norm_arg="norm", requires="numba"),
    _free("hopskipjump", "HopSkipJump", "HopSkipJump decision-based attack (Chen et al.), black-box, Linf/L2, 50 iterations - ART",
          {"max_iter": 50, "max_eval": 10000, "init_eval": 100, "init_size": 100, "batch_size": 64},
          norms=("Linf", "L2"), norm_arg="norm", black_box=True),
    _free("boundary", "BoundaryAttack", "Boundary attack (Brendel et al.), decision-based black-box, minimum L2, 5000 iterations - ART",
          {"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.667, "max_iter": 5000, "num_trial": 25, "sample_size": 20,
           "init_size": 100, "min_epsilon": 0.0, "batch_size": 64}, black_box=True),
    _free("geoda", "GeoDA", "GeoDA geometric decision-based attack (Rahmati et al.), black-box, Linf/L2/L1, 4000 iterations - ART",
          {"sub_dim": 10, "max_iter": 4000, "bin_search_tol": 0.1, "lambda_param": 0.6, "sigma": 0.0002, "batch_size": 64},
          norms=ALL, norm_arg="norm", black_box=True),
    _free("signopt", "SignOPTAttack", "Sign-OPT decision-based attack (Cheng et al.), black-box, minimum L2, 1000 iterations - ART",
          {"epsilon": 0.001, "num_trial": 100, "max_iter": 1000, "query_limit": 20000, "k": 200, "alpha": 0.2,
           "beta": 0.001, "batch_size": 64}, black_box=True),
    _free("simba", "SimBA", "SimBA simple black-box attack (Guo et al.), DCT basis, 3000 iterations, step 0.1 - ART",
          {"attack": "dct", "max_iter": 3000, "order": "random", "epsilon": 0.1, "freq_dim": 4, "stride": 1},
          black_box=True, probabilities=True),
    _free("zoo", "ZooAttack", "ZOO zeroth-order optimisation attack (Chen et al.), black-box, minimum L2, 10 iterations - ART",
          {"confidence": 0.0, "learning_rate": 0.01, "max_iter": 10, "binary_search_steps": 1, "initial_const": 1e-3,
           "abort_early": True, "use_resize": True, "use_importance": True, "nb_parallel": 128, "batch_size": 1,
           "variable_h": 1e-4}, black_box=True),
    _free("pixel", "PixelAttack", "pixel attack by differential evolution (Su et al.), black-box, th=1 pixel (L0) - ART",
          {"th": 1, "es": 1, "max_iter": 100}, black_box=True),
    Spec("threshold", "ThresholdAttack",
         "threshold attack by differential evolution (Kotyan & Vargas), black-box, Linf with th = eps in 8-bit levels - ART",
         {"th": None, "es": 1, "max_iter": 100}, norms=("Linf",), eps_arg=None, norm_arg=None, levels_arg="th",
         black_box=True),
    _free("spatial", "SpatialTransformation",
          "spatial transformation grid search (Engstrom et al.), rotations/translations; rarely inside an Lp ball - ART",
          {"max_translation": 10.0, "num_translations": 3, "max_rotation": 30.0, "num_rotations": 3}),
    _free("shadow", "ShadowAttack", "Shadow Attack (Ghiasi et al.), smooth unrestricted perturbation, 300 steps, one sample at a time - ART",
          {"sigma": 0.5, "nb_steps": 300, "learning_rate": 0.1, "lambda_tv": 0.3, "lambda_c": 1.0, "lambda_s": 0.5},
          per_sample=True),
    _free("wasserstein", "Wasserstein", "Wasserstein attack (Wong et al.), Wasserstein ball of radius w_eps, 400 iterations - ART",
          {"regularization": 3000.0, "p": 2, "kernel_size": 5, "w_eps_step": 0.1, "w_norm": "wasserstein",
           "ball": "wasserstein", "w_eps": 0.3, "eps_iter": 10, "eps_factor": 1.1, "max_iter": 400,
           "conjugate_sinkhorn_max_iter": 400, "projected_sinkhorn_max_iter": 400, "batch_size": 1},
          rename={"w_eps": "eps", "w_eps_step": "eps_step", "w_norm": "norm"}),
]

BY_NAME = {s.name: s for s in SPECS}

# ART evasion attacks not exposed, and why.
SKIPPED = {
    "AdversarialPatch*, AdversarialTexturePyTorch, DPatch, RobustDPatch, LaserAttack, GRAPHITE*":
        "physical patches/textures: a whole-image patch is not an Lp-bounded per-sample attack",
    "TargetedUniversalPerturbation, FeatureAdversaries*": "need target labels or guide images",
    "CompositeAdversarialAttackPyTorch": "semantic hue/saturation/rotation perturbations of RGB images, never inside an Lp ball",
    "FrameSaliencyAttack, OverTheAirFlickeringPyTorch": "video models",
    "CarliniWagnerASR, ImperceptibleASR*": "speech recognition",
    "OverloadPyTorch, SNAL": "object detectors",
    "DecisionTreeAttack, HighConfidenceLowUncertainty, LowProFool, MalwareGDTensorFlow":
        "other model kinds (decision trees, Gaussian processes, tabular data, malware)",
    "ProjectedGradientDescentNumpy/PyTorch/TensorFlowV2": "backends that art.pgd selects by itself",
}
