"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically.

``NAME.safetensors`` holds the tensors, ``NAME.json`` what is needed to rebuild
the model: architecture and its parameters, number of classes, input shape,
normalization, and (from training) the defense recipe, epoch, metrics and
whether the model is stochastic. Nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advkit._internal import files
from advkit._internal.errors import UserError

if TYPE_CHECKING:
    from advkit._internal.models import ImageClassifier


def sidecar(path: str | os.PathLike) -> Path:
    """The JSON file that belongs to a ``.safetensors`` checkpoint."""
    return Path(path).with_suffix(".json")


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically write a safetensors file (shared storage is cloned first)."""
    from safetensors.torch import save

    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    files.atomic_write_bytes(path, save(clean, metadata=meta))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt file is a :class:`UserError`."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint file not found: {path}")
    try:
        return load(path.read_bytes())
    except Exception as exc:
        raise UserError(f"{path} is not a valid safetensors file ({type(exc).__name__}: {exc})") from None


def save_checkpoint(model, path: str | os.PathLike, **info) -> Path:
    """Save an :class:`advkit._internal.models.ImageClassifier` (weights + sidecar) atomically.

    ``info`` adds to the sidecar (defenses, epoch, metrics, ...). The sidecar
    also records which plugin distribution provided the backbone and each
    defense (``"plugins"``), so that loading it without them names the package.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    meta = dict(model.config()) if hasattr(model, "config") else {}
    meta.update(info)
    meta["plugins"] = provenance(meta)
    state = {k: v for k, v in model.state_dict().items()}
    save_tensors(path, state, {"format": "advkit"})
    files.atomic_write_json(sidecar(path), meta)
    return path


def provenance(meta: dict) -> dict:
    """Provider, distribution and version of the backbone ``meta["arch"]`` and of each defense in ``meta``."""
    from advkit._internal.plugins import registry

    def origin(kind, name):
        entry = registry(kind).find(name) if name else None
        return {"name": name, **entry.provenance()} if entry is not None else None

    out = {"backbone": origin("backbone", meta.get("arch", ""))}
    defenses = [origin("defense", r.get("name", "")) for r in meta.get("defenses") or []]
    return {**out, "defenses": [d for d in defenses if d is not None]}


def read_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar(path)
    if not side.is_file():
        raise UserError(f"checkpoint {path} has no sidecar {side.name} (architecture and normalization)")
    from advkit._internal.schema import Fields, read_json

    return Fields(read_json(side, "a checkpoint sidecar"), str(side)).data


def apply_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` strictly; a mismatch is one clear :class:`UserError`."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"shape mismatch: {', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")
        if missing:
            parts.append(f"missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise UserError(f"weights in {source} do not fit the architecture ({'; '.join(parts)})")
    module.load_state_dict(state)


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors`` or a ``.pth``/``.pt`` state dict (``weights_only=True``)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled code besides tensors, and advkit will not run it: save the state "
                        f"dict alone (torch.save(model.state_dict(), ...)) or as .safetensors") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"cannot read weights from {path} ({type(exc).__name__}: {first})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a state dict")
    return obj


def load_backbone_weights(model, path: str | os.PathLike) -> None:
    """Load a weights file into ``model.backbone``; an advkit checkpoint (keys ``backbone.*``) is accepted
    when it fits the backbone and its normalization is the model's, else refused with what to do instead."""
    state = load_weights_file(path)
    prefix = "backbone."
    if not state or not all(k.startswith(prefix) for k in state):
        return apply_weights(model.backbone, state, str(path))
    side = sidecar(path)
    meta = read_sidecar(path) if side.is_file() else {}
    same_norm = not meta or (_close(meta.get("mean"), model.mean.flatten().tolist())
                             and _close(meta.get("std"), model.std.flatten().tolist()))
    stripped = {k[len(prefix):]: v for k, v in state.items()}
    why = "its normalization differs from this model's"
    if same_norm:
        try:
            return apply_weights(model.backbone, stripped, str(path))
        except UserError as exc:
            why = f"its layers differ from this backbone's: {str(exc).partition('(')[2].rstrip(')')}"
    raise UserError(f"{path} is an advkit checkpoint ({why}): pass it as --model {path} "
                    f"(load_model({str(path)!r}))")


def _close(a, b) -> bool:
    return a is not None and len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-7 for x, y in zip(a, b))


def require_plugins(path: Path, meta: dict) -> None:
    """Refuse a checkpoint whose backbone or defenses no loaded plugin registers, naming the package to install."""
    from advkit._internal.plugins import registry

    provided = meta.get("plugins") or {}
    needs = [("backbone", meta["arch"], provided.get("backbone") or {})]
    by_name = {d.get("name"): d for d in provided.get("defenses") or []}
    needs += [("defense", r.get("name", ""), by_name.get(r.get("name")) or {}) for r in meta.get("defenses") or []]
    for kind, name, origin in needs:
        if name in registry(kind):
            continue
        if kind == "backbone" and ":" in name:
            raise UserError(f"checkpoint {path} holds the user model {name!r}: load it with "
                            f"--model {name} --weights {path} (load_model({name!r}, weights=...))")
        package = origin.get("package")
        if package:
            version = origin.get("version")
            raise UserError(f"checkpoint {path} needs {kind} {name!r} from the plugin package {package!r}"
                            f"{f' {version}' if version else ''} (pip install {package}), which is not loaded here")
        raise UserError(f"checkpoint {path} needs {kind} {name!r}, which no loaded plugin registers "
                        f"(see 'advkit list {kind}s')")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> ImageClassifier:
    """Rebuild a model from ``.safetensors`` + JSON sidecar."""
    from advkit._internal.models import ImageClassifier, _norm_record, build_backbone

    path = Path(path)
    if path.is_dir():
        for candidate in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / candidate).is_file():
                path = path / candidate
                break
    if not path.is_file():
        raise UserError(f"checkpoint file not found: {path}")
    from advkit._internal.schema import checked_sidecar

    meta = checked_sidecar(read_sidecar(path), str(sidecar(path)))
    state = load_tensors(path)
    arch, num_classes, shape, mean, std = (meta[k] for k in ("arch", "num_classes", "input_shape", "mean", "std"))
    require_plugins(path, meta)
    backbone = build_backbone(arch, num_classes, shape, meta.get("arch_params"))
    model = ImageClassifier(backbone, mean, std, num_classes=num_classes, input_shape=shape, arch=arch, arch_params=meta.get("arch_params"))
    model.info.update(meta)
    model.info["checkpoint"] = str(path)
    model.info["normalization"] = _norm_record(mean, std, "model")
    for recipe in meta.get("defenses") or []:
        _apply_model_defense(model, recipe)
    apply_weights(model, state, str(path))
    return model.to(device).eval()


def _apply_model_defense(model: ImageClassifier, recipe: dict) -> None:
    """Re-apply a defense's model transform (LWTA, noise injection) before loading its weights."""
    from advkit._internal.defense import Defense, create_defense
    from advkit._internal.plugins import registry

    factory = registry("defense").get(recipe["name"]).factory
    if isinstance(factory, type) and issubclass(factory, Defense) and factory.transform_model is Defense.transform_model:
        return  # no model point: nothing to rebuild (its training parameters need not fit this version)
    defense = create_defense(recipe["name"], **recipe.get("params", {}))
    model.backbone = defense.transform_model(model.backbone) or model.backbone
