"""Models that take images in [0, 1] and own their normalization.

``load_model(spec)`` accepts, in this order:

1. a checkpoint path (``run/best.safetensors``; the JSON sidecar says how to rebuild it);
2. a registered backbone or named checkpoint (``smallcnn``, ``resnet18-cifar``,
   ``smallcnn-fmnist``), with parameters as ``name:key=value,...``;
3. a name with a prefix a backbone plugin declared (``timm/NAME``; see the
   ``prefix`` capability in :mod:`advkit._internal.registry`): the rest of the name goes
   to that factory as ``name``;
4. ``package.module:factory`` for the user's own ``nn.Module`` (a factory or an instance);
5. a bare name a prefix resolver claims (any name timm knows).

A backbone factory is called with the keyword arguments it accepts among
``num_classes``, ``in_chans``, ``input_shape`` (C, H, W) and the context the
caller gives (``load_model(..., context={"dataset": "cifar10", "norm": "Linf"})``;
the dataset's name is in it when ``dataset=`` is given).

Normalization: a backbone that is a plain ``nn.Module`` gets, in this order,
what the spec says (``mymod:factory:normalize=none``,
``mymod:factory:mean=0.49,0.48,0.45,std=0.25,0.24,0.26``, ``smallcnn:mean=0.5,std=0.25``),
the ``mean``/``std`` arguments, the dataset's, or none. A checkpoint or a
factory returning an :class:`ImageClassifier` keeps its own. What was applied
is in ``model.info["normalization"]``: ``{"mean", "std", "source"}`` with
source ``"user"``, ``"dataset"``, ``"model"`` or ``"none"``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from advkit._internal.errors import UserError


class ImageClassifier(nn.Module):
    """A backbone behind its input normalization: ``forward`` takes images in [0, 1].

    ``arch`` and ``arch_params`` name how to rebuild the backbone from the
    backbone registry; they travel in checkpoint sidecars.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        num_classes: int,
        input_shape: Sequence[int],
        arch: str = "",
        arch_params: dict | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        c = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.arch = arch
        self.arch_params = dict(arch_params or {})
        self.info: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    def config(self) -> dict:
        """What a checkpoint sidecar needs to rebuild this model."""
        return {
            "format": "advkit-checkpoint/1",
            "arch": self.arch,
            "arch_params": self.arch_params,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            **{k: v for k, v in self.info.items() if k in ("defenses", "stochastic", "dataset")},
        }

    @property
    def stochastic(self) -> bool:
        return bool(self.info.get("stochastic", False))


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _call_factory(fn, params, **offered):
    """``fn(**params)`` plus each ``offered`` keyword argument that ``fn`` accepts (``params`` win)."""
    if not callable(fn):
        raise UserError(f"{getattr(fn, '__name__', fn)!r} is a {type(fn).__name__}, not a model or a factory of one")
    kwargs = dict(params)
    for key, value in offered.items():
        if value is not None and _accepts(fn, key):
            kwargs.setdefault(key, value)
    try:
        return fn(**kwargs)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise UserError(f"building the model with {getattr(fn, '__qualname__', fn)}"
                        f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: "
                        f"{type(exc).__name__}: {first}") from None


def build_backbone(arch: str, num_classes: int, input_shape: Sequence[int], params: dict | None = None) -> nn.Module:
    """Instantiate a registered backbone by name (no normalization)."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import bind_params

    entry = registry("backbone").get(arch)
    return _call_factory(entry.factory, bind_params(entry, params or {}), num_classes=num_classes,
                         in_chans=int(input_shape[0]), input_shape=tuple(input_shape))


def _prefixed(name: str):
    """The backbone entry whose declared prefix starts ``name`` (longest prefix first), else None."""
    from advkit._internal.plugins import registry

    found = [e for e in registry("backbone") if e.can("prefix") and name.lower().startswith(str(e.can("prefix")).lower())]
    return max(found, key=lambda e: len(e.can("prefix")), default=None)


def _claimed(name: str):
    """The first prefix resolver that claims the bare ``name``, else None."""
    from advkit._internal.plugins import registry

    for e in registry("backbone"):
        claims = e.can("claims")
        if callable(claims) and claims(name):
            return e
    return None


def _is_checkpoint_path(spec: str) -> bool:
    if _prefixed(spec) is not None:
        return False
    return spec.endswith((".safetensors", ".json")) or Path(spec).exists()


_NORM_KEYS = ("normalize", "mean", "std")


def _sizes(num_classes, input_shape, info) -> tuple[int, tuple[int, ...]]:
    """The class count and input shape a new model is built for: given, else the dataset's, else 10 of 3x32x32."""
    num_classes = int(num_classes if num_classes is not None else info.num_classes if info else 10)
    input_shape = tuple(int(s) for s in (input_shape or (info.input_shape if info else (3, 32, 32))))
    if not 1 <= num_classes <= 100_000 or not 1 <= len(input_shape) <= 3 or min(input_shape) < 1:
        raise UserError(f"load_model: num_classes must lie in [1, 100000] and input_shape be 1 to 3 positive "
                        f"sizes, got {num_classes} and {input_shape}")
    return num_classes, input_shape


def load_model(
    spec: str | nn.Module | None = None,
    *,
    dataset=None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    check: bool = True,
    context: dict | None = None,
) -> ImageClassifier:
    """Build or load a model that takes images in [0, 1]; see the module docstring for ``spec``.

    ``dataset`` (an :class:`~advkit._internal.data.ImageData`, its ``DataInfo`` or a
    dataset name) gives the number of classes, the input shape and the
    normalization of a new backbone; ``num_classes``, ``input_shape``, ``mean``
    and ``std`` override it (without either: 10 classes of 3x32x32, no
    normalization). Checkpoints carry their own. ``model.info["normalization"]``
    says what is applied and where it came from. ``spec`` None (or ``"default"``) is the checkpoint a plugin
    declares as the default model.
    """
    from advkit._internal.grammar import parse_spec
    from advkit._internal.registry import DEFAULT

    if spec is None or (isinstance(spec, str) and spec.strip().lower() == DEFAULT):
        from advkit._internal.plugins import registry

        spec = registry("backbone").default("model").name
    info = _data_info(dataset)
    shape_from = "given" if input_shape is not None else f"of dataset {info.name!r}" if info else "the default"
    num_classes, input_shape = _sizes(num_classes, input_shape, info)
    context = {**({"dataset": info.name} if info else {}), **(context or {})}
    offered = dict(context, num_classes=num_classes, in_chans=input_shape[0], input_shape=input_shape)
    if isinstance(spec, nn.Module):
        name, params = type(spec).__name__, {}
    elif _is_checkpoint_path(spec) and "=" not in spec:
        name, params = None, {}
    else:
        name, params = parse_spec(spec)
    norm = _normalization(params, mean, std, info, input_shape[0], spec)
    if name is None:
        from advkit._internal.checkpoint import load_checkpoint

        model = load_checkpoint(spec)
    else:
        built, name = (spec, name) if isinstance(spec, nn.Module) else _build(name, params, offered)
        model = _wrap(built, name, params, norm, num_classes, input_shape, spec)
    if weights:
        from advkit._internal.checkpoint import load_backbone_weights

        load_backbone_weights(model, weights)
        model.info["weights"] = str(weights)
    model = model.to(device).eval()
    if check:
        check_output(model, shape_from=shape_from)
    return model


def _data_info(dataset):
    """The ``DataInfo`` of ``dataset`` (ImageData, DataInfo, a name or None)."""
    if dataset is None:
        return None
    if isinstance(dataset, str):
        from advkit._internal.data import load_dataset

        return load_dataset(dataset, "test").info
    info = getattr(dataset, "info", dataset)
    if not all(hasattr(info, k) for k in ("num_classes", "input_shape", "mean", "std", "name")):
        raise UserError(f"dataset= takes an ImageData, its DataInfo or a dataset name, got {type(dataset).__name__}")
    return info


def _build(name: str, params: dict, offered: dict):
    """Call the factory ``name`` names (a registered backbone, a prefixed name or ``package.module:factory``);
    return what it built and the architecture name a checkpoint records."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import bind_params

    reg = registry("backbone")
    prefixed = _prefixed(name)
    if name in reg:
        entry = reg.get(name)
        params.update(bind_params(entry, params))  # typed values: the checkpoint records what was built
        return _call_factory(entry.factory, params, **offered), entry.name
    if prefixed is not None or (":" not in name and _claimed(name) is not None):
        entry = prefixed or _claimed(name)
        rest = name[len(entry.can("prefix")):] if prefixed is not None else name
        params.update(bind_params(entry, params), name=rest)
        return _call_factory(entry.factory, params, **offered), entry.name
    if ":" in name:
        from advkit._internal.plugins import import_object
        from advkit._internal.registry import Entry, introspect

        obj = import_object(name)
        if isinstance(obj, nn.Module):
            return obj, name
        if not callable(obj):
            raise UserError(f"{name!r} is a {type(obj).__name__}, not an nn.Module or a factory of one")
        params.update(bind_params(Entry("backbone", name, obj, "user", params=introspect(obj)), params))
        return _call_factory(obj, params, **offered), name
    raise _unknown_backbone(name)


def _wrap(built, name: str, params: dict, norm: dict | None, num_classes: int, input_shape, spec) -> ImageClassifier:
    """Put ``built`` behind the normalization ``norm`` (unless it already is an ImageClassifier)."""
    if isinstance(built, ImageClassifier):
        if norm is not None and norm["source"] in ("user", "none"):
            raise UserError(f"{spec!r} is a complete model with its own normalization (mean {built.mean.flatten().tolist()}, "
                            f"std {built.std.flatten().tolist()}): drop normalize=/mean=/std=")
        built.info.setdefault("normalization", _norm_record(built.mean.flatten().tolist(), built.std.flatten().tolist(), "model"))
        return built
    if not isinstance(built, nn.Module):
        raise UserError(f"{name} did not give an nn.Module (got {type(built).__name__})")
    norm = norm or _norm_record([0.0] * input_shape[0], [1.0] * input_shape[0], "none")
    model = ImageClassifier(built, norm["mean"], norm["std"], num_classes=num_classes, input_shape=input_shape,
                            arch=name, arch_params=params)
    model.info["normalization"] = norm
    return model


def _norm_record(mean, std, source: str) -> dict:
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "source": source}


def _normalization(params: dict, mean, std, info, channels: int, spec) -> dict | None:
    """The normalization a new backbone gets, taking ``normalize=``/``mean=``/``std=`` out of ``params``.

    Precedence: the spec's own (``normalize=none`` or ``mean=..,std=..``), then
    ``mean``/``std`` arguments ("user"), then the dataset's; None when nothing says.
    """
    from advkit._internal.values import parse_number

    given = {k: params.pop(k) for k in _NORM_KEYS if k in params}
    if "normalize" in given:
        if str(given["normalize"]).lower() != "none" or len(given) > 1:
            raise UserError(f"{spec!r}: normalize= takes only 'none' (or give mean=...,std=... instead)")
        return _norm_record([0.0] * channels, [1.0] * channels, "none")
    if given or mean is not None or std is not None:
        if given:
            if set(given) != {"mean", "std"}:
                raise UserError(f"{spec!r}: give both mean= and std= (one value, or one per channel joined by commas)")
            try:
                mean, std = ([parse_number(v) for v in str(given[k]).split(",")] for k in ("mean", "std"))
            except ValueError as exc:
                raise UserError(f"{spec!r}: mean= and std= take numbers ({exc})") from None
        mean = list(mean) if mean is not None else [0.0]
        std = list(std) if std is not None else [1.0]
        mean, std = (v * channels if len(v) == 1 else v for v in (mean, std))
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise UserError(f"normalization of {spec!r}: need {channels} mean and {channels} positive std values, "
                            f"got mean {mean}, std {std}")
        return _norm_record(mean, std, "user")
    if info is not None:
        return _norm_record(info.mean, info.std, "dataset")
    return None


def _unknown_backbone(name: str) -> UserError:
    """Suggest from the registry's own names (fast); mention the prefixes plugins resolve."""
    from advkit._internal.errors import closest
    from advkit._internal.plugins import registry

    reg = registry("backbone")
    hits = closest(name, reg.all_names())
    hint = f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
    prefixes = [f"{e.can('prefix')}NAME" for e in reg if e.can("prefix")]
    more = f", a prefixed name ({', '.join(prefixes)})" if prefixes else ""
    return UserError(f"unknown backbone {name!r}{hint} (see 'advkit list backbones'{more}, a checkpoint path "
                     f"or package.module:factory)")


def check_output(model: ImageClassifier, batch: int = 2, shape_from: str = "given") -> None:
    """Refuse a model whose output on a batch is not ``(N, num_classes)`` logits.

    ``shape_from`` says where the input shape came from, for the message.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.rand(batch, *model.input_shape, device=device)
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(
            f"model {model.arch!r} fails on input of shape {tuple(x.shape)} (input shape {shape_from}): "
            f"{type(exc).__name__}: {first}; if it takes other inputs, pass input_shape=(C, H, W) or dataset= "
            f"to load_model (--dataset on the command line)"
        ) from None
    if not torch.is_tensor(out) or out.shape != (batch, model.num_classes):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserError(
            f"model {model.arch!r} returns {shape} for a batch of {batch}; expected ({batch}, {model.num_classes}) logits"
        )
