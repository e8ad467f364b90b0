"""Names to objects, for an evaluation: the engine's own defaults, so that the API and the CLI agree.

``advkit.evaluate`` and ``advkit eval`` take the same arguments and reach the
same run: a model by name (or none: the default model a plugin declares), a
dataset by name (or none: the declared default), attacks as a list of
``NAME[:key=value]`` specs or one comma-separated string (or none: the declared
default suite; ``"none"``: clean accuracy only), the device (``auto``: CUDA when
available), the batch size (``auto``: measured), and the seed, which seeds
everything before the model is even built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit._internal import distributed as D
from advkit._internal.errors import UserError
from advkit._internal.grammar import merged, parse_list, parse_spec
from advkit._internal.plugins import registry
from advkit._internal.registry import DEFAULT

NONE = "none"  # --attacks none: clean accuracy only


@dataclass
class Resolved:
    model: torch.nn.Module
    data: object
    attacks: list[str]
    attack_opts: dict[str, dict]
    device: str
    batch_size: int
    meta: dict
    joined: bool  # this run joined torchrun's process group (and leaves it at the end)


def attack_list(attacks, attack_opts) -> tuple[list[str], dict[str, dict]]:
    """Names and parameters from ``attacks`` (specs, or one comma-separated string; None: the declared
    default suite; ``"none"``: no attack) and ``attack_opts`` (``{"pgd": {"steps": 20}}``)."""
    if attacks is None or (isinstance(attacks, str) and attacks.strip().lower() == DEFAULT):
        items = [(name, {}) for name in registry("attack").suite()]
        if not items:
            raise UserError("no plugin declares a default attack suite: name the attacks (see 'advkit list attacks')")
    elif isinstance(attacks, str) and attacks.strip().lower() == NONE:
        items = []
    else:
        items = parse_list(attacks)
        if not items:
            raise UserError("no attack given (e.g. attacks=pgd,cw,aa, or none for clean accuracy only)")
    if attack_opts is not None and not isinstance(attack_opts, dict):
        raise UserError(f"attack_opts must map attack names to their parameters, got {type(attack_opts).__name__}")
    opts = merged({name: params for name, params in items if params}, attack_opts or {}, where="attack_opts")
    return [name for name, _ in items], opts


def model_and_data(model, data, *, weights, split, data_dir, norm, device):
    """The dataset (by name, or as given) and the model (by name, built for the dataset, or as given), checked
    to fit each other: same number of classes, same input shape."""
    from advkit._internal.data import load_dataset
    from advkit._internal.models import load_model

    name = None
    if model is None or (isinstance(model, str) and model.strip().lower() == DEFAULT):
        model = name = registry("backbone").default("model").name
    if data is None and isinstance(model, str):
        entry = registry("backbone").find(parse_spec(model)[0])
        data = entry.capabilities.get("trained_on") if entry else None  # the data a checkpoint was trained on
    if data is None or isinstance(data, str):
        data = load_dataset(data, split, data_dir=data_dir)
    info = getattr(data, "info", None)
    if isinstance(model, str):
        name = model
        model = load_model(model, dataset=info, weights=weights, device=device,
                           context={"dataset": info.name, "norm": norm} if info else {"norm": norm})
    elif weights is not None:
        raise UserError("weights= applies to a model given by name; load the weights into your model instead")
    if model is None or not callable(model):
        raise UserError(f"model must be a name or an nn.Module, got {type(model).__name__}")
    if info is not None and hasattr(model, "input_shape") and hasattr(model, "num_classes"):
        if tuple(model.input_shape) != tuple(info.input_shape) or model.num_classes != info.num_classes:
            raise UserError(f"model {name or getattr(model, 'arch', type(model).__name__)!r} expects "
                            f"{model.num_classes} classes of shape {tuple(model.input_shape)}, but dataset "
                            f"{info.name!r} has {info.num_classes} classes of shape {tuple(info.input_shape)}")
    return model, data, name


def batch_size_of(value, model, device, quiet: bool) -> int:
    """A positive number, or ``auto`` (the largest that fits a GPU, halved; the measured fastest on a CPU)."""
    if not (isinstance(value, str) and value.strip().lower() == "auto"):
        try:
            size = int(value)
        except (TypeError, ValueError):
            raise UserError(f"--batch-size must be a whole number or auto, got {value!r}") from None
        if isinstance(value, bool) or (isinstance(value, float) and value != size):
            raise UserError(f"--batch-size must be a whole number or auto, got {value!r}")
        if size <= 0:
            raise UserError(f"--batch-size must be positive, got {value!r}")
        return size
    from advkit._internal.cost import best_cpu_batch, largest_batch

    shape = tuple(getattr(model, "input_shape", None) or ())
    if not shape:
        raise UserError("batch_size=auto needs a model that declares its input_shape; give a number")
    if str(device).startswith("cuda"):
        size, how = largest_batch(model, shape, device), "probed on the GPU"
    else:
        size, rates = best_cpu_batch(model, shape)
        how = "the fastest forward+backward throughput measured on this CPU: " + ", ".join(
            f"{b}: {r:.0f} img/s" for b, r in rates.items())
    if not quiet and D.is_main():
        import sys

        print(f"advkit: batch size {size} (auto, {how})", file=sys.stderr, flush=True)
    return size


def model_meta(model, name: str | None, meta: dict | None) -> dict:
    """What the report says about the model: the name it was given by, its checkpoint and weights file,
    its defenses and normalization."""
    info = getattr(model, "info", None) or {}
    keep = ("checkpoint", "weights", "defenses", "stochastic", "epoch", "normalization", "zoo", "plugins")
    out = {"model": name or getattr(model, "arch", None) or type(model).__name__,
           "model_info": {k: v for k, v in info.items() if k in keep} | {"arch": getattr(model, "arch", "")}}
    return {**out, **(meta or {})}


def resolve(model, data, attacks, attack_opts, *, weights, split, data_dir, norm, device, batch_size, quiet,
            meta) -> Resolved:
    names, opts = attack_list(attacks, attack_opts)
    device, joined = D.join(device)
    model, data, name = model_and_data(model, data, weights=weights, split=split, data_dir=data_dir, norm=norm,
                                       device=device)
    size = batch_size_of(batch_size, model, device, quiet)
    return Resolved(model, data, names, opts, device, size, model_meta(model, name, meta), joined)
