"""Built-in backbones: small nets of the literature, any timm model, bundled checkpoints and model zoos.

Bundled checkpoints (``weights/``) were trained with ``advkit train`` on the
embedded ``fmnist-mini`` data; docs/models.md gives the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from advkit.plugin import Range, hookimpl
from advkit_models import zoo

WEIGHTS = Path(__file__).parent / "weights"
DEFAULT_MODEL = "smallcnn-fmnist"  # advkit eval and explain use it when no model is named

BUNDLED = {
    "smallcnn-fmnist": "SmallCNN on fmnist-mini, standard training (bundled checkpoint)",
    "smallcnn-fmnist-at": "SmallCNN on fmnist-mini, PGD-AT at Linf eps=0.1 (bundled checkpoint)",
}


def smallcnn(num_classes: int = 10, in_chans: int = 1, width: int = 128):
    """Small CNN for 28x28 images: 4 conv layers, 2 linear layers (~0.2M parameters)."""
    from advkit_models.nets import SmallCNN

    return SmallCNN(num_classes, in_chans, width)


def resnet18_cifar(num_classes: int = 10, in_chans: int = 3, width: int = 64):
    """ResNet-18, CIFAR variant: 3x3 stem, no max-pool (11M parameters at width 64)."""
    from advkit_models.nets import ResNet18

    return ResNet18(num_classes, in_chans, width)


def wide_resnet(num_classes: int = 10, in_chans: int = 3, depth: int = 34, widen: int = 10, drop: float = 0.0):
    """WideResNet-depth-widen, WRN-34-10 by default (46M parameters)."""
    from advkit_models.nets import WideResNet

    return WideResNet(num_classes, in_chans, depth, widen, drop)


def timm_model(name: str = "resnet18", num_classes: int = 10, in_chans: int = 3, pretrained: bool = False):
    """Any timm architecture by name (random init; hub weights with pretrained=true when online)."""
    import timm

    from advkit.plugin import UserError, unknown

    if not timm.is_model(name):
        raise unknown("backbone", f"timm/{name}", [f"timm/{n}" for n in timm.list_models()])
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except Exception as exc:  # offline hub access surfaces as many exception types
        if pretrained:
            raise UserError(
                f"cannot fetch pretrained weights for timm/{name} ({type(exc).__name__}); offline, "
                f"download them elsewhere and pass --weights FILE"
            ) from None
        raise


def timm_knows(name: str) -> bool:
    """Whether timm has an architecture called ``name`` (bare names such as ``resnet18``)."""
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def bundled(name: str):
    def factory():
        from advkit.plugin import UserError, load_checkpoint

        path = WEIGHTS / f"{name}.safetensors"
        if not path.is_file():
            raise UserError(f"bundled checkpoint {name!r} is missing from this installation ({path})")
        return load_checkpoint(path)

    factory.__doc__ = BUNDLED[name]
    return factory


@hookimpl
def advkit_register_backbones(register):
    size = {"num_classes": Range(1, 100_000), "in_chans": Range(1, 64)}
    register("smallcnn", smallcnn, aliases=("small-cnn",), default="architecture",
             ranges={**size, "width": Range(1, 4096)},  # measured: docs/training.md, "Defaults that train"
             trains_with={"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 64})
    register("resnet18-cifar", resnet18_cifar, aliases=("cifar-resnet18",), ranges={**size, "width": Range(1, 1024)})
    register("wrn-34-10", wide_resnet, aliases=("wideresnet", "wrn"),
             ranges={**size, "depth": Range(10, 202), "widen": Range(1, 32), "drop": Range(0, 1, hi_open=True)})
    register("timm", timm_model, summary="Any timm architecture: --model timm/NAME (or a bare timm name)",
             prefix="timm/", claims=timm_knows, library="timm")
    register("robustbench", zoo.robustbench_model, prefix="robustbench:",
             summary="A RobustBench model zoo entry: --model robustbench:NAME --dataset cifar10 --norm Linf")
    register("robustbench-arch", zoo.robustbench_arch,
             summary="A RobustBench architecture without weights (rebuilds checkpoints made from robustbench:NAME)")
    register("hf-hub", zoo.hf_hub_model, prefix="hf-hub:",
             summary="A timm model with hub weights, from the local cache offline: --model hf-hub:ORG/NAME")
    for name in BUNDLED:  # what each checkpoint was trained on and with, as its sidecar says
        side = json.loads((WEIGHTS / f"{name}.json").read_text())
        register(name, bundled(name), trained_on=side.get("dataset"),
                 defenses=tuple(d.get("name", "") for d in side.get("defenses") or ()),
                 default="model" if name == DEFAULT_MODEL else None)
