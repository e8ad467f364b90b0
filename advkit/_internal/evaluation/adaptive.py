"""``--adaptive``: attacks adapted to what the audit found, run on the points the evaluation left robust.

Each remedy is a way to get usable gradients (or a usable search) where the audit
saw that the attacks failed, applied to the white-box reference attack (with
ten times its iterations where it declares them) on the points still robust:

- ``logits``: the model's outputs are probabilities; attack their logarithm (logits up to a constant);
- ``rescale``: the model's logits saturate the softmax (defensive distillation); attack them divided by a
  per-point temperature, so that the cross-entropy has gradients again;
- ``margin``: the attack registered as the ``margin`` reference (a margin loss that does not saturate,
  e.g. AutoAttack's APGD on the scale-invariant DLR loss), with its own iterations;
- ``bpda``: forward through the model, backward through a differentiable surrogate (Athalye et al.
  2018's BPDA; the surrogate is ``--surrogate``, e.g. the same network without its non-differentiable
  input transform, which makes it the straight-through estimator);
- ``transfer``: attack the surrogate and judge its examples on the model;
- ``eot``: a random model attacked through 50 samples per step (or twice the run's ``--eot``);
- ``more-iterations``: the reference attack with ten times its iterations, and nothing else;
  ``more-restarts``: five seeded restarts of it, worst case kept.

``--adaptive`` alone applies the remedies of the checks the audit flagged (running the
audit first when ``--audit`` was not given); ``--adaptive bpda,eot`` applies those.
Every example goes through the run's verified path and is judged on the model
itself. A remedy that cannot apply (no surrogate, a deterministic model for EOT)
is listed as not applied, with the reason. advkit's own code (the wrappers are a few lines each).
"""

from __future__ import annotations

import torch
from torch import nn

from advkit._internal.errors import UserError
from advkit._internal.evaluation.audit import AuditContext
from advkit._internal.grammar import parse_list
from advkit._internal.plugins import registry
from advkit._internal.stochastic import EOTModel, adaptive_name

REMEDIES = ("logits", "rescale", "margin", "bpda", "transfer", "eot", "more-iterations", "more-restarts")
STEPS_FACTOR, RESTARTS = 10, 5


def parse_adaptive(spec) -> list[str] | str | None:
    """``True``/``"auto"`` -> ``"auto"`` (from the audit's flags); ``"bpda,eot"`` -> those; None/False -> None."""
    if spec is None or spec is False or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if spec is True or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return "auto"
    names = []
    for name, params in parse_list(spec):
        if params and name in REMEDIES:
            raise UserError(f"--adaptive {spec!r}: remedies take no parameters "
                            f"({name}:{','.join(f'{k}={v}' for k, v in params.items())})")
        if name == "best-iterate":
            raise UserError(f"--adaptive {spec!r}: best-iterate is a choice of attacks, not an adaptive attack: add "
                            f"one that keeps its best iterate to --attacks ({_best_keepers() or 'none registered'})")
        if name not in REMEDIES:
            from advkit._internal.errors import closest

            hint = closest(name, REMEDIES)
            raise UserError(f"--adaptive {spec!r}: unknown remedy {name!r}" + (f" (did you mean {hint[0]!r}?)"
                            if hint else "") + f"; remedies: auto, {', '.join(REMEDIES)}")
        names.append(name)
    return names


class LogOf(nn.Module):
    """The logarithm of a model's probability outputs: logits up to a per-point constant."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).clamp_min(1e-30).log()


class Rescaled(nn.Module):
    """The model's logits divided by a per-point temperature (their spread over 10, held constant): the same
    prediction, and a cross-entropy that does not saturate."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        z = self.model(x)
        spread = (z.amax(1, keepdim=True) - z.amin(1, keepdim=True)).detach().clamp_min(1e-12)
        return z * (10.0 / spread)


class BPDA(nn.Module):
    """The model's outputs in the forward pass, the surrogate's gradient in the backward pass."""

    def __init__(self, model, surrogate):
        super().__init__()
        self.model, self.surrogate = model, surrogate

    def forward(self, x):
        approx = self.surrogate(x)
        with torch.no_grad():
            exact = self.model(x)
        return approx + (exact - approx).detach()


def chosen(mode, audit: list[dict]) -> list[str]:
    """The remedies to apply: those named, or those of the flagged checks (in the order of the checks), also
    those no adaptive attack implements (``best-iterate``, a third-party check's), which are listed as not applied."""
    if mode != "auto":
        return list(mode)
    out = []
    for c in audit:
        r = c.get("remedy")
        if not c["passed"] and r and r not in out:  # one --adaptive has no attack for is listed as not applied
            out.append(r)
    return out


def run_adaptive(s, remedies: list[str], robust: dict, samples: list[dict], surrogate, seed: int) -> list[dict]:
    """Apply ``remedies`` one after the other on the points still robust; lower ``robust`` (and the per-sample
    records) in place."""
    ctx = AuditContext(s, [i for i in s.correct if robust[i] > 0], seed, surrogate)
    name = ctx.reference("white-box")
    it = ctx.iterations(name)
    base = {**ctx.options(name)}
    if it:
        base[it] = STEPS_FACTOR * int(ctx.parameter(name, it))
    rows = []
    for remedy in remedies:
        live = [i for i in s.correct if robust[i] > 0]
        before = sum(robust.values()) / s.n
        runs, why = (_runs(s, ctx, remedy, name, base, surrogate) if remedy in REMEDIES
                     else ([], _by_hand(s, remedy, name)))
        if why:
            rows.append({"remedy": remedy, "applied": False, "why": why})
            continue
        for tag, attack, model, params in runs if live else ():
            res = ctx.attack(attack, tag=f"adaptive:{remedy}:{tag}", points=live, model=model, **params)
            for i in live:
                if res[i]["score"] < robust[i]:
                    robust[i] = res[i]["score"]
                    samples[i]["broken_by"], samples[i]["norm"] = f"adaptive:{remedy}", res[i]["norm"]
                    if s.draws > 1:
                        samples[i]["robust_score"] = res[i]["score"]
        rows.append({"remedy": remedy, "applied": True, "attack": runs[0][1], "params": runs[0][3], "runs": len(runs),
                     "points": len(live), "accuracy_before": before, "accuracy_after": sum(robust.values()) / s.n})
    return rows


def _keeps_best(entry) -> bool:
    return bool(entry.can("keeps_best") or entry.can("early_stop"))


def _best_keepers(shown: int = 4) -> str:
    """The first registered attacks that keep their best iterate, gradient-based first (silent-success is about a
    gradient attack's last iterate; a black-box search is the slower substitute); "" when none is registered."""
    found = [e.name for e in sorted((e for e in registry("attack") if _keeps_best(e)),
                                    key=lambda e: bool(e.can("black_box")))]
    return ", ".join(found[:shown]) + (", ..." if len(found) > shown else "")


def _by_hand(s, remedy: str, reference: str) -> str:
    """Why a remedy that is a choice of attacks, not an adaptive attack, is not applied: ``best-iterate``
    (silent-success) asks for an attack that keeps its best iterate, which the suite has or lacks."""
    if remedy != "best-iterate":
        return "no adaptive attack implements it: see the flagged check's suggestion in the audit"
    attacks = registry("attack")
    suite = [adaptive_name(a, s.stochastic) for a in s.inputs.attacks if a in attacks]
    keeping = [a for a in suite if _keeps_best(attacks.get(a))]
    if keeping:
        return (f"the suite's {', '.join(keeping)} already keeps every point an iterate broke; the silent "
                f"successes are the audit's: {reference} returns its last iterate")
    known = _best_keepers()
    return ("add an attack that keeps its best iterate to --attacks" + (f" ({known})" if known else "")
            + f"; {reference} returns its last iterate")


def _runs(s, ctx, remedy, name, base, surrogate) -> tuple[list, str]:
    """``([(tag, attack, model the attack sees, params), ...], why not)`` for ``remedy``."""
    model = ctx.model
    if remedy == "logits":
        return [("0", name, LogOf(model), base)], ""
    if remedy == "rescale":
        return [("0", name, Rescaled(model), base)], ""
    if remedy == "margin":
        found = registry("attack").with_capability("reference", "margin")
        if not found:
            return [], "no plugin registers a margin reference attack (reference=\"margin\")"
        return [("0", found[0].name, model, ctx.options(found[0].name))], ""
    if remedy in ("bpda", "transfer"):
        if surrogate is None:
            return [], "needs a differentiable surrogate of the model (--surrogate MODEL)"
        return [("0", name, BPDA(model, surrogate) if remedy == "bpda" else surrogate, base)], ""
    if remedy == "eot":
        if not s.stochastic:
            return [], "the model is deterministic"
        return [("0", name, EOTModel(s.counter, max(50, 2 * ctx.eot)).eval(), base)], ""
    if remedy == "more-iterations":  # the base run already has ten times the iterations
        return ([("0", name, model, base)], "") if ctx.iterations(name) else ([], f"{name} declares no iterations parameter")
    return [(str(r), name, model, base) for r in range(RESTARTS)], ""
