"""What a training run is made of: its options, the process group, the resolved inputs and its settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from advkit._internal.defense import Defense, create_defense
from advkit._internal.errors import UserError
from advkit._internal.training.optim import check_settings
from advkit._internal.training.precision import check_amp


@dataclass
class Options:
    """The arguments of :func:`advkit.train` other than the model, the data and the defenses."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    augment: bool = True
    val_attack: str | None = None  # the attack a plugin declares for validation; "none": no attack
    val_eot: int = 20
    amp: str = "off"
    amp_adversary: bool = False
    channels_last: bool | None = None
    out: object = None
    resume: bool = False
    overwrite: bool = False
    config: dict | None = None
    seed: int = 0
    quiet: bool = False
    command: str = ""

    def check(self) -> None:
        """Every option's one check (the CLI adapter does not repeat them)."""
        check_settings(self.epochs, self.batch_size, self.lr, self.schedule, self.optimizer, self.momentum,
                       self.weight_decay)
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)
        check_amp(self.amp, self.amp_adversary)
        if int(self.val_eot) < 1:
            raise UserError(f"--val-eot must be >= 1, got {self.val_eot}")
        if (self.resume or self.overwrite) and self.out is None:
            raise UserError("resuming or overwriting needs an output directory (out=...)")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float], device) -> list[float]:
        from advkit._internal.distributed import all_sum

        return all_sum(values, device)


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (gloo on CPU, nccl on GPU) when ``WORLD_SIZE`` > 1."""
    from advkit._internal import distributed as D

    owns = D.init_from_env(str(device))
    device = torch.device(D.local_device(str(device)))
    rank, world = D.world()
    return Dist(rank, world, owns and world > 1), device


def architecture(model):
    """``model``, or (None, ``"default"``) the architecture a plugin declares that training builds by default."""
    from advkit._internal.plugins import registry
    from advkit._internal.registry import DEFAULT

    if model is None or (isinstance(model, str) and model.strip().lower() == DEFAULT):
        return registry("backbone").default("architecture").name
    return model


def resolve_inputs(model, train_data, defenses, threat, val_data, device):
    """Names to objects: datasets, the model (sized by the dataset), defenses and the threat model."""
    from advkit._internal.data import ImageData, load_dataset
    from advkit._internal.models import ImageClassifier, load_model
    from advkit._internal.threat import ThreatModel

    if isinstance(train_data, str) or train_data is None:
        train_data = load_dataset(train_data, "train")
    info = getattr(train_data, "info", None)
    if isinstance(val_data, str):
        val_data = load_dataset(val_data, "test")
    model = architecture(model)
    if not isinstance(model, ImageClassifier):
        model = load_model(model, device=device, dataset=info)
    defenses = [create_defense(d) if isinstance(d, str) else d for d in defenses]
    for d in defenses:
        if not isinstance(d, Defense):
            raise UserError(f"defenses must be Defense objects or 'name[:k=v]' strings, got {type(d).__name__}")
    if threat is None:
        threat = ThreatModel.parse("Linf", info.default_eps if isinstance(train_data, ImageData) else "8/255")
    elif isinstance(threat, str):
        threat = ThreatModel.parse("Linf", threat)
    return model, train_data, defenses, threat, val_data


def prepare_model(model, defenses: list[Defense], train_data, device) -> list[dict]:
    """Apply the model defenses (before the optimizer exists), record recipes and stochasticity; return the recipes."""
    from advkit._internal.models import check_output

    for d in defenses:
        if "model" in d.points:
            model.backbone = d.transform_model(model.backbone) or model.backbone
    model.to(device)
    check_output(model)
    recipes = list(model.info.get("defenses") or []) + [d.recipe() for d in defenses]
    model.info["defenses"] = recipes
    model.info["stochastic"] = bool(model.info.get("stochastic")) or any(d.stochastic for d in defenses)
    info = getattr(train_data, "info", None)
    if info is not None:
        model.info["dataset"] = info.name
    return recipes


def settings_of(o: Options, model, train_data, val_data, threat, recipes: list[dict]) -> dict:
    """Everything that shapes a run's result: a resume must match it (see :mod:`advkit._internal.training.state`)."""
    keep = ("seed", "lr", "batch_size", "epochs", "schedule", "optimizer", "momentum", "weight_decay", "augment",
            "val_attack", "val_eot", "amp", "amp_adversary")
    info = getattr(train_data, "info", None)
    return {
        **{k: v for k, v in asdict(o).items() if k in keep},
        "arch": getattr(model, "arch", type(model).__name__),
        "dataset": getattr(info, "name", ""),
        "n_train": len(train_data),
        "n_val": len(val_data) if val_data is not None else 0,
        "threat": threat.as_dict(),
        "defenses": recipes,
    }
