"""One generic adapter from an ART evasion attack to an advkit attack factory.

The model is wrapped in ``art.estimators.classification.PyTorchClassifier``
(cross-entropy loss, ``clip_values`` = the threat bounds, the number of
classes from one forward pass); the model already contains its
normalization, so the normalization is inside ART's gradient path. Inputs go
to ART as float32 numpy arrays and come back as tensors on the input's
device. ART draws its randomness from numpy's global generator.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect

from advkit.plugin import LibraryAttack, UserError, dist_version
from advkit_art.catalog import ART_VERSION, Spec


def _annotation(default) -> str:
    return "float | None" if default is None else type(default).__name__


def factory_for(spec: Spec):
    """A factory ``(model, threat, **params)`` whose signature lists the attack's parameters."""

    def factory(model, threat, **params):
        return build(spec, model, threat, params)

    P = inspect.Parameter
    sig = [P("model", P.POSITIONAL_OR_KEYWORD), P("threat", P.POSITIONAL_OR_KEYWORD)]
    sig += [P(k, P.KEYWORD_ONLY, default=v, annotation=_annotation(v)) for k, v in spec.params.items()]
    factory.__signature__ = inspect.Signature(sig)
    factory.__doc__ = spec.summary
    factory.__name__ = factory.__qualname__ = "art_" + spec.name.replace("-", "_")
    return factory


def art_norm(norm: str):
    """The threat norm as ART writes it."""
    import numpy as np

    return {"Linf": np.inf, "L2": 2, "L1": 1}[norm]


def resolve(spec: Spec, threat, params: dict) -> dict:
    """The constructor keyword arguments of ``spec.cls`` (without the estimator)."""
    name = f"art.{spec.name}"
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise UserError(f"attack {name!r} has no parameter {unknown[0]!r} (its parameters: {', '.join(spec.params) or 'none'})")
    if spec.norms is not None and threat.norm not in spec.norms:
        raise UserError(f"attack {name!r} supports {'/'.join(spec.norms)} threat models only, not {threat}")
    if spec.requires and importlib.util.find_spec(spec.requires) is None:
        raise UserError(f"attack {name!r} needs the package {spec.requires!r} (pip install {spec.requires})")
    kw = {**spec.params, **params}
    for key, ratio in spec.steps.items():
        if kw.get(key) is None:
            kw[key] = ratio * float(threat.eps)
    if spec.levels_arg and kw.get(spec.levels_arg) is None:
        lo, hi = threat.bounds
        kw[spec.levels_arg] = int(float(threat.eps) / (hi - lo) * 255 + 1e-6)
        if kw[spec.levels_arg] < 1:
            raise UserError(f"attack {name!r} works in 8-bit levels: eps={threat.eps:g} is below one level (1/255)")
    kw = {spec.rename.get(k, k): v for k, v in kw.items()}
    if spec.eps_arg:
        kw[spec.eps_arg] = float(threat.eps)
    if spec.norm_arg:
        kw[spec.norm_arg] = art_norm(threat.norm)
    return kw


def _shown(value):
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


def _net(model, probabilities: bool):
    """``model`` as ART sees it: inputs cast to the model's dtype (ART sends float64 from some attacks)."""
    import torch

    class ArtView(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.dtype = next((p.dtype for p in model.parameters()), torch.float32)

        def forward(self, x):
            out = self.model(x.to(self.dtype))
            return out.softmax(dim=-1) if probabilities else out

    return ArtView()


def _quiet(attack):
    """Turn off the progress bars of the attacks an ensemble builds for itself."""
    for inner in getattr(attack, "attacks", None) or ():  # AutoAttack
        if hasattr(inner, "verbose"):
            inner.verbose = False
    table = getattr(attack, "attacks_dict", None)  # UniversalPerturbation
    if table is not None and attack.attacker_params is None:
        if attack.attacker not in table:
            raise ValueError(f"unknown attacker {attack.attacker!r}; one of {', '.join(table)}")
        inner = attack._get_class(table[attack.attacker])
        if "verbose" in getattr(inner, "attack_params", ()):
            attack.attacker_params = {"verbose": False}
    return attack


def _device(model, x):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return x.device


def build(spec: Spec, model, threat, params: dict) -> LibraryAttack:
    """The ``art.<name>`` attack: ``spec.cls`` with the threat model mapped onto its arguments."""
    kwargs = resolve(spec, threat, params)
    state: dict = {}

    def make(x):
        import art.attacks.evasion as evasion
        import torch
        from art.estimators.classification import PyTorchClassifier

        cls = getattr(evasion, spec.cls, None)
        if cls is None:
            raise UserError(f"ART {dist_version('adversarial-robustness-toolbox')} has no attack {spec.cls}")
        accepted = inspect.signature(cls.__init__).parameters
        extra = sorted(set(kwargs) - set(accepted))
        if extra:
            raise UserError(f"ART {spec.cls} takes no argument {extra[0]!r} (advkit's table is for ART {ART_VERSION})")
        fixed = {k: False for k in ("verbose", "targeted") if k in accepted}
        with torch.no_grad():
            nb_classes = int(model(x[:1]).shape[-1])
        classifier = PyTorchClassifier(
            model=_net(model, spec.probabilities),
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=tuple(x.shape[1:]),
            nb_classes=nb_classes,
            clip_values=tuple(float(b) for b in threat.bounds),
            device_type="gpu" if x.device.type == "cuda" else "cpu",
        )
        try:
            return _quiet(cls(classifier, **kwargs, **fixed))
        except (ValueError, TypeError) as exc:
            raise UserError(f"art.{spec.name}: {exc}") from None

    def run(x, y):
        import numpy as np
        import torch

        device = _device(model, x)
        key = (tuple(x.shape[1:]), str(device))
        ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with ctx:
            if key not in state:
                state[key] = make(x.to(device))
            attack = state[key]
            xn = x.detach().cpu().numpy().astype(np.float32)
            yn = np.eye(attack.estimator.nb_classes, dtype=np.float32)[y.detach().cpu().numpy()]  # one-hot
            if spec.per_sample:
                out = np.concatenate([attack.generate(x=xn[i : i + 1], y=yn[i : i + 1]) for i in range(len(xn))])
            else:
                out = attack.generate(x=xn, y=yn)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    version = dist_version("adversarial-robustness-toolbox")
    shown = {k: _shown(v) for k, v in kwargs.items()}
    report = {"attack_class": f"art.attacks.evasion.{spec.cls}", "attack_params": shown}
    return LibraryAttack(run, f"ART {version} {spec.cls}", report=report, state=state, stages=stages(spec, kwargs))


def stages(spec: Spec, kwargs: dict) -> list:
    """The plan of gradient attacks with ``max_iter`` steps (times their random starts): one forward and
    one backward pass per step, one forward more to start; FGSM one of each. Others are counted, not planned."""
    from advkit.plugin import Stage

    starts = max(int(kwargs.get("num_random_init") or 0), 1)
    if not spec.black_box and isinstance(kwargs.get("max_iter"), int):
        return [Stage(spec.cls, (kwargs["max_iter"] + 1) * starts, kwargs["max_iter"] * starts)]
    if spec.cls == "FastGradientMethod":
        return [Stage(spec.cls, 1, 1)]
    return []
