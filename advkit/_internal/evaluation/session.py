"""A run's shared state: the session (model, runner, judge, inputs), the report and the attack results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from advkit._internal.attack import Attack, create_attack
from advkit._internal.counter import PassCounter
from advkit._internal.errors import UserError
from advkit._internal.evaluation.examples import Keeper
from advkit._internal.evaluation.inputs import Inputs, say
from advkit._internal.evaluation.probes import batch_dependence
from advkit._internal.evaluation.runner import Checked, Progress, Runner
from advkit._internal.provenance import model_fingerprint, versions
from advkit._internal.stochastic import EOTModel, Judge, adaptive_name, draws_per_point, stochasticity
from advkit._internal.threat import ThreatModel

DRAWS = 10  # default draws per point for a random model (docs/evaluation.md: how it was chosen)


@dataclass
class AttackResult:
    """Outcome of one attack in a run, with the registration that provided it."""

    name: str
    implementation: str = ""
    provider: str = ""  # the plugin that registered the attack
    package: str = ""  # the distribution that ships that plugin
    version: str = ""
    qualified: str = ""  # provider.name, always reachable
    minimum_norm: bool = False
    black_box: bool = False
    attempted: int = 0
    broken: int = 0
    seconds: float = 0.0
    accuracy: float | None = None  # cascade: accuracy after this and all earlier attacks
    independent_accuracy: float | None = None
    dropped: int = 0  # minimum-norm attacks: points whose perturbation did not fit the budget (not broken)
    score_interval: tuple | None = None  # random model: 95 % interval of the mean score after this attack
    passes: dict = field(default_factory=dict)  # forward / backward images through the model, counted
    passes_per_point: dict = field(default_factory=dict)  # the same per attempted point
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class Report:
    """Everything an evaluation found; written by :mod:`advkit._internal.evaluation.report`."""

    n: int
    clean_accuracy: float
    robust_accuracy: float
    attacks: list[AttackResult]
    threat: ThreatModel
    samples: list[dict]
    meta: dict = field(default_factory=dict)
    sweep: list[dict] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    confirm: dict | None = None
    draws: int = 1  # forward passes that judge each point (a random model: its own draw each time)
    eot_sufficiency: dict | None = None
    adaptive_attacks: list[dict] | None = None  # --adaptive: each remedy, applied or why not, accuracy before/after

    def __repr__(self) -> str:
        attacks = ", ".join(a.name for a in self.attacks) or "none"
        return (f"Report(model={self.meta.get('model', '?')!r}, n={self.n}, {self.threat}, "
                f"clean={100 * self.clean_accuracy:.2f}%, robust={100 * self.robust_accuracy:.2f}%, "
                f"attacks=[{attacks}])")

    def __str__(self) -> str:
        """The report as Markdown, as report.md holds it."""
        from advkit._internal.evaluation.report import markdown

        return markdown(self)

    def as_dict(self) -> dict:
        return {
            **self.meta,
            "threat_model": self.threat.as_dict(),
            "n": self.n,
            "draws": self.draws,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": [a.__dict__ for a in self.attacks],
            "eps_sweep": self.sweep,
            "audit": self.audit,
            "confirm": self.confirm,
            "eot_sufficiency": self.eot_sufficiency,
            "adaptive_attacks": self.adaptive_attacks,
        }


@dataclass
class Session:
    """What the cascade, the sweep and the audit share in one run."""

    runner: Runner
    model: nn.Module  # the model, deterministic forward as given
    eval_model: nn.Module  # what gradient attacks see: the model, or its EOT average when stochastic
    inputs: Inputs
    stochastic: bool
    correct: list[int] = field(default_factory=list)  # points with a clean score above 0
    clean: dict = field(default_factory=dict)  # point -> clean score (the share of draws correct)
    counter: nn.Module | None = None  # the model, counted: what attacks see (inside EOT when random)
    plan: object = None  # the cost plan of the cascade (advkit._internal.evaluation.planning)

    @property
    def n(self) -> int:
        return len(self.inputs.x)

    @property
    def draws(self) -> int:
        return self.runner.judge.draws

    def build(self, name: str, threat: ThreatModel | None = None, **override) -> Attack:
        """The attack to run for ``name`` (its adaptive counterpart on a stochastic model)."""
        run_name = adaptive_name(name, self.stochastic)
        opts = self.inputs.attack_opts
        params = {**opts.get(name.lower(), {}), **opts.get(run_name.lower(), {}), **override}
        target = self.counter if run_name != name else self.eval_model  # a counterpart does its own EOT
        atk = create_attack(run_name, target, threat or self.inputs.threat, **params)
        atk.name = run_name
        return atk


def probe_model(model: nn.Module, inputs: Inputs, device, who: str) -> tuple[bool, bool]:
    """``(random?, draws per point?)``. The probe decides over a declaration; a deterministic model's batch
    dependence is said."""
    probe = inputs.x[: min(len(inputs.x), 64)].to(device, copy=True)
    stochastic, note = stochasticity(model, probe, who, declared=bool(getattr(model, "stochastic", False)))
    if note:
        say(inputs.notes, note)
    if not stochastic:
        warning = batch_dependence(model, probe, who)
        if warning:
            say(inputs.notes, warning)
        return False, True
    return True, draws_per_point(model, probe)


def result_of(atk: Attack) -> AttackResult:
    desc = atk.describe()
    top = {k: desc.pop(k) for k in ("provider", "package", "version", "qualified", "minimum_norm", "black_box")}
    desc.pop("name")
    return AttackResult(name=atk.name, implementation=desc.pop("implementation"), params=desc.pop("params"),
                        extra=desc, **top)


def session(model, inputs, *, out, eot, draws, seed, independent, quiet, device, batch_size, save_adv, who, meta,
            surrogate=None):
    """The run's session: the model checked, probed and counted, the judge, the seeded runner with its log.
    A ``surrogate`` (``--surrogate``) enters the run's settings by its fingerprint, so a resumed run never reads
    back adaptive attacks made through another one."""
    checked = Checked(model).eval()
    stochastic, per_point = probe_model(model, inputs, device, who)
    counter = PassCounter(checked).eval()
    eval_model = EOTModel(counter, eot).eval() if stochastic and eot > 1 else counter
    draws = (DRAWS if draws is None else draws) if stochastic else 1
    config = {
        "model": (meta or {}).get("model", type(model).__name__), "fingerprint": model_fingerprint(model),
        "data": inputs.data_meta.get("name", ""), "n": len(inputs.x), "attacks": inputs.attacks,
        "attack_opts": inputs.attack_opts, "threat": inputs.threat.as_dict(), "seed": seed,
        "independent": independent, "eot": eot if stochastic else None, "draws": draws, "versions": versions(),
    }
    if surrogate is not None:  # only then: the settings of runs without one stay as they were
        config["surrogate"] = model_fingerprint(surrogate)
    if not isinstance(save_adv, int) or save_adv < 0 or (save_adv and not out):
        raise UserError(f"save_adv needs an output directory and a count >= 0, got {save_adv!r} (out={out!r})")
    progress = Progress(Path(out) if out else None, config)
    judge = Judge(checked, draws, per_point)
    runner = Runner(checked, inputs.x, inputs.y, inputs.threat, batch_size=batch_size, seed=seed, judge=judge,
                    progress=progress, quiet=quiet, device=device, keeper=Keeper(save_adv) if save_adv else None)
    return Session(runner, checked, eval_model, inputs, stochastic, counter=counter), config
