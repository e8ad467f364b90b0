"""The training engine: standard and adversarial training with composed defenses (our own code).

One step, for a batch ``x, y`` with dataset indices ``ctx.index``::

    x = augment(x)                                   # the dataset's usual augmentation
    x, y = data_transform(x, y, ctx)  ...            # every *data* defense, in order
    x_adv = adversary.perturb(model, x, y, ctx)      # the *adversary* defense (eval mode, frozen weights)
    loss = objective.loss(model, x, x_adv, y, ctx)   # the *objective* defense (train mode)
    loss.backward(); optimizer.step()

The *model* defenses have transformed ``model.backbone`` before the optimizer
is built. With no objective the loss is cross-entropy on ``x_adv`` when an
adversary runs and on ``x`` otherwise (plain training when there is no
defense at all). An objective that sets ``needs_adversary`` gets its
adversary from its ``default_adversary()`` or, failing that, the training PGD
of :mod:`advkit.adversary` (10 steps of eps/4 from a random start), in
both cases maximising ``ctx.attack_loss`` (the objective's ``attack_loss``).

Adversarial examples are made with the model in eval mode (batch-norm
statistics untouched by attack forward passes, as in the reference
implementations of PGD-AT, TRADES and MART) and its parameters frozen (no
parameter gradients, safe under DDP); the update runs in train mode. Every
training perturbation is checked against the threat model, per pixel when the
adversary leaves a budget map in ``ctx.state["eps_map"]`` (cleared each step).
``ctx.state["augmentation"]`` holds the batch's crop and flip as a function
applying them to any tensor shaped like the batch (None without augmentation),
so that per-sample state kept by dataset index (PART's masks) can follow its
images.

Augmentation runs batched on the device: random crop with zero padding 4 plus
horizontal flip for colour images (32x32), random crop with padding 2 and no
flip for grey ones (28x28; a flip changes digits and letters).

Reproducibility: the data order is a function of ``(seed, epoch)``, each
step's augmentation and adversary randomness of ``(seed, epoch, step)`` (the
generator in ``ctx.generator``), and the global RNGs of torch, Python and NumPy
(used by stochastic layers and attack libraries) are re-seeded from
``(seed, epoch, rank)`` at every epoch start. Hence
``resume=True`` after an interruption ends where the uninterrupted run ends.

Outputs in ``out``: ``metrics.jsonl`` (one line per epoch), ``last`` and
``best`` checkpoints (safetensors + JSON sidecar, by robust validation
accuracy, or clean without a validation attack) and ``train_state``
(weights, optimizer, RNG and defense states) for ``resume``.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the engine joins the
process group (gloo on CPU, nccl on GPU) and wraps the model in
DistributedDataParallel. ``batch_size`` stays the global batch: each global
batch is split among the ranks, so the steps are those of a single process.
Validation is sharded and summed; only rank 0 writes files and progress.

Parameters that must not be weight-decayed are named by their modules in a
``_no_weight_decay`` tuple (noise-injection scales) or by a backbone's timm
style ``no_weight_decay()``; they go into a parameter group without decay.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advkit.adversary import PGDAdversary, PGDSettings, frozen
from advkit.attack import verified
from advkit.distributed import barrier, shutdown
from advkit.defense import Defense, TrainContext, compose, create_defense
from advkit.errors import UserError
from advkit.runtime import derive_seed, progress, generator as _generator, seed_everything as _seed_globals

STATE_FORMAT = "advkit-train-state/1"
SCHEDULES = ("multistep", "cosine", "constant")


# ----------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (last epoch) and the per-epoch metrics."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best: dict | None = None
    out: Path | None = None


# ----------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float], device) -> list[float]:
        from advkit.distributed import all_sum

        return all_sum(values, device)


def _init_distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    """Join torchrun's process group (gloo on CPU, nccl on GPU) when ``WORLD_SIZE`` > 1."""
    from advkit import distributed as D

    owns = D.init_from_env(str(device))
    device = torch.device(D.local_device(str(device)))
    rank, world = D.world()
    return _Dist(rank, world, owns and world > 1), device


# ----------------------------------------------------------------------------- data


def _in_memory(data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels of an in-memory dataset (TensorImages, possibly a subset), else None."""
    from advkit.data import TensorImages

    base = getattr(data, "base", None)
    if isinstance(base, TensorImages) and base.transform is None:
        if data.indices is None:
            return base.images, base.labels
        idx = torch.as_tensor(data.indices, dtype=torch.long)
        return base.images[idx], base.labels[idx]
    return None


class _Batches:
    """Batches of a dataset by index; the whole set lives on the device when it is in memory."""

    def __init__(self, data, device: torch.device, workers: int = 0):
        self.data = data
        self.device = device
        tensors = _in_memory(data)
        self.x = self.y = None
        if tensors is not None:
            self.x = tensors[0].to(device, torch.float32)
            self.y = tensors[1].to(device, torch.long)
        self.workers = workers

    def __len__(self) -> int:
        return len(self.data)

    def iterate(self, index_batches: list[torch.Tensor]):
        if self.x is not None:
            for idx in index_batches:
                d = idx.to(self.device)
                yield d, self.x[d], self.y[d]
            return
        loader = torch.utils.data.DataLoader(
            self.data, batch_sampler=[i.tolist() for i in index_batches], num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        for idx, (x, y) in zip(index_batches, loader):
            yield idx.to(self.device), x.to(self.device, torch.float32), torch.as_tensor(y).to(self.device, torch.long)

    def all(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is not None:
            return self.x, self.y
        xs, ys = zip(*(self.data[i] for i in range(len(self.data))))
        return torch.stack(xs).to(self.device), torch.as_tensor(ys).to(self.device)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """This rank's index batches for one epoch: a permutation from ``(seed, epoch)``, split by batch then rank."""
    perm = torch.randperm(n, generator=_generator(torch.device("cpu"), derive_seed(seed, "order", epoch)))
    out = []
    for start in range(0, n, batch_size):
        b = perm[start:start + batch_size]
        if world > 1:
            if b.numel() < world:
                break
            b = b[rank::world]
        out.append(b)
    return out


# ----------------------------------------------------------------------------- augmentation


def augmentation_for(shape) -> tuple[int, bool]:
    """``(crop padding, flip)`` for images of ``shape``: colour 32x32 -> (4, True), grey 28x28 -> (2, False)."""
    c, h = int(shape[0]), int(shape[1])
    if c == 3:
        return max(1, round(h / 8)), True
    return max(1, round(h / 14)), False


def draw_augmentation(n: int, pad: int, flip: bool, g: torch.Generator):
    """Random crop offsets and flip flags for ``n`` images."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device)
    fl = torch.rand(n, generator=g, device=g.device) < 0.5 if flip else torch.zeros(n, dtype=torch.bool, device=g.device)
    return oy, ox, fl


def apply_augmentation(x: torch.Tensor, pad: int, oy, ox, fl) -> torch.Tensor:
    """Crop each image at its offset from the zero-padded batch, then flip where asked (batched)."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = oy.to(x.device)[:, None] + torch.arange(h, device=x.device)
    cols = ox.to(x.device)[:, None] + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = xp[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    out = torch.where(fl.to(x.device).view(-1, 1, 1, 1), out.flip(3), out)
    return out.contiguous()


# ----------------------------------------------------------------------------- optimisation


def lr_at(base: float, schedule: str, epoch: int, epochs: int) -> float:
    """Learning rate of (0-based) ``epoch``: multistep (x0.1 at 50% and 75% of epochs), cosine or constant."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "multistep":
        milestones = {m for m in (int(epochs * 0.5), int(epochs * 0.75)) if m > 0}
        return base * 0.1 ** sum(epoch >= m for m in milestones)
    raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def no_decay_parameters(model: nn.Module) -> set[int]:
    """Ids of parameters exempt from weight decay (``_no_weight_decay`` / timm's ``no_weight_decay()``)."""
    ids = set()
    for module in model.modules():
        for name in getattr(module, "_no_weight_decay", ()) or ():
            p = getattr(module, name, None)
            if isinstance(p, nn.Parameter):
                ids.add(id(p))
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            try:
                names = fn()
            except TypeError:
                names = ()
            for name in names or ():
                with contextlib.suppress(AttributeError):
                    ids.add(id(module.get_parameter(name)))
    return ids


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float):
    """SGD (momentum, weight decay) or Adam, with a no-decay group when some parameters ask for it."""
    skip = no_decay_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in skip], "weight_decay": weight_decay}]
    if any(id(p) in skip for p in params):
        groups.append({"params": [p for p in params if id(p) in skip], "weight_decay": 0.0})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    raise UserError(f"optimizer must be sgd or adam, got {name!r}")


class _Accuracy:
    """Counts correct predictions on the batch fed to the objective, read from a forward hook."""

    def __init__(self):
        self.target = None
        self.correct = 0
        self.seen = 0

    def hook(self, module, inputs, output):
        t = self.target
        if t is None or not inputs or not torch.is_tensor(inputs[0]) or not torch.is_tensor(output):
            return
        x = inputs[0]
        if x.shape == t[0].shape and x.data_ptr() == t[0].data_ptr():
            self.correct += int((output.detach().argmax(1) == t[1]).sum())
            self.seen += t[1].numel()
            self.target = None  # count each batch once


# ----------------------------------------------------------------------------- checkpoints and state


def _save_state(path: Path, model: nn.Module, optimizer, defenses: list[Defense], meta: dict) -> None:
    from advkit.checkpoint import atomic_write_json, save_tensors

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = optimizer.state_dict()
    scalars: dict = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    defense_meta = []
    for i, d in enumerate(defenses):
        extra = {}
        for k, v in (d.state_dict() or {}).items():
            if torch.is_tensor(v):
                tensors[f"defense.{i}.{k}"] = v
            else:
                extra[k] = v
        defense_meta.append(extra)
    meta = {**meta, "format": STATE_FORMAT, "optimizer": {"param_groups": sd["param_groups"], "scalars": scalars},
            "defense_state": defense_meta}
    save_tensors(path.with_suffix(".safetensors"), tensors, {"format": STATE_FORMAT})
    atomic_write_json(path.with_suffix(".json"), meta)


def _load_state(path: Path, model: nn.Module, optimizer, defenses: list[Defense]) -> dict:
    from advkit.checkpoint import load_state, load_tensors

    side = path.with_suffix(".json")
    if not side.is_file() or not path.with_suffix(".safetensors").is_file():
        raise UserError(f"nothing to resume in {path.parent}: {path.name}.safetensors/.json not found (run without --resume)")
    meta = json.loads(side.read_text())
    if meta.get("format") != STATE_FORMAT:
        raise UserError(f"{side} is not an advkit training state")
    tensors = load_tensors(path.with_suffix(".safetensors"))
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(path))
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, d in meta["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(d)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(cuda)
    extras = list(meta.get("defense_state") or [])
    for i, d in enumerate(defenses):
        prefix = f"defense.{i}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        own.update(extras[i] if i < len(extras) else {})
        if own:
            d.load_state_dict(own)
    return meta


def _write_metrics(out: Path, history: list[dict]) -> None:
    from advkit.checkpoint import atomic_write_bytes

    atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())


# ----------------------------------------------------------------------------- validation


def _parse_attack(spec: str | None):
    from advkit.registry import parse_spec

    if not spec or str(spec).strip().lower() == "none":
        return None
    return parse_spec(str(spec))


def validate(model, x, y, threat, attack, batch_size: int, dist: _Dist, device) -> tuple[float, float | None]:
    """Clean accuracy (inference mode) and robust accuracy under ``attack`` on this rank's shard, summed over ranks."""
    model.eval()
    xs, ys = x[dist.rank::dist.world], y[dist.rank::dist.world]
    clean = robust = 0
    for i in range(0, xs.shape[0], batch_size):
        xb, yb = xs[i:i + batch_size], ys[i:i + batch_size]
        with torch.inference_mode():
            clean += int((model(xb).argmax(1) == yb).sum())
        if attack is not None:
            with frozen(model):
                x_adv = attack.run(xb, yb).x_adv
            with torch.no_grad():
                robust += int((model(x_adv).argmax(1) == yb).sum())
    total, clean, robust = dist.all_sum([float(xs.shape[0]), float(clean), float(robust)], device)
    if total == 0:
        return float("nan"), None
    return clean / total, (robust / total if attack is not None else None)


# ----------------------------------------------------------------------------- the engine


def _objective_adversary(objective: Defense) -> Defense:
    """The adversary the objective uses on its own: its ``default_adversary()``, else the default training PGD."""
    return objective.default_adversary() or PGDAdversary()


def _resolve_inputs(model, train_data, defenses, threat, val_data, device):
    from advkit.data import ImageData, load_dataset
    from advkit.models import ImageClassifier, load_model
    from advkit.threat import ThreatModel

    if isinstance(train_data, str):
        train_data = load_dataset(train_data, "train")
    info = getattr(train_data, "info", None)
    if isinstance(val_data, str):
        val_data = load_dataset(val_data, "test")
    if not isinstance(model, ImageClassifier):
        kw = {}
        if info is not None:
            kw = dict(num_classes=info.num_classes, input_shape=info.input_shape, mean=info.mean, std=info.std)
        model = load_model(model, device=device, **kw)
    defenses = [create_defense(d) if isinstance(d, str) else d for d in defenses]
    for d in defenses:
        if not isinstance(d, Defense):
            raise UserError(f"defenses must be Defense objects or 'name[:k=v]' strings, got {type(d).__name__}")
    if threat is None:
        threat = ThreatModel.parse("Linf", info.default_eps if isinstance(train_data, ImageData) else "8/255")
    elif isinstance(threat, str):
        threat = ThreatModel.parse("Linf", threat)
    return model, train_data, defenses, threat, val_data


def _check_args(epochs, batch_size, lr, schedule, optimizer, momentum, weight_decay):
    if int(epochs) < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if int(batch_size) < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    if not (0 <= momentum < 1):
        raise UserError(f"--momentum must lie in [0, 1), got {momentum}")
    if not weight_decay >= 0:
        raise UserError(f"--weight-decay must be >= 0, got {weight_decay}")
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if optimizer not in ("sgd", "adam"):
        raise UserError(f"--optimizer must be sgd or adam, got {optimizer!r}")


def train(
    model,
    train_data,
    *,
    defenses=(),
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "multistep",
    threat=None,
    augment: bool = True,
    val_data=None,
    val_attack: str | None = "pgd",
    out=None,
    resume: bool = False,
    seed: int = 0,
    device="cpu",
    quiet: bool = False,
    command: str = "",
) -> TrainResult:
    """Train ``model`` on ``train_data`` with ``defenses`` composed at the four points.

    ``model``: an :class:`~advkit.models.ImageClassifier` (or a spec for
    :func:`advkit.models.load_model`); ``train_data``/``val_data``:
    :class:`~advkit.data.ImageData` (or dataset names); ``defenses``:
    :class:`~advkit.defense.Defense` objects or ``"name[:k=v,...]"`` strings;
    ``threat``: the training and validation :class:`~advkit.threat.ThreatModel`
    (default: Linf at the dataset's usual eps). ``val_attack`` (a registered
    attack, ``"pgd:steps=20"`` style, or ``"none"``) gives the robust accuracy
    of every epoch. See the module docstring for the step, the files in
    ``out`` and reproducibility.
    """
    from advkit.checkpoint import save_checkpoint
    from advkit.models import check_output

    _check_args(epochs, batch_size, lr, schedule, optimizer, momentum, weight_decay)
    if resume and out is None:
        raise UserError("resuming needs an output directory (out=...)")
    dist, device = _init_distributed(torch.device(device))
    try:
        model, train_data, defenses, threat, val_data = _resolve_inputs(model, train_data, defenses, threat, val_data, device)
        owner = compose(defenses)
        for d in defenses:  # model point, before the optimizer exists
            if "model" in d.points:
                model.backbone = d.transform_model(model.backbone) or model.backbone
        model.to(device)
        check_output(model)
        recipes = list(model.info.get("defenses") or []) + [d.recipe() for d in defenses]
        model.info["defenses"] = recipes
        model.info["stochastic"] = bool(model.info.get("stochastic")) or any(d.stochastic for d in defenses)
        data_info = getattr(train_data, "info", None)
        if data_info is not None:
            model.info["dataset"] = data_info.name

        objective = owner.get("objective") or Defense()
        own_adversary = _objective_adversary(objective)
        adversary = owner.get("adversary")
        if adversary is None and objective.needs_adversary:
            adversary = own_adversary
        data_defenses = owner["data"]

        opt = build_optimizer(model, optimizer, lr, momentum, weight_decay)
        net = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        workers = 0 if _in_memory(train_data) is not None else min(4, max(0, (os.cpu_count() or 1) // dist.world - 1))
        batches = _Batches(train_data, device, workers)
        val_x = val_y = None
        if val_data is not None and len(val_data):
            val_x, val_y = _Batches(val_data, device).all()
        parsed = _parse_attack(val_attack)
        attack = None
        if parsed is not None and val_x is not None:
            from advkit.attack import create_attack

            attack = create_attack(parsed[0], model, threat, **parsed[1])

        shape = tuple(getattr(data_info, "input_shape", None) or model.input_shape)
        pad, flip = augmentation_for(shape) if augment and len(shape) == 3 else (0, False)
        ctx = TrainContext(threat=threat, device=device, epochs=int(epochs), quiet=quiet,
                           cache_dir=str(Path(out) / "cache") if out is not None else None,
                           attack_loss=objective.attack_loss,
                           adversary=getattr(own_adversary, "settings", None) or PGDSettings())
        for d in defenses:
            d.setup(model, train_data, ctx)

        out_dir = Path(out) if out is not None else None
        state_path = out_dir / "train_state" if out_dir is not None else None
        history: list[dict] = []
        best = {"epoch": None, "metric": -1.0}
        start = 0
        if resume:
            meta = _load_state(state_path, model, opt, defenses)
            if [r["name"] for r in meta.get("defenses", [])] != [r["name"] for r in recipes]:
                raise UserError(f"cannot resume {out_dir}: it was trained with defenses "
                                f"{[r['name'] for r in meta.get('defenses', [])]}, not {[r['name'] for r in recipes]}")
            start = int(meta["epoch"])
            history = list(meta.get("history", []))
            best = meta.get("best", best)
        elif out_dir is not None and dist.main:
            out_dir.mkdir(parents=True, exist_ok=True)

        tracker = _Accuracy()
        handle = model.register_forward_hook(tracker.hook)
        common = dict(dataset=getattr(data_info, "name", ""), command=command, seed=int(seed),
                      threat=threat.as_dict(), defenses=recipes, stochastic=model.info["stochastic"])
        try:
            for epoch in range(start, int(epochs)):
                t0 = time.time()
                _seed_globals(derive_seed(seed, "global", epoch, dist.rank))
                lr_now = lr_at(lr, schedule, epoch, int(epochs))
                for group in opt.param_groups:
                    group["lr"] = lr_now
                ctx.epoch = epoch
                for d in defenses:
                    d.on_epoch_start(model, train_data, ctx)
                index_batches = epoch_batches(len(batches), int(batch_size), seed, epoch, dist.rank, dist.world)
                loss_sum = seen = 0.0
                tracker.correct = tracker.seen = 0
                bar = progress(len(index_batches), f"epoch {epoch + 1}/{epochs}", quiet=quiet, unit="batch")
                for step, (idx, x, y) in enumerate(batches.iterate(index_batches)):
                    g = _generator(device, derive_seed(seed, "step", epoch, step))
                    augmentation = None
                    if pad:
                        n_global = min(int(batch_size), len(batches) - step * int(batch_size))
                        oy, ox, fl = draw_augmentation(n_global, pad, flip, g)
                        sl = slice(dist.rank, None, dist.world)
                        n = x.shape[0]
                        augmentation = functools.partial(apply_augmentation, pad=pad, oy=oy[sl][:n], ox=ox[sl][:n], fl=fl[sl][:n])
                        x = augmentation(x)
                    ctx.step = epoch * len(index_batches) + step
                    ctx.index = idx
                    ctx.generator = _generator(device, derive_seed(seed, "adversary", epoch, step, dist.rank))
                    ctx.state.pop("eps_map", None)
                    ctx.state["augmentation"] = augmentation
                    model.train()
                    for d in data_defenses:
                        x, y = d.transform_batch(x, y, ctx)
                    x_adv = None
                    if adversary is not None:
                        model.eval()
                        clean = x.detach().clone()  # the engine's own copy: the check cannot be moved
                        with frozen(model):
                            out = adversary.perturb(model, x, y, ctx)
                        x_adv = verified(f"training adversary {adversary.name!r}", threat, clean, out,
                                         eps=ctx.state.get("eps_map")).x_adv
                        x = clean
                        model.train()
                    tracker.target = (x if x_adv is None else x_adv, y)
                    loss = objective.loss(net, x, x_adv, y, ctx)
                    tracker.target = None
                    if not torch.isfinite(loss):
                        raise UserError(f"the training loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}; lower --lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * y.shape[0]
                    seen += y.shape[0]
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}")
                bar.close()
                for d in defenses:
                    d.on_epoch_end(model, train_data, ctx)
                notes, ctx.notes = list(ctx.notes), []
                loss_sum, seen, correct, counted = dist.all_sum([loss_sum, seen, float(tracker.correct), float(tracker.seen)], device)
                clean, robust = (validate(model, val_x, val_y, threat, attack, int(batch_size), dist, device)
                                 if val_x is not None else (None, None))
                record = {
                    "epoch": epoch + 1, "lr": lr_now, "train_loss": loss_sum / max(seen, 1),
                    "train_acc": correct / counted if counted else None, "val_clean": clean, "val_robust": robust,
                    "val_attack": parsed[0] if parsed and attack is not None else None, "time": round(time.time() - t0, 3),
                    "notes": notes,
                }
                history.append(record)
                score = robust if robust is not None else (clean if clean is not None else -record["train_loss"])
                improved = best["epoch"] is None or score > best["metric"]
                if improved:
                    best = {"epoch": epoch + 1, "metric": score}
                if dist.main and not quiet:
                    print(_epoch_line(record, epochs), flush=True)
                    for note in notes:
                        print(f"  {note}", flush=True)
                if out_dir is not None and dist.main:
                    info = dict(common, epoch=epoch + 1, metrics=record)
                    save_checkpoint(model, out_dir / "last.safetensors", **info)
                    if improved:
                        save_checkpoint(model, out_dir / "best.safetensors", **info)
                    _write_metrics(out_dir, history)
                    _save_state(state_path, model, opt, defenses, {
                        "epoch": epoch + 1, "epochs": int(epochs), "seed": int(seed), "batch_size": int(batch_size),
                        "world_size": dist.world, "schedule": schedule, "lr": lr, "arch": model.arch,
                        "defenses": recipes, "history": history, "best": best,
                    })
                barrier()
        finally:
            handle.remove()
        model.eval()
        best_record = history[best["epoch"] - 1] if best.get("epoch") and best["epoch"] <= len(history) else None
        return TrainResult(model=model, history=history, best_epoch=best.get("epoch"), best=best_record, out=out_dir)
    finally:
        if dist.owns_group:
            shutdown()


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _epoch_line(r: dict, epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"lr {r['lr']:.4g}", f"loss {r['train_loss']:.4f}", f"train acc {_pct(r['train_acc'])}"]
    if r["val_clean"] is not None:
        parts.append(f"val clean {_pct(r['val_clean'])}")
    if r["val_robust"] is not None:
        parts.append(f"val {r['val_attack']} {_pct(r['val_robust'])}")
    parts.append(f"{r['time']:.1f}s")
    return "  ".join(parts)
