"""AutoAttack as advkit attacks: the standard, rand and plus versions, a chosen subset, and each attack alone.

AutoAttack attacks only the points the model classifies correctly and
returns the clean input for the others. Budgets default to the standard
version's; ``n_iter``, ``n_restarts``, ``n_queries``, ``n_target_classes``
and ``eot_iter`` override them (for quick checks; the result is then not a
standard AutoAttack evaluation, and the report says so).
"""

from __future__ import annotations

import inspect

from advkit.plugin import LibraryAttack, UserError, dist_version
from advkit_autoattack import backends
from advkit_autoattack.progress import Tracker, stages


def build(model, threat, *, version: str, attacks: str | list[str] = "", seed: int = 0, batch_size: int = 250,
          **budget) -> LibraryAttack:
    """An AutoAttack run of ``version`` (or of the ``attacks`` subset, with that version's settings)."""
    budget = {k: int(v) for k, v in budget.items() if v is not None}
    chosen = backends.parse_attacks(attacks, version) if isinstance(attacks, str) else list(attacks)
    if isinstance(attacks, str) and attacks.strip() and not chosen:
        raise UserError(f"attacks={attacks!r} names no attack; choose from {', '.join(backends.ATTACKS)}")
    subset = chosen or None
    run_list = subset or backends.VERSIONS[version]
    version_name = "custom" if subset else version
    impl = backends.choose()
    impl_version = dist_version(impl)
    notes: list[str] = []
    state: dict = {}

    def run(x, y):
        import torch

        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[-1])
        if impl == "torchattacks":
            atk = state.get("attack")
            if atk is None:
                atk = state["attack"] = backends.torchattacks_aa(
                    model, threat, version=version, attacks=subset, seed=seed, n_classes=n_classes, **budget)
            return atk(x, y)
        adv = state.get("attack")
        if adv is None:
            adv = backends.fra31(impl, model, threat, version=version, attacks=subset, seed=seed, device=x.device)
            backends.set_budget(adv, **budget)
            Tracker(adv, list(run_list))
            state["attack"] = adv
        backends.clamp_targets(adv, n_classes, notes)
        try:
            with backends.quiet(notes):
                return backends.run_fra31(impl, adv, x, y, batch_size)
        finally:
            notes[:] = list(dict.fromkeys(notes))

    shown = "; ".join(f"{k}={v}" for k, v in budget.items())
    if impl == "torchattacks":
        if threat.norm not in ("Linf", "L2"):
            raise UserError(f"torchattacks' AutoAttack supports Linf and L2 only, not {threat}")
        label = (f"torchattacks {impl_version} AutoAttack (reduced: {budget.get('n_iter', 10)}-step APGD; "
                 f"not the standard AutoAttack; {version_name}: {', '.join(run_list)}{'; ' + shown if shown else ''})")
    else:
        label = f"{impl} {impl_version} (fra31 AutoAttack, {version_name}: {', '.join(run_list)}{'; ' + shown if shown else ''})"
    report = {
        "autoattack_implementation": impl,
        "autoattack_version": impl_version,
        "autoattack_attacks": list(run_list),
        "autoattack_version_name": version_name,
        "autoattack_budget": dict(budget),
        "autoattack_standard": impl != "torchattacks" and version == "standard" and not subset and not budget,
        "autoattack_warnings": notes,  # filled during runs (shared with the report)
    }
    # the plan: worst-case passes per attacked point of each sub-attack (torchattacks' APGD runs 10 steps)
    plan = stages(version, list(run_list), budget if impl != "torchattacks" else {"n_iter": 10, **budget},
                  n_classes=_classes(model))
    return LibraryAttack(run, label, report=report, state=state, stages=plan)


def _classes(model) -> int:
    declared = getattr(model, "num_classes", None)
    return declared if isinstance(declared, int) and declared > 1 else 10


def aa(model, threat, attacks: str = "", n_iter: int | None = None, n_restarts: int | None = None,
       n_queries: int | None = None, n_target_classes: int | None = None, seed: int = 0, batch_size: int = 250):
    """AutoAttack (Croce & Hein), standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries); attacks= a subset"""
    return build(model, threat, version="standard", attacks=attacks, seed=seed, batch_size=batch_size, n_iter=n_iter,
                 n_restarts=n_restarts, n_queries=n_queries, n_target_classes=n_target_classes)


def aa_rand(model, threat, attacks: str = "", n_iter: int | None = None, n_restarts: int | None = None,
            eot_iter: int | None = None, seed: int = 0, batch_size: int = 250):
    """AutoAttack for randomized defenses (version rand): APGD-CE and APGD-DLR, 100 iterations, EOT over 20 samples"""
    return build(model, threat, version="rand", attacks=attacks, seed=seed, batch_size=batch_size, n_iter=n_iter,
                 n_restarts=n_restarts, eot_iter=eot_iter)


def aa_plus(model, threat, attacks: str = "", n_iter: int | None = None, n_restarts: int | None = None,
            n_queries: int | None = None, n_target_classes: int | None = None, seed: int = 0, batch_size: int = 250):
    """AutoAttack+ (version plus): APGD-CE/DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T"""
    return build(model, threat, version="plus", attacks=attacks, seed=seed, batch_size=batch_size, n_iter=n_iter,
                 n_restarts=n_restarts, n_queries=n_queries, n_target_classes=n_target_classes)


# name -> (summary, budget parameters that apply)
SINGLE = {
    "apgd-ce": ("APGD-CE of AutoAttack: Auto-PGD on cross-entropy, 100 iterations, 1 restart", ("n_iter", "n_restarts", "eot_iter")),
    "apgd-dlr": ("APGD-DLR of AutoAttack: Auto-PGD on the DLR loss, 100 iterations, 1 restart", ("n_iter", "n_restarts", "eot_iter")),
    "apgd-t": ("APGD-T of AutoAttack: targeted APGD-DLR, 100 iterations, 9 target classes", ("n_iter", "n_restarts", "n_target_classes")),
    "fab": ("FAB of AutoAttack: untargeted minimum-norm FAB, 100 iterations, kept within eps", ("n_iter", "n_restarts")),
    "fab-t": ("FAB-T of AutoAttack: targeted FAB, 100 iterations, 9 target classes, kept within eps", ("n_iter", "n_target_classes")),
    "square": ("Square Attack of AutoAttack: score-based black-box, 5000 queries", ("n_queries", "n_restarts")),
}


def single(name: str):
    """A factory running one AutoAttack attack with the standard version's settings."""
    summary, knobs = SINGLE[name]

    def factory(model, threat, **params):
        return build(model, threat, version="standard", attacks=[name], **params)

    P = inspect.Parameter
    sig = [P("model", P.POSITIONAL_OR_KEYWORD), P("threat", P.POSITIONAL_OR_KEYWORD)]
    sig += [P(k, P.KEYWORD_ONLY, default=None, annotation="int | None") for k in knobs]
    sig += [P("seed", P.KEYWORD_ONLY, default=0, annotation="int"),
            P("batch_size", P.KEYWORD_ONLY, default=250, annotation="int")]
    factory.__signature__ = inspect.Signature(sig)
    factory.__doc__ = summary
    factory.__name__ = factory.__qualname__ = "aa_" + name.replace("-", "_")
    return factory
