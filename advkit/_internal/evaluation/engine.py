"""The evaluation engine behind ``advkit eval`` and ``advkit.evaluate``.

Three steps: the arguments are checked once (:mod:`advkit._internal.evaluation.inputs`),
the attacks run in a cascade (:func:`cascade`), and the report is assembled
(:func:`assemble`).

- The model is evaluated in eval mode, in float32 (a model found otherwise is
  switched, and the run says so).
- Clean accuracy, then each attack in order. By default an attack runs only on
  the points every earlier attack failed on (AutoAttack's cascade);
  ``independent=True`` runs each attack on every clean-correct point. The worst
  case per sample is over all attacks.
- Every adversarial batch goes through :meth:`advkit._internal.attack.Attack.run`: a
  violation of the threat model stops the run naming the attack.
- A stochastic model (two forward passes disagree) is evaluated adaptively: an
  attack with a declared adaptive counterpart is replaced by it, the others see
  the expectation of the logits over ``eot`` samples (EOT).
- Input gradients are checked on the first batch of every run: all-zero or NaN
  gradients make gradient attacks fail silently, so the run warns.
- Batches are seeded and logged (:mod:`advkit._internal.evaluation.runner`), so an
  interrupted run resumes to the same result; under torchrun the batches are
  shared among ranks and the result equals a single process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from advkit._internal import distributed as D
from advkit._internal.attack import Attack, create_attack
from advkit._internal.counter import PassCounter
from advkit._internal.errors import UserError
from advkit._internal.evaluation.checks import gradient_warning, run_audit
from advkit._internal.evaluation.confirm import parse_confirm, run_confirm
from advkit._internal.evaluation.examples import Keeper, write_examples
from advkit._internal.evaluation.inputs import Inputs, model_label, say, validate
from advkit._internal.evaluation.planning import make_plan
from advkit._internal.evaluation.probes import batch_dependence
from advkit._internal.evaluation.resolve import resolve
from advkit._internal.evaluation.runner import Checked, Progress, Runner, swapped_threat
from advkit._internal.files import lock_output
from advkit._internal.provenance import model_fingerprint, versions
from advkit._internal.seeds import checked_seed, seed_everything
from advkit._internal.stochastic import EOTModel, adaptive_name, stochasticity
from advkit._internal.threat import ThreatModel, parse_eps


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
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "attacks": [a.__dict__ for a in self.attacks],
            "eps_sweep": self.sweep,
            "audit": self.audit,
            "confirm": self.confirm,
        }


@dataclass
class Session:
    """What the cascade, the sweep and the audit share in one run."""

    runner: Runner
    model: nn.Module  # the model, deterministic forward as given
    eval_model: nn.Module  # what gradient attacks see: the model, or its EOT average when stochastic
    inputs: Inputs
    stochastic: bool
    correct: list[int] = field(default_factory=list)
    counter: nn.Module | None = None  # the model, counted: what attacks see (inside EOT when random)
    plan: object = None  # the cost plan of the cascade (advkit._internal.evaluation.planning)

    @property
    def n(self) -> int:
        return len(self.inputs.x)

    def build(self, name: str, threat: ThreatModel | None = None, **override) -> Attack:
        """The attack to run for ``name`` (its adaptive counterpart on a stochastic model)."""
        run_name = adaptive_name(name, self.stochastic)
        opts = self.inputs.attack_opts
        params = {**opts.get(name.lower(), {}), **opts.get(run_name.lower(), {}), **override}
        target = self.counter if run_name != name else self.eval_model  # a counterpart does its own EOT
        atk = create_attack(run_name, target, threat or self.inputs.threat, **params)
        atk.name = run_name
        return atk


def probe_model(model: nn.Module, inputs: Inputs, device, who: str) -> bool:
    """Is the model random? The probe decides over a declaration; a deterministic model's batch dependence is said."""
    probe = inputs.x[: min(len(inputs.x), 64)].to(device, copy=True)
    stochastic, note = stochasticity(model, probe, who, declared=bool(getattr(model, "stochastic", False)))
    if note:
        say(inputs.notes, note)
    if not stochastic:
        warning = batch_dependence(model, probe, who)
        if warning:
            say(inputs.notes, warning)
    return stochastic


def result_of(atk: Attack) -> AttackResult:
    desc = atk.describe()
    top = {k: desc.pop(k) for k in ("provider", "package", "version", "qualified", "minimum_norm", "black_box")}
    desc.pop("name")
    return AttackResult(name=atk.name, implementation=desc.pop("implementation"), params=desc.pop("params"),
                        extra=desc, **top)


def cascade(s: Session, attacks: list[Attack], independent: bool) -> tuple[list[AttackResult], list[int], list[dict]]:
    """Run the attacks in order; return their results, the robust points and the per-sample records."""
    x, y = s.inputs.x, s.inputs.y
    preds = s.runner.predict("clean", list(range(s.n)))
    s.correct = [i for i in range(s.n) if preds[i] == int(y[i])]
    samples = [{"index": i, "label": int(y[i]), "clean_pred": preds[i], "clean_correct": preds[i] == int(y[i]),
                "broken_by": "", "norm": None} for i in range(len(x))]
    robust, results = list(s.correct), []
    s.plan = make_plan(s, attacks, independent)
    mode = "alone" if independent else "cascade"
    for k, atk in enumerate(attacks):
        res = result_of(atk)
        points = s.correct if independent else robust
        if s.plan is not None:
            s.plan.attacks[k].points, s.plan.current = len(points), k
        ran, res.seconds, spent = s.runner.attack(
            f"{'ind' if independent else 'cascade'}:{k}:{atk.name}", atk, points, key=f"{k}:{atk.name}",
            label=f"{atk.name} ({mode} {k + 1}/{len(attacks)})", plan=s.plan, k=k)
        res.passes = spent.as_dict()
        res.passes_per_point = {kind: round(res.passes[kind] / len(points), 1) if points else 0
                                for kind in ("forward", "backward")}
        alive = set(robust)
        newly = {i: r for i, r in ran.items() if r["broken"] and i in alive}
        if independent:
            res.independent_accuracy = sum(1 for i in s.correct if not ran[i]["broken"]) / s.n
        res.attempted, res.broken = len(points), len(newly)
        res.dropped = sum(1 for r in ran.values() if r["dropped"])
        for i, r in newly.items():
            samples[i]["broken_by"], samples[i]["norm"] = atk.name, r["norm"]
        robust = [i for i in robust if i not in newly]
        res.accuracy = len(robust) / s.n
        if atk.stats.get("mode_restored"):
            say(s.inputs.notes, f"attack {atk.name!r} put the model in training mode (on "
                                f"{atk.stats['mode_restored']} batch(es)); advkit switched it back to eval mode "
                                f"before judging its output")
        results.append(res)
    return results, robust, samples


def sweep(s: Session, attacks: list[str], budgets: list[tuple[float, str]]) -> list[dict]:
    """Independent accuracy of every attack, and the worst case, at each budget."""
    rows = []
    for eps, label in budgets:
        t = s.inputs.threat.with_eps(eps)
        broken_any: set[int] = set()
        row = {"eps": t.eps, "eps_label": label, "attacks": {}}
        for k, name in enumerate(attacks):
            atk = s.build(name, t)
            with swapped_threat(s.runner, t):
                res, _, _ = s.runner.attack(f"sweep:{t.eps:.8g}:{k}:{atk.name}", atk, s.correct, key=f"{k}:{atk.name}",
                                         label=f"{atk.name} at eps {label} ({len(rows) + 1}/{len(budgets)})")
            broken = {i for i, r in res.items() if r["broken"]}
            broken_any |= broken
            row["attacks"][atk.name] = (len(s.correct) - len(broken)) / s.n
        row["worst_case"] = (len(s.correct) - len(broken_any)) / s.n
        rows.append(row)
    return rows


def assemble(s: Session, results, robust, samples, *, seed, independent, meta, config) -> Report:
    """The report of a finished run."""
    adaptive = []
    if s.stochastic:
        adaptive.append(f"stochastic model: predictions vary between forward passes; gradient attacks use EOT "
                        f"over {config['eot']} samples (mean logits)")
        adaptive += [f"{a} replaced by its adaptive counterpart {adaptive_name(a, True)}"
                     for a in s.inputs.attacks if adaptive_name(a, True) != a]
    return Report(
        n=s.n, clean_accuracy=len(s.correct) / s.n, robust_accuracy=len(robust) / s.n, attacks=results,
        threat=s.inputs.threat, samples=samples,
        meta={
            **(meta or {}), "seed": seed, "dataset": s.inputs.data_meta, "model_fingerprint": config["fingerprint"],
            "mode": "independent" if independent else "cascade", "stochastic": s.stochastic,
            "adaptive": adaptive, "notes": s.inputs.notes,
            "resumed_batches": s.runner.progress.resumed, "device": str(s.runner.device),
            "cost": s.plan.summary() if s.plan is not None else None,
            "world_size": D.world()[1], "versions": config["versions"],
        },
    )


def evaluate(
    model=None,
    data=None,
    attacks=None,
    *,
    weights: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    eps=None,
    norm: str = "Linf",
    attack_opts: dict[str, dict] | None = None,
    n: int | None = None,
    batch_size=250,
    independent: bool = False,
    out: str | os.PathLike | None = None,
    eps_sweep=None,
    audit: bool = False,
    eot: int = 20,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    meta: dict | None = None,
    save_adv: int = 0,
    confirm=None,
) -> Report:
    """Evaluate ``model`` on ``data``; ``advkit eval`` is this function with the same arguments and defaults.

    ``model``: a name (``"smallcnn-fmnist"``, a checkpoint path, ``timm/NAME``...; None: the default model a
    plugin declares) or an ``nn.Module`` taking images in [0, 1]; ``weights``: a weights file for a model
    given by name; ``data``: a dataset name (None: the declared default; ``split``, ``data_dir``), an
    :class:`advkit.ImageData` or an ``(x, y)`` pair; ``attacks``: specs (``["pgd:steps=20", "aa"]``) or one
    comma-separated string (None: the declared default suite; ``"none"``: clean accuracy only);
    ``attack_opts`` maps an attack name to more parameters (``{"pgd": {"steps": 20}}``); ``eps`` defaults to
    the dataset's usual budget; ``n``: the first n points (None: all); ``batch_size`` may be ``"auto"``; ``device`` ``"auto"`` is CUDA when available;
    ``seed`` seeds everything first. Returns a :class:`Report`; with ``out`` the reports are written there
    too, and with ``save_adv`` the first adversarial examples of every attack
    (:mod:`advkit._internal.evaluation.examples`). ``confirm``: ``"aa:fraction=0.1"`` runs that attack on a
    seeded sample of the points left unbroken and estimates what the run missed
    (:mod:`advkit._internal.evaluation.confirm`).
    """
    seed = checked_seed(seed)
    seed_everything(seed)
    r = resolve(model, data, attacks, attack_opts, weights=weights, split=split, data_dir=data_dir, norm=norm,
                device=device, batch_size=batch_size, quiet=quiet, meta=meta)
    lock = lock_output(out) if out and D.is_main() else contextlib.nullcontext()
    try:
        with lock:  # one run per --out: a second one refuses instead of mixing its records into this one's
            return _evaluate(r.model, r.data, r.attacks, eps=eps, norm=norm, attack_opts=r.attack_opts, n=n,
                             batch_size=r.batch_size, independent=independent, out=out, eps_sweep=eps_sweep,
                             audit=audit, eot=eot, seed=seed, device=r.device, quiet=quiet, meta=r.meta,
                             save_adv=save_adv, confirm=confirm)
    finally:
        if r.joined:
            D.shutdown()


def sweep_budgets(eps_sweep) -> list:
    """``"0.05,0.1"`` or a list of budgets; an empty part (``",,"``) is refused, not dropped."""
    if eps_sweep is None:
        return []
    parts = [t.strip() for t in eps_sweep.split(",")] if isinstance(eps_sweep, str) else list(eps_sweep)
    if not parts or any(p in ("", None) for p in parts):
        raise UserError(f"--eps-sweep {eps_sweep!r}: give budgets separated by commas, such as 0.05,0.1,0.2")
    return parts


def _evaluate(model, data, attacks, *, eps, norm, attack_opts, n, batch_size, independent, out, eps_sweep, audit,
              eot, seed, device, quiet, meta, save_adv, confirm) -> Report:
    who = model_label(model, meta)
    model, inputs = validate(model, data, attacks, eps=eps, norm=norm, attack_opts=attack_opts, n=n,
                             batch_size=batch_size, eot=eot, audit=audit, device=device, who=who)
    budgets = [(parse_eps(e, inputs.threat.norm), str(e)) for e in sweep_budgets(eps_sweep)]
    checking = parse_confirm(confirm)
    s, config = session(model, inputs, out=out, eot=eot, seed=seed, independent=independent, quiet=quiet,
                        device=device, batch_size=batch_size, save_adv=save_adv, who=who, meta=meta)
    built = [s.build(a) for a in inputs.attacks]  # parameters are checked before anything runs
    if checking is not None:
        s.build(checking[0], **checking[2])
    x0, y0 = inputs.x[:batch_size][:64].to(device), inputs.y[:batch_size][:64].to(device)
    gradient_warning(s.eval_model, x0, y0)
    results, robust, samples = cascade(s, built, independent)
    report = assemble(s, results, robust, samples, seed=seed, independent=independent, meta=meta, config=config)
    extras(s, report, robust, budgets=budgets, checking=checking, audit=audit, seed=seed, quiet=quiet)
    return finish(s, report, out)


def session(model, inputs, *, out, eot, seed, independent, quiet, device, batch_size, save_adv, who, meta):
    """The run's session: the model checked, probed and counted, the seeded runner with its log."""
    checked = Checked(model).eval()
    stochastic = probe_model(model, inputs, device, who)
    counter = PassCounter(checked).eval()
    eval_model = EOTModel(counter, eot).eval() if stochastic and eot > 1 else counter
    config = {
        "model": (meta or {}).get("model", type(model).__name__), "fingerprint": model_fingerprint(model),
        "data": inputs.data_meta.get("name", ""), "n": len(inputs.x), "attacks": inputs.attacks,
        "attack_opts": inputs.attack_opts, "threat": inputs.threat.as_dict(), "seed": seed,
        "independent": independent, "eot": eot if stochastic else None, "versions": versions(),
    }
    if not isinstance(save_adv, int) or save_adv < 0 or (save_adv and not out):
        raise UserError(f"save_adv needs an output directory and a count >= 0, got {save_adv!r} (out={out!r})")
    progress = Progress(Path(out) if out else None, config)
    runner = Runner(checked, inputs.x, inputs.y, inputs.threat, batch_size=batch_size, seed=seed,
                    progress=progress, quiet=quiet, device=device, keeper=Keeper(save_adv) if save_adv else None)
    return Session(runner, checked, eval_model, inputs, stochastic, counter=counter), config


def extras(s: Session, report: Report, robust, *, budgets, checking, audit, seed, quiet) -> None:
    """What runs after the cascade: the eps sweep, the confirmation sample, the audit."""
    if budgets:
        if not quiet and D.is_main():
            names = ", ".join(s.inputs.attacks)
            print(f"advkit: eps sweep: {names} on each of the {len(s.correct)} clean-correct points at "
                  f"{len(budgets)} budgets ({', '.join(label for _, label in budgets)}): "
                  f"{len(s.inputs.attacks) * len(budgets)} attack runs", file=sys.stderr, flush=True)
        report.sweep = sweep(s, s.inputs.attacks, budgets)
    if checking is not None:
        report.confirm = run_confirm(s, checking, robust, seed)
    if audit:
        report.audit = run_audit(s)


def finish(s: Session, report: Report, out) -> Report:
    """Say what was resumed, write the adversarial examples and the reports."""
    progress, keeper = s.runner.progress, s.runner.keeper
    if progress.resumed and D.is_main():
        print(f"advkit: resumed {progress.resumed} of {progress.batches} batches from {out}", file=sys.stderr)
    if keeper is not None:
        saved = write_examples(keeper, Path(out), s.inputs.threat, list(s.inputs.data_meta.get("classes") or []))
        report.meta["adversarial_examples"] = [f"adv/{stem}.safetensors" for stem in saved]
        if progress.resumed:
            report.meta.setdefault("notes", []).append(
                "--save-adv: batches read back from the earlier run were not attacked again; their examples are missing")
    if out and D.is_main():
        from advkit._internal.evaluation.report import write_reports

        report.meta["written"] = write_reports(report, Path(out))
    return report
