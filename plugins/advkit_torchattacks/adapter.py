"""One generic adapter from a torchattacks class to an advkit attack factory.

The threat model fills the class's own budget arguments (``eps`` or
``max_epsilon``, ``norm``, and ``alpha`` scaled with eps); the number of
classes (``n_classes``) comes from one forward pass on the first batch. The
torchattacks object is built on first use and then reused, so its random
state behaves exactly as when calling torchattacks directly.

Square's queries are shown next to the engine's progress bar as they happen
(:func:`advkit.plugin.activity`), and each attack declares its plan (worst-case
passes per point, :func:`stages`) for the engine's cost estimate.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io

from advkit.plugin import LibraryAttack, UserError, activity, dist_version
from advkit_torchattacks.catalog import TORCHATTACKS_VERSION, Spec

_REDUCED_AA = "(reduced: 10-step APGD; not the standard AutoAttack)"


def _annotation(default) -> str:
    return "float | None" if default is None else type(default).__name__


def factory_for(spec: Spec):
    """A factory ``(model, threat, **params)`` whose signature lists the class's parameters."""

    def factory(model, threat, **params):
        return build(spec, model, threat, params)

    P = inspect.Parameter
    sig = [P("model", P.POSITIONAL_OR_KEYWORD), P("threat", P.POSITIONAL_OR_KEYWORD)]
    sig += [P(k, P.KEYWORD_ONLY, default=v, annotation=_annotation(v)) for k, v in spec.params.items()]
    factory.__signature__ = inspect.Signature(sig)
    factory.__doc__ = spec.summary
    factory.__name__ = factory.__qualname__ = f"ta_{spec.cls.lower()}"
    return factory


def _parse_tuple(text: str) -> tuple:
    parts = [p for p in text.strip().strip("()[]").replace(" ", "").split(",") if p]
    try:
        return tuple(int(p) if p.lstrip("+-").isdigit() else float(p) for p in parts)
    except ValueError:
        raise UserError(f"expected numbers separated by commas (e.g. 2,10), got {text!r}") from None


def resolve(spec: Spec, threat, params: dict) -> dict:
    """The constructor keyword arguments of ``spec.cls`` (without model and n_classes)."""
    name = f"ta.{spec.cls.lower()}"
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise UserError(f"attack {name!r} has no parameter {unknown[0]!r} (its parameters: {', '.join(spec.params) or 'none'})")
    if spec.norms is not None and threat.norm not in spec.norms:
        raise UserError(f"attack {name!r} supports {'/'.join(spec.norms)} threat models only, not {threat}")
    kw = {**spec.params, **params}
    for key, default in spec.params.items():
        if isinstance(default, tuple) and isinstance(kw[key], str):
            kw[key] = _parse_tuple(kw[key])
    if "alpha" in kw and kw["alpha"] is None:
        kw["alpha"] = spec.default_alpha * float(threat.eps) / spec.default_eps
    if spec.budget:
        kw[spec.budget] = float(threat.eps)
    if spec.takes_norm:
        kw["norm"] = threat.norm
    if spec.quiet:
        kw["verbose"] = False
    return kw


def build(spec: Spec, model, threat, params: dict) -> LibraryAttack:
    """The ``ta.<class>`` attack: ``spec.cls`` with the threat model mapped onto its arguments."""
    return bind(
        spec.cls,
        model,
        threat,
        resolve(spec, threat, params),
        infer_classes=spec.infer_classes,
        rgb_only=spec.rgb_only,
    )


def bind(cls_name: str, model, threat, kwargs: dict, *, infer_classes=False, rgb_only=False) -> LibraryAttack:
    """Wrap ``torchattacks.<cls_name>(model, **kwargs)`` as an advkit attack."""
    import torchattacks

    version = dist_version("torchattacks")
    cls = getattr(torchattacks, cls_name, None)
    if cls is None:
        raise UserError(f"torchattacks {version} has no attack {cls_name} (advkit's table is for torchattacks {TORCHATTACKS_VERSION})")
    accepted = inspect.signature(cls.__init__).parameters
    extra = sorted(set(kwargs) - set(accepted))
    if extra:
        raise UserError(f"torchattacks {version} {cls_name} takes no argument {extra[0]!r} "
                        f"(advkit's table is for torchattacks {TORCHATTACKS_VERSION})")
    state: dict = {}

    def run(x, y):
        import torch

        if rgb_only and x.shape[1] != 3:
            raise UserError(f"torchattacks {cls_name} works on 3-channel (RGB) images only, got {x.shape[1]} channel(s)")
        atk = state.get("attack")
        if atk is None:
            kw = dict(kwargs)
            if infer_classes:
                with torch.no_grad():
                    kw["n_classes"] = int(model(x[:1]).shape[-1])
            with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints a few notices
                atk = state["attack"] = cls(model, **kw)
            if cls_name == "Square":
                _track_queries(atk)
        return atk(x, y)

    label = f"torchattacks {version} {cls_name}" + (f" {_REDUCED_AA}" if cls_name == "AutoAttack" else "")
    shown = {k: v for k, v in kwargs.items() if isinstance(v, (bool, int, float, str, tuple, type(None)))}
    report = {"attack_class": f"torchattacks.{cls_name}", "attack_params": shown}
    plan = []
    if cls_name == "AutoAttack":
        report["standard_autoattack"] = False
    else:
        plan = stages(cls_name, kwargs)
    return LibraryAttack(run, label, report=report, state=state, stages=plan)


def stages(cls_name: str, kwargs: dict) -> list:
    """The plan from the attack's own arguments: ``n_queries`` forward passes (score-based attacks), or
    ``steps`` forward+backward passes (one forward more to start), times ``n_restarts``; FGSM one of
    each; none for the others (their cost is counted, not planned)."""
    from advkit.plugin import Stage

    restarts = int(kwargs.get("n_restarts") or 1)
    if isinstance(kwargs.get("n_queries"), int):  # score-based: a point stops being queried once broken
        return [Stage(cls_name, (kwargs["n_queries"] + 1) * restarts, 0, early_stop=True)]
    if isinstance(kwargs.get("steps"), int):
        return [Stage(cls_name, (kwargs["steps"] + 1) * restarts, kwargs["steps"] * restarts)]
    if cls_name in ("FGSM", "FFGSM"):
        return [Stage(cls_name, 1, 1)]
    return []


def _track_queries(atk) -> None:
    """Count a torchattacks ``Square``'s queries (one ``margin_and_loss`` each) and show them."""
    count = {"restart": 0, "query": 0}

    def show(force: bool) -> None:
        activity(f"Square: restart {count['restart']}/{atk.n_restarts}, query "
                 f"{min(count['query'], atk.n_queries)}/{atk.n_queries}", force=force)

    perturb, single, margin = atk.perturb, atk.attack_single_run, atk.margin_and_loss

    @functools.wraps(perturb)
    def perturb_batch(*args, **kw):
        count["restart"] = count["query"] = 0
        return perturb(*args, **kw)

    @functools.wraps(single)
    def attack_single_run(*args, **kw):
        count["restart"] += 1
        count["query"] = 0
        show(True)
        return single(*args, **kw)

    @functools.wraps(margin)
    def margin_and_loss(*args, **kw):
        count["query"] += 1
        show(False)
        return margin(*args, **kw)

    atk.perturb, atk.attack_single_run, atk.margin_and_loss = perturb_batch, attack_single_run, margin_and_loss
