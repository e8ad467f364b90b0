"""The attack contract: one call path that every attack goes through, and what wrapping plugins return.

An attack plugin's factory ``factory(model, threat, **params)`` returns any
callable ``run(x, y) -> x_adv`` (usually a :class:`LibraryAttack` around a
torchattacks, ART or AutoAttack object). :func:`create_attack` binds it into
an :class:`Attack`, and :meth:`Attack.run` is the only way the engines call it
(the template method of torchattacks' ``Attack.__call__``):

1. the inputs are checked (float, contiguous, on the model's device and
   dtype) and the engine keeps its own copy of the clean batch, so an attack
   that writes into its input cannot move the reference point;
2. the model is put in eval mode for the call (restored afterwards) and
   gradients are enabled, also under ``torch.no_grad()``;
3. the output is checked: a tensor of the input's shape, finite, inside the
   input bounds;
4. against the threat model (:func:`verified`): an attack **declared
   minimum-norm** at registration keeps only its points inside the budget, the
   others count as not broken and are reported (``dropped``); **any other
   attack** that leaves the ball stops the run with a
   :class:`~advkit._internal.errors.ThreatViolation` naming it. Nothing is clipped.

The training engine verifies its adversary's output with the same
:func:`verified`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

from advkit._internal.errors import ThreatViolation, UserError
from advkit._internal.passes import Passes
from advkit._internal.registry import Entry, bind_params

if TYPE_CHECKING:  # torch is imported when an attack runs, so that registering attacks stays light
    import torch

    from advkit._internal.counter import PassCounter
    from advkit._internal.threat import ThreatModel


@dataclass
class LibraryAttack:
    """What a wrapping plugin returns: ``run(x, y) -> x_adv`` plus what the report should say about it.

    ``implementation``: the library, its version and the class
    (``"torchattacks 3.5.1 PGD"``); ``report``: JSON-able details (the
    library's own parameters...), shared with the report, so a run may add
    notes to it; ``state``: the library's attack object once built;
    ``stages``: its plan, the worst-case passes per attacked point of each
    stage in the order they run (:class:`advkit.plugin.Stage`), which the cost
    estimate and the progress bar use (what it actually spends is counted).
    """

    run: Callable
    implementation: str
    report: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)

    def __call__(self, x, y):
        return self.run(x, y)


@dataclass
class AttackOutput:
    """One verified batch: the adversarial examples, which points were dropped (minimum-norm only), and
    the model passes the attack spent on the batch (counted, not declared)."""

    x_adv: torch.Tensor
    dropped: torch.Tensor  # bool per point: outside the budget, replaced by its clean input
    passes: Passes = field(default_factory=Passes)


def verified(who: str, threat: ThreatModel, clean: torch.Tensor, out, *, eps=None,
             minimum_norm: bool = False) -> AttackOutput:
    """Check ``out`` against ``threat`` around ``clean``; see the module docstring (step 4).

    ``eps`` overrides the budget (a per-pixel Linf map for PART's adversary).
    Raises :class:`ThreatViolation` naming ``who``.
    """
    import torch

    if not torch.is_tensor(out):
        raise ThreatViolation(f"{who} returned {type(out).__name__}, not a tensor")
    if out.shape != clean.shape:
        raise ThreatViolation(f"{who} returned shape {tuple(out.shape)} for inputs of shape {tuple(clean.shape)}")
    out = out.detach().to(device=clean.device, dtype=clean.dtype)
    if minimum_norm:
        v = threat.check(clean, out, eps=float("inf"))  # finite, same shape, inside the bounds
        if v is not None:
            raise ThreatViolation(f"{who} violated the threat model {threat}: {v}")
        dropped = ~threat.inside(clean, out, eps=eps)
        if dropped.any():
            out = torch.where(dropped.view((-1,) + (1,) * (clean.dim() - 1)), clean, out)
        return AttackOutput(out, dropped)
    threat.verify(clean, out, who=who, eps=eps)
    return AttackOutput(out, torch.zeros(clean.shape[0], dtype=torch.bool, device=clean.device))


def _model_device_dtype(model) -> tuple[torch.device | None, torch.dtype | None]:
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return (p.device, p.dtype) if p is not None else (None, None)


def _weights(model) -> dict:
    """A private copy of the model's state (parameters and buffers), to compare after an attack."""
    sd = model.state_dict() if hasattr(model, "state_dict") else {}
    return {k: v.detach().clone() for k, v in sd.items() if hasattr(v, "detach")}


def _changed(before: dict, model) -> str:
    """``"weights (conv.weight, ...)"`` when the state differs from ``before`` bit for bit, else ``""``."""
    import torch

    after = model.state_dict() if hasattr(model, "state_dict") else {}
    names = sorted(set(before) ^ set(after))
    for k, v in before.items():
        w = after.get(k)
        if w is not None and (w.shape != v.shape or w.dtype != v.dtype
                              or not torch.equal(_bits(w), _bits(v))):
            names.append(k)
    return f"weights or buffers ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})" if names else ""


def _bits(t):
    """The raw bytes of ``t`` (so that NaN equals NaN)."""
    import torch

    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.is_floating_point() or t.is_complex() else t


def _restore_eval(model) -> bool:
    """Put every submodule back in eval mode; return whether the attack had left any in training mode."""
    if not hasattr(model, "modules"):
        return False
    training = any(m.training for m in model.modules())
    if training:
        model.eval()
    return training


@dataclass
class Attack:
    """A registered attack bound to a model and a threat model.

    ``attack(x, y)`` returns verified adversarial examples; :meth:`run` also
    says which points a minimum-norm attack had dropped. ``stats`` counts, over
    all calls, the points attacked and dropped.
    """

    name: str
    entry: Entry
    model: Any
    threat: ThreatModel
    params: dict[str, Any]
    fn: Any
    implementation: str = ""
    extra: dict = field(default_factory=dict)
    stats: dict = field(default_factory=lambda: {"points": 0, "dropped": 0})
    counter: PassCounter | None = None  # counts the passes of the model the attack sees
    stages: list = field(default_factory=list)  # the plugin's declared plan (LibraryAttack.stages)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        model = getattr(self.model, "arch", None) or type(self.model).__name__
        return f"Attack({self.name!r}, {self.threat}, model={model}{', ' + params if params else ''})"

    @property
    def minimum_norm(self) -> bool:
        return bool(self.entry.can("minimum_norm"))

    @property
    def black_box(self) -> bool:
        return bool(self.entry.can("black_box"))

    def run(self, x: torch.Tensor, y: torch.Tensor) -> AttackOutput:
        """Attack a batch: the only path from an engine to a plugin's attack (see the module docstring)."""
        import torch

        device, dtype = _model_device_dtype(self.model)
        labels = self._checked(x, y)
        clean = x.detach().to(device=device or x.device, dtype=dtype or x.dtype).contiguous().clone()
        labels = labels.to(clean.device)
        was_training = bool(getattr(self.model, "training", False))
        if was_training:
            self.model.eval()
        before = _weights(self.model)
        start = replace(self.counter.count) if self.counter is not None else Passes()  # a copy
        try:
            with torch.enable_grad():
                out = self.fn(clean.clone(), labels.clone())
        finally:
            left_training = _restore_eval(self.model)
            if was_training:
                self.model.train()
        if left_training:
            self.stats["mode_restored"] = self.stats.get("mode_restored", 0) + 1
        changed = _changed(before, self.model)
        if changed:
            raise ThreatViolation(f"attack {self.name!r} ({self.implementation}) changed the model's "
                                  f"{changed} during its call; the run stops (an attack must leave the model as it was)")
        result = verified(f"attack {self.name!r} ({self.implementation})", self.threat, clean, out,
                          minimum_norm=self.minimum_norm)
        result.passes = (self.counter.count - start) if self.counter is not None else Passes()
        self.stats["points"] += int(clean.shape[0])
        self.stats["dropped"] += int(result.dropped.sum())
        return result

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.run(x, y).x_adv

    def _checked(self, x, y):
        """The batch an attack is given: images inside the threat model's bounds, one class label per image
        (a caller's mistake is a :class:`UserError` naming the caller's data, not the attack)."""

        from advkit._internal.data import check_images, check_labels

        check_images(x, bounds=self.threat.bounds, where=f"attack {self.name!r}: input")
        return check_labels(y, getattr(self.model, "num_classes", None), count=x.shape[0], where=f"attack {self.name!r}")

    def describe(self) -> dict:
        """What the report says about this attack: provider, implementation, capabilities, parameters."""
        simple = (int, float, str, bool, type(None))
        return {
            "name": self.name,
            **self.entry.provenance(),
            "implementation": self.implementation,
            "minimum_norm": self.minimum_norm,
            "black_box": self.black_box,
            "params": {k: (v if isinstance(v, simple) else repr(v)) for k, v in self.params.items()},
            **self.extra,
        }


def usual_threat(model, eps=None) -> ThreatModel:
    """Linf at the usual budget of the dataset ``model.info`` names (a dataset's declared ``usual_eps``)."""
    from advkit._internal.plugins import registry
    from advkit._internal.threat import ThreatModel

    dataset = (getattr(model, "info", None) or {}).get("dataset")
    entry = registry("dataset").find(str(dataset)) if dataset else None
    usual = entry.capabilities.get("usual_eps") if entry else None
    if usual is None and eps is None:
        import warnings

        warnings.warn(f"the model names no dataset with a usual budget{f' ({dataset})' if dataset else ''}: "
                      "attacking at Linf eps=8/255; pass threat= or eps= to choose", stacklevel=3)
    return ThreatModel.parse("Linf", usual or "8/255")


def create_attack(
    name: str,
    model: torch.nn.Module,
    threat: ThreatModel | None = None,
    *,
    eps=None,
    norm: str | None = None,
    **params,
) -> Attack:
    """Build the attack ``name`` for ``model``: a registered name, alias or ``provider.name``, with parameters
    as on the command line (``"pgd:steps=5"``) or as keyword arguments (not both for one parameter).

    ``threat`` (or ``eps``/``norm``, which build one: the threat model is never an attack parameter)
    defaults to Linf at the usual budget of the dataset the model was trained on (0.1 for
    Fashion-MNIST, 8/255 for CIFAR-10), and to Linf 8/255, with a warning, for a model that names
    no dataset. Keyword arguments are the attack's own parameters (strings are converted to the type
    of the default, as on the command line, and checked against the ranges the plugin declared).
    """
    from advkit._internal.grammar import merged, parse_spec
    from advkit._internal.plugins import registry
    from advkit._internal.registry import refuse_threat_params
    from advkit._internal.threat import ThreatModel

    name, spec_params = parse_spec(name)
    params = merged({name: spec_params}, {name: params})[name.lower()]
    if threat is not None and (eps is not None or norm is not None):
        # an engine passes the run's threat model: eps/norm here came from the attack's parameters
        refuse_threat_params("attack", name, {k: v for k, v in (("eps", eps), ("norm", norm)) if v is not None})
    if threat is None and eps is None and norm is not None and str(norm).strip().lower() not in ("linf", "inf"):
        raise UserError(f"attack {name!r}: give eps= with norm={norm}: a dataset's usual budget is an Linf one")
    threat = threat or usual_threat(model, eps)
    if eps is not None or norm is not None:
        threat = ThreatModel.parse(norm or threat.norm, eps if eps is not None else threat.eps, bounds=threat.bounds)
    entry = registry("attack").get(name)
    kwargs = bind_params(entry, params)
    from advkit._internal.counter import counted

    target, counter = counted(model)
    fn = entry.factory(target, threat, **kwargs)
    impl = getattr(fn, "implementation", "") or f"{entry.package} {entry.version}".strip() or entry.qualified
    return Attack(
        name=name.lower(), entry=entry, model=model, threat=threat, params=kwargs, fn=fn,
        implementation=impl, extra=getattr(fn, "report", None) or {}, counter=counter,
        stages=list(getattr(fn, "stages", None) or []),
    )
