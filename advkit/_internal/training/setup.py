"""What a training run is made of: its options, the process group, the resolved inputs and its settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from advkit._internal.defense import Defense, create_defense
from advkit._internal.errors import UserError
from advkit._internal.training.optim import check_settings, whole
from advkit._internal.training.precision import check_amp


@dataclass
class Options:
    """The arguments of :func:`advkit.train` other than the model, the data and the defenses."""

    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None  # None: what the backbone declares it trains with (trains_with), else RECIPE
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    augment: bool = True
    val_attack: str | None = None  # the attack a plugin declares for validation; "none": no attack
    val_eot: int = 5  # validation chooses a checkpoint; advkit eval judges it with --eot 20
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
    filled: str = field(default="", init=False, repr=False)  # what fill() took from a declaration, said once

    def fill(self, declared: dict | None) -> str:
        """Fill the optimisation settings not given from ``declared`` (a backbone's ``trains_with``), the
        rest from :data:`RECIPE`; say where they came from."""
        given = {k: getattr(self, k) for k in RECIPE if getattr(self, k) is not None}
        source = dict(RECIPE)
        if declared:
            source.update({k: v for k, v in declared.items() if k in RECIPE})
        for key, value in source.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        shown = [k for k in RECIPE if k not in given and not (k == "momentum" and self.optimizer != "sgd")]
        said = ", ".join(f"{k} {getattr(self, k)}" for k in shown)
        self.filled = said and f"{said} ({'declared by the backbone' if declared else 'advkit default'})"
        return self.filled

    def check(self) -> None:
        """Every option's one check (the CLI adapter does not repeat them)."""
        check_settings(self.epochs, self.batch_size, self.lr, self.schedule, self.optimizer, self.momentum,
                       self.weight_decay)
        from advkit._internal.seeds import checked_seed

        self.seed = checked_seed(self.seed)
        check_amp(self.amp, self.amp_adversary)
        whole(self.val_eot, "val-eot")
        for key in ("augment", "amp_adversary", "resume", "overwrite", "quiet"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"--{key.replace('_', '-')} is a flag (true or false), got {getattr(self, key)!r}")
        if (self.resume or self.overwrite) and self.out is None:
            raise UserError("resuming or overwriting needs an output directory (out=...)")


#: The optimisation settings of a run whose backbone declares none (``trains_with``) and that gives none.
RECIPE = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "multistep",
          "batch_size": 128}


def declared_recipe(model) -> dict | None:
    """The ``trains_with`` a backbone registration declares, for a model name or a built model's arch."""
    from advkit._internal.grammar import parse_spec
    from advkit._internal.plugins import registry

    name = model if isinstance(model, str) else getattr(model, "arch", None)
    if not name:
        return None
    try:
        entry = registry("backbone").find(parse_spec(name)[0])
    except UserError:
        return None
    return entry.capabilities.get("trains_with") if entry else None


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


@dataclass
class Sources:
    """Where a run's inputs come from, when they are given by name (the arguments of :func:`advkit.train`
    that ``advkit train`` shares): weights for a named model, the data folder, the budget and the sizes."""

    weights: str | None = None
    data_dir: str | None = None
    eps: object = None
    norm: str = "Linf"
    n_train: int | None = None
    n_val: int | None = 500
    val_from: str = "train"  # "train": a seeded held-out part of the training split; "test": the test split's first

    def check(self) -> None:
        for key in ("n_train", "n_val"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise UserError(f"--{key.replace('_', '-')} must be a whole number >= 0, got {value!r}")
        if self.val_from not in ("train", "test"):
            raise UserError(f"--val-from must be train or test, got {self.val_from!r}")


def resolve_data(train_data, val_data, src: Sources, seed: int = 0):
    """A dataset name (None: the declared default) becomes its train split, less the ``n_val`` images held
    out for validation (``val_from="train"``, the default: model selection never sees a test image), or
    with the test split's first ``n_val`` as validation (``val_from="test"``); given data is kept (cut to
    ``n_train``)."""
    from advkit._internal.data import check_sample, load_dataset

    if isinstance(train_data, str) or train_data is None:
        name = train_data
        if val_data is None and src.n_val and src.val_from == "train":
            train_data, val_data = held_out(load_dataset(name, "train", data_dir=src.data_dir), src, seed)
        else:
            train_data = load_dataset(name, "train", data_dir=src.data_dir, n=src.n_train or None)
            if val_data is None and src.n_val:
                val_data = load_dataset(name, "test", data_dir=src.data_dir, n=src.n_val)
    elif src.n_train and hasattr(train_data, "first"):
        train_data = train_data.first(src.n_train)
    if isinstance(val_data, str):
        val_data = load_dataset(val_data, "test", data_dir=src.data_dir, n=src.n_val or None)
    check_sample(train_data, "training data")
    if val_data is not None:
        check_sample(val_data, "validation data")
    return train_data, val_data


def held_out(full, src: Sources, seed: int):
    """(training part, validation part) of the train split ``full``: ``n_val`` images drawn with the run's seed,
    from the images beyond the first ``n_train`` when there are enough (the training images are then the
    first ``n_train``, as without validation), else from all of them."""
    from advkit._internal.seeds import derive_seed

    total, n_train, n_val = len(full), src.n_train, src.n_val
    if n_val >= total:
        raise UserError(f"--n-val {n_val} leaves no training image in {full.info.name} ({total} images)")
    g = torch.Generator().manual_seed(derive_seed(seed, "validation"))
    pool = range(n_train, total) if n_train and n_train + n_val <= total else range(total)
    picked = sorted(pool[int(i)] for i in torch.randperm(len(pool), generator=g)[:n_val])
    chosen = set(picked)
    rest = [i for i in range(total) if i not in chosen][: n_train or None]
    return full.subset(rest), full.subset(picked)


def validation_record(train_data, val_data) -> dict:
    """Where the validation images come from, for config.json: the training split's indices, or the test split."""
    if val_data is None:
        return {"from": None, "n": 0}
    same = getattr(val_data, "base", None) is not None and val_data.base is getattr(train_data, "base", None)
    if same and val_data.indices is not None:
        return {"from": "train", "n": len(val_data), "indices": list(val_data.indices)}
    info = getattr(val_data, "info", None)
    return {"from": getattr(info, "split", None) or "given", "n": len(val_data)}


def resolve_inputs(model, train_data, defenses, threat, val_data, device, src: Sources | None = None, seed: int = 0):
    """Names to objects: datasets, the model (sized by the dataset), defenses and the threat model."""
    from advkit._internal.data import ImageData
    from advkit._internal.models import ImageClassifier, load_model
    from advkit._internal.threat import ThreatModel

    src = src or Sources()
    train_data, val_data = resolve_data(train_data, val_data, src, seed)
    info = getattr(train_data, "info", None)
    model = architecture(model)
    if not isinstance(model, ImageClassifier):
        model = load_model(model, device=device, dataset=info, weights=src.weights,
                           context={"dataset": info.name, "norm": src.norm} if info else {"norm": src.norm})
    elif src.weights:
        raise UserError("weights= applies to a model given by name; load the weights into your model instead")
    if isinstance(defenses, str):  # one string is a list of specs, never its characters
        from advkit._internal.grammar import parse_list

        defenses = [create_defense(name, **params) for name, params in parse_list(defenses)]
    defenses = [create_defense(d) if isinstance(d, str) else d for d in defenses]
    for d in defenses:
        if not isinstance(d, Defense):
            raise UserError(f"defenses must be Defense objects or 'name[:k=v]' strings, got {type(d).__name__}")
    if threat is not None and src.eps is not None:
        raise UserError("give threat= or eps=, not both")
    if threat is None:
        usual = info.default_eps if isinstance(train_data, ImageData) else "8/255"
        threat = ThreatModel.parse(src.norm, src.eps if src.eps is not None else usual)
    elif isinstance(threat, str):
        threat = ThreatModel.parse(src.norm, threat)
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
        "validation": {k: v for k, v in validation_record(train_data, val_data).items() if k != "indices"},
        "threat": threat.as_dict(),
        "defenses": recipes,
    }
