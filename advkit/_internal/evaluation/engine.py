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
from pathlib import Path

from torch import nn

from advkit._internal import distributed as D
from advkit._internal.errors import UserError
from advkit._internal.evaluation.adaptive import chosen, parse_adaptive, run_adaptive
from advkit._internal.evaluation.audit import SAMPLE, parse_audit, run_audit
from advkit._internal.evaluation.cascade import cascade, sweep
from advkit._internal.evaluation.confirm import parse_confirm, run_confirm
from advkit._internal.evaluation.examples import write_examples
from advkit._internal.evaluation.inputs import model_label, validate
from advkit._internal.evaluation.probes import gradient_warning
from advkit._internal.evaluation.resolve import resolve
from advkit._internal.evaluation.session import AttackResult, Report, Session, session
from advkit._internal.evaluation.sufficiency import eot_sufficiency
from advkit._internal.files import lock_output
from advkit._internal.seeds import checked_seed, seed_everything
from advkit._internal.stochastic import adaptive_name
from advkit._internal.threat import parse_eps

__all__ = ["AttackResult", "Report", "evaluate"]


def assemble(s: Session, results, robust, samples, *, seed, independent, meta, config) -> Report:
    """The report of a finished run."""
    adaptive = []
    if s.stochastic:
        adaptive.append(f"stochastic model: predictions vary between forward passes; gradient attacks use EOT "
                        f"over {config['eot']} samples (mean logits); every point is judged over {s.draws} draws "
                        f"({s.runner.judge.how}): accuracies are mean shares of correct draws, with intervals over "
                        f"points and draws")
        adaptive += [f"{a} replaced by its adaptive counterpart {adaptive_name(a, True)}"
                     for a in s.inputs.attacks if adaptive_name(a, True) != a]
    return Report(
        n=s.n, clean_accuracy=sum(s.clean.values()) / s.n, robust_accuracy=sum(robust.values()) / s.n,
        attacks=results, threat=s.inputs.threat, samples=samples, draws=s.draws,
        meta={
            **(meta or {}), "seed": seed, "dataset": s.inputs.data_meta, "model_fingerprint": config["fingerprint"],
            "mode": "independent" if independent else "cascade", "stochastic": s.stochastic,
            "adaptive": adaptive, "notes": s.inputs.notes,
            "device": str(s.runner.device),  # resumed_batches: set by finish(), once every stage has run
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
    audit=None, adaptive=None, surrogate=None,
    eot: int = 20,
    draws: int | None = None,
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
    ``seed`` seeds everything first. A random model is attacked through ``eot`` samples and judged over ``draws``
    draws per point (None: 10). Returns a :class:`Report`; with ``out`` the reports are written there
    too, and with ``save_adv`` the first adversarial examples of every attack
    (:mod:`advkit._internal.evaluation.examples`). ``confirm``: ``"aa:fraction=0.1"`` runs that attack on a
    seeded sample of the points left unbroken and estimates what the run missed
    (:mod:`advkit._internal.evaluation.confirm`). ``audit``: True or ``"all"`` runs every registered audit check,
    ``"silent-success,gradients:n=200"`` those on 200 points (:mod:`advkit._internal.evaluation.audit`);
    ``adaptive``: True or ``"auto"`` applies the remedies of the flagged checks, ``"bpda,eot"`` those, with
    ``surrogate`` (a model) for BPDA and transfer, and the audit checks that attack it (:mod:`advkit._internal.evaluation.adaptive`).
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
                             audit=audit, adaptive=adaptive, surrogate=surrogate, eot=eot, draws=draws, seed=seed, device=r.device, quiet=quiet, meta=r.meta,
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
              adaptive, surrogate, eot, draws, seed, device, quiet, meta, save_adv, confirm) -> Report:
    who = model_label(model, meta)
    model, inputs = validate(model, data, attacks, eps=eps, norm=norm, attack_opts=attack_opts, n=n,
                             batch_size=batch_size, eot=eot, draws=draws, audit=audit or adaptive, device=device,
                             who=who)
    budgets = [(parse_eps(e, inputs.threat.norm), str(e)) for e in sweep_budgets(eps_sweep)]
    checking = parse_confirm(confirm)
    auditing, adapting = parse_audit(audit), parse_adaptive(adaptive)
    if surrogate is not None and adapting is None and auditing is None:
        raise UserError("--surrogate is used only by --adaptive (bpda, transfer) and by audit checks that attack a "
                        "surrogate: add --adaptive or --audit, or leave it out")
    surrogate = load_surrogate(surrogate, inputs, device)
    s, config = session(model, inputs, out=out, eot=eot, draws=draws, seed=seed, independent=independent, quiet=quiet,
                        device=device, batch_size=batch_size, save_adv=save_adv, who=who, meta=meta,
                        surrogate=surrogate)
    built = [s.build(a) for a in inputs.attacks]  # parameters are checked before anything runs
    if checking is not None:
        s.build(checking[0], **checking[2])
    x0, y0 = inputs.x[:batch_size][:64].to(device), inputs.y[:batch_size][:64].to(device)
    gradient_warning(s.eval_model, x0, y0)
    results, robust, samples = cascade(s, built, independent)
    report = assemble(s, results, robust, samples, seed=seed, independent=independent, meta=meta, config=config)
    extras(s, report, robust, budgets=budgets, checking=checking, audit=auditing, adaptive=adapting,
           surrogate=surrogate, seed=seed, quiet=quiet)
    return finish(s, report, out)


def extras(s: Session, report: Report, robust, *, budgets, checking, audit, adaptive, surrogate, seed, quiet) -> None:
    """What runs after the cascade: the eps sweep, EOT sufficiency (random models), the audit, the adaptive
    attacks (which lower the robust accuracy they beat), the confirmation."""
    if budgets:
        if not quiet and D.is_main():
            names = ", ".join(s.inputs.attacks)
            print(f"advkit: eps sweep: {names} on each of the {len(s.correct)} clean-correct points at "
                  f"{len(budgets)} budgets ({', '.join(label for _, label in budgets)}): "
                  f"{len(s.inputs.attacks) * len(budgets)} attack runs", file=sys.stderr, flush=True)
        report.sweep = sweep(s, s.inputs.attacks, budgets)
    if s.stochastic:
        report.eot_sufficiency = eot_sufficiency(s, seed, quiet)
    if audit is not None or adaptive == "auto":
        report.audit = run_audit(s, audit or (None, SAMPLE), seed, quiet, surrogate)
    if adaptive is not None:
        report.adaptive_attacks = run_adaptive(s, chosen(adaptive, report.audit), robust, report.samples,
                                               surrogate, seed)
        report.robust_accuracy = sum(robust.values()) / s.n
    if checking is not None:
        report.confirm = run_confirm(s, checking, [i for i in s.correct if robust[i] > 0], seed)


def load_surrogate(surrogate, inputs, device):
    """The ``--surrogate`` model (a name, checkpoint or module), in eval mode on ``device``; None stays None."""
    if surrogate is None:
        return None
    if not isinstance(surrogate, (str, nn.Module)):
        raise UserError(f"surrogate: give a model name, a checkpoint path or an nn.Module, not {type(surrogate).__name__}")
    if isinstance(surrogate, str):
        from advkit._internal.models import load_model

        surrogate = load_model(surrogate, dataset=inputs.data_meta.get("name") or None, device=device)
    return surrogate.to(device).eval()


def finish(s: Session, report: Report, out) -> Report:
    """Say what was resumed, write the adversarial examples and the reports."""
    progress, keeper = s.runner.progress, s.runner.keeper
    report.meta["resumed_batches"] = progress.resumed  # every stage's, the audit's and the adaptive attacks' too
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
