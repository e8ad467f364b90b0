"""Models that take images in [0, 1] and own their normalization.

``load_model(spec)`` accepts, in this order:

1. a checkpoint path (``run/best.safetensors``; the JSON sidecar says how to rebuild it);
2. a registered backbone or named checkpoint (``smallcnn``, ``resnet18-cifar``,
   ``smallcnn-fmnist``), with parameters as ``name:key=value,...``;
3. a name with a prefix a backbone plugin declared (``timm/NAME``; see the
   ``prefix`` capability in :mod:`advkit.registry`): the rest of the name goes
   to that factory as ``name``;
4. ``package.module:factory`` for the user's own ``nn.Module`` (a factory or an instance);
5. a bare name a prefix resolver claims (any name timm knows).

A backbone factory is called with the keyword arguments it accepts among
``num_classes``, ``in_chans``, ``input_shape`` (C, H, W) and the context the
caller gives (``load_model(..., context={"dataset": "cifar10", "norm": "Linf"})``).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from advkit.errors import UserError


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
    kwargs = dict(params)
    for key, value in offered.items():
        if value is not None and _accepts(fn, key):
            kwargs.setdefault(key, value)
    return fn(**kwargs)


def build_backbone(arch: str, num_classes: int, input_shape: Sequence[int], params: dict | None = None) -> nn.Module:
    """Instantiate a registered backbone by name (no normalization)."""
    from advkit.plugins import registry
    from advkit.registry import bind_params

    entry = registry("backbone").get(arch)
    return _call_factory(entry.factory, bind_params(entry, params or {}), num_classes=num_classes,
                         in_chans=int(input_shape[0]), input_shape=tuple(input_shape))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> ImageClassifier:
    """Rebuild a model from ``.safetensors`` + JSON sidecar."""
    from advkit.checkpoint import load_state, load_tensors, read_sidecar

    path = Path(path)
    if path.is_dir():
        for candidate in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / candidate).is_file():
                path = path / candidate
                break
    if not path.is_file():
        raise UserError(f"checkpoint file not found: {path}")
    meta = read_sidecar(path)
    state = load_tensors(path)
    try:
        arch, num_classes, shape = meta["arch"], int(meta["num_classes"]), meta["input_shape"]
        mean, std = meta["mean"], meta["std"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"sidecar of {path} lacks {exc} (need arch, num_classes, input_shape, mean, std)") from None
    backbone = build_backbone(arch, num_classes, shape, meta.get("arch_params"))
    model = ImageClassifier(backbone, mean, std, num_classes=num_classes, input_shape=shape, arch=arch, arch_params=meta.get("arch_params"))
    model.info.update(meta)
    model.info["checkpoint"] = str(path)
    for recipe in meta.get("defenses") or []:
        _apply_model_defense(model, recipe)
    load_state(model, state, str(path))
    return model.to(device).eval()


def _apply_model_defense(model: ImageClassifier, recipe: dict) -> None:
    """Re-apply a defense's model transform (LWTA, noise injection) before loading its weights."""
    from advkit.defense import create_defense

    defense = create_defense(recipe["name"], **recipe.get("params", {}))
    if hasattr(defense, "transform_model"):
        model.backbone = defense.transform_model(model.backbone) or model.backbone


def _prefixed(name: str):
    """The backbone entry whose declared prefix starts ``name`` (longest prefix first), else None."""
    from advkit.plugins import registry

    found = [e for e in registry("backbone") if e.can("prefix") and name.lower().startswith(str(e.can("prefix")).lower())]
    return max(found, key=lambda e: len(e.can("prefix")), default=None)


def _claimed(name: str):
    """The first prefix resolver that claims the bare ``name``, else None."""
    from advkit.plugins import registry

    for e in registry("backbone"):
        claims = e.can("claims")
        if callable(claims) and claims(name):
            return e
    return None


def _is_checkpoint_path(spec: str) -> bool:
    if _prefixed(spec) is not None:
        return False
    return spec.endswith((".safetensors", ".json")) or Path(spec).exists()


def load_model(
    spec: str | nn.Module,
    *,
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    check: bool = True,
    context: dict | None = None,
) -> ImageClassifier:
    """Build or load a model that takes images in [0, 1]; see the module docstring for ``spec``.

    ``num_classes``, ``input_shape``, ``mean`` and ``std`` (usually the
    dataset's) apply to new backbones; checkpoints carry their own.
    """
    from advkit.plugins import registry
    from advkit.registry import parse_spec

    in_chans = int(input_shape[0])
    mean = list(mean) if mean is not None else [0.0] * in_chans
    std = list(std) if std is not None else [1.0] * in_chans
    offered = dict(context or {}, num_classes=num_classes, in_chans=in_chans, input_shape=tuple(input_shape))

    def wrap(built, arch, arch_params=None):
        if isinstance(built, ImageClassifier):
            return built
        if not isinstance(built, nn.Module):
            raise UserError(f"{arch} did not give an nn.Module (got {type(built).__name__})")
        return ImageClassifier(built, mean, std, num_classes=num_classes, input_shape=input_shape, arch=arch,
                               arch_params=arch_params)

    if isinstance(spec, nn.Module):
        model = wrap(spec, type(spec).__name__)
    elif _is_checkpoint_path(spec) and "=" not in spec:
        model = load_checkpoint(spec)
    else:
        from advkit.registry import bind_params

        name, params = _split_spec(spec, parse_spec)
        reg = registry("backbone")
        prefixed = _prefixed(name)
        if name in reg:
            entry = reg.get(name)
            model = wrap(_call_factory(entry.factory, bind_params(entry, params), **offered), entry.name, params)
        elif prefixed is not None or (":" not in name and _claimed(name) is not None):
            entry = prefixed or _claimed(name)
            rest = name[len(entry.can("prefix")):] if prefixed is not None else name
            params = {**bind_params(entry, params), "name": rest}
            model = wrap(_call_factory(entry.factory, params, **offered), entry.name, params)
        elif ":" in name:
            from advkit.plugins import import_object

            obj = import_object(name)
            model = wrap(obj if isinstance(obj, nn.Module) else _call_factory(obj, params, **offered), name)
        else:
            raise _unknown_backbone(name)
    if weights:
        from advkit.checkpoint import load_state, load_weights_file

        load_state(model.backbone, load_weights_file(weights), weights)
    model = model.to(device).eval()
    if check:
        check_output(model)
    return model


def _split_spec(spec: str, parse_spec):
    # "mod.sub:factory" is an import path; "name:key=value,..." carries parameters.
    head, sep, tail = spec.partition(":")
    if sep and "=" not in tail and "/" not in head:
        return spec, {}
    return parse_spec(spec)


def _unknown_backbone(name: str) -> UserError:
    """Suggest from the registry's own names (fast); mention the prefixes plugins resolve."""
    from advkit.errors import closest
    from advkit.plugins import registry

    reg = registry("backbone")
    hits = closest(name, reg.all_names())
    hint = f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
    prefixes = [f"{e.can('prefix')}NAME" for e in reg if e.can("prefix")]
    more = f", a prefixed name ({', '.join(prefixes)})" if prefixes else ""
    return UserError(f"unknown backbone {name!r}{hint} (see 'advkit list backbones'{more}, a checkpoint path "
                     f"or package.module:factory)")


def check_output(model: ImageClassifier, batch: int = 2) -> None:
    """Refuse a model whose output on a batch is not ``(N, num_classes)`` finite logits."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.rand(batch, *model.input_shape, device=device)
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:
        raise UserError(
            f"model {model.arch!r} fails on input of shape {tuple(x.shape)}: {type(exc).__name__}: {exc}"
        ) from None
    if not torch.is_tensor(out) or out.shape != (batch, model.num_classes):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserError(
            f"model {model.arch!r} returns {shape} for a batch of {batch}; expected ({batch}, {model.num_classes}) logits"
        )
