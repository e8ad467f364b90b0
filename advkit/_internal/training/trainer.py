"""The training engine: standard and adversarial training with composed defenses (our own code).

One step, for a batch ``x, y`` with dataset indices ``ctx.index`` (:meth:`Trainer.step`)::

    x = augment(x)                                   # the dataset's usual augmentation
    x, y = data_transform(x, y, ctx)  ...            # every *data* defense, in order
    x_adv = adversary.perturb(model, x, y, ctx)      # the *adversary* defense (eval mode, frozen weights)
    loss = objective.loss(model, x, x_adv, y, ctx)   # the *objective* defense (train mode)
    loss.backward(); optimizer.step()

The *model* defenses have transformed ``model.backbone`` before the optimizer
is built; *modifiers* (no point, e.g. label smoothing) adjust the context in
``setup``. With no objective the loss is cross-entropy on ``x_adv`` when an
adversary runs and on ``x`` otherwise. An objective that sets
``needs_adversary`` gets its adversary from its ``default_adversary()`` or,
failing that, the training PGD of :mod:`advkit._internal.adversary`, in both cases
maximising ``ctx.attack_loss``.

Adversarial examples are made with the model in eval mode and its parameters
frozen; the update runs in train mode. Every training perturbation is checked
against the threat model (per pixel when the adversary leaves
``ctx.state["eps_map"]``); validation attacks go through
:meth:`advkit._internal.attack.Attack.run` (:mod:`advkit._internal.training.validation`).

Reproducibility: the data order is a function of ``(seed, epoch)``, each
step's augmentation and adversary randomness of ``(seed, epoch, step)``, and
the global RNGs are re-seeded from ``(seed, epoch, rank)`` at every epoch
start, so ``resume=True`` after an interruption ends where the uninterrupted
run ends. Files in ``out`` and the resume rules: :mod:`advkit._internal.training.state`
and :mod:`advkit._internal.training.records`.

Precision and memory format (:mod:`advkit._internal.training.precision`): with
``amp`` the objective's forward passes run under ``torch.autocast`` (fp16
with a gradient scaler), the adversary stays fp32 unless ``amp_adversary``,
validation is always fp32; the model and batches are channels_last on CUDA
for image inputs unless ``channels_last`` says otherwise. Weights,
optimizer state and checkpoints stay fp32.

Data: an in-memory set is put on the device once and indexed there; a
file-backed set goes through a DataLoader with workers, pinned memory on
CUDA and ``non_blocking`` copies; validation data is read once through the
dataset's own ``tensors()``.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the engine joins the
process group and wraps the model in DistributedDataParallel; ``batch_size``
stays the global batch, split among the ranks, so the steps are those of a
single process. Validation is sharded and summed; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advkit._internal import distributed as D
from advkit._internal.adversary import PGDAdversary, PGDSettings, frozen
from advkit._internal.attack import verified
from advkit._internal.defense import Defense, TrainContext, compose
from advkit._internal.distributed import barrier, shutdown
from advkit._internal.errors import UserError
from advkit._internal.files import lock_output
from advkit._internal.progress import progress
from advkit._internal.seeds import derive_seed, generator, seed_everything
from advkit._internal.training import records, state
from advkit._internal.training.batching import Augmenter, Batches, in_memory, on_device
from advkit._internal.training.optim import build_optimizer, lr_at, set_lr
from advkit._internal.training.precision import Precision, check_device
from advkit._internal.training.setup import (
    RECIPE,
    Dist,
    Options,
    Sources,
    architecture,
    declared_recipe,
    init_distributed,
    prepare_model,
    resolve_inputs,
    settings_of,
    validation_record,
)
from advkit._internal.training.validation import Validator


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (last epoch) and the per-epoch metrics."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best: dict | None = None
    out: Path | None = None
    threat: object = None  # the ThreatModel trained and validated at
    dataset: str = ""
    n_train: int = 0
    defenses: list[str] = field(default_factory=list)  # their names, in the order composed
    validation: dict = field(default_factory=dict)  # where the validation images came from (from, n)


class _Accuracy:
    """Counts correct predictions on the batch fed to the objective, read from a forward hook."""

    def __init__(self):
        self.target = None
        self.correct = self.seen = 0

    def hook(self, module, inputs, output):
        t = self.target
        if t is None or not inputs or not torch.is_tensor(inputs[0]) or not torch.is_tensor(output):
            return
        x = inputs[0]
        if x.shape == t[0].shape and x.data_ptr() == t[0].data_ptr():
            self.correct += int((output.detach().argmax(1) == t[1]).sum())
            self.seen += t[1].numel()
            self.target = None  # count each batch once


class Trainer:
    """One run's loop over composed defenses: :meth:`step` trains a batch, :meth:`epoch` an epoch."""

    def __init__(self, model, net, optimizer, defenses: list[Defense], ctx: TrainContext, batches: Batches,
                 augmenter: Augmenter, *, seed: int, batch_size: int, dist: Dist, precision: Precision):
        owner = compose(defenses)
        self.objective = owner.get("objective") or Defense()
        self.own_adversary = self.objective.default_adversary() or PGDAdversary()
        adversary = owner.get("adversary")
        self.adversary = adversary or (self.own_adversary if self.objective.needs_adversary else None)
        self.data_defenses = owner["data"]
        self.model, self.net, self.opt, self.defenses, self.ctx = model, net, optimizer, defenses, ctx
        self.batches, self.augmenter, self.seed, self.batch_size, self.dist = batches, augmenter, seed, batch_size, dist
        self.precision = precision
        ctx.attack_loss = self.objective.attack_loss
        ctx.adversary = getattr(self.own_adversary, "settings", None) or PGDSettings()
        self.tracker = _Accuracy()
        self.steps = 0

    def step(self, step: int, idx, x, y) -> torch.Tensor:
        """Train one batch: augment, data defenses, adversary, objective, update; return the loss."""
        ctx, device, epoch = self.ctx, self.ctx.device, self.ctx.epoch
        augmentation = self.augmenter.draw(x, step, generator(device, derive_seed(self.seed, "step", epoch, step)))
        if augmentation is not None:
            x = augmentation(x)
        ctx.step, ctx.index = epoch * self.steps + step, idx
        ctx.generator = generator(device, derive_seed(self.seed, "adversary", epoch, step, self.dist.rank))
        ctx.state.pop("eps_map", None)
        ctx.state["augmentation"] = augmentation
        self.model.train()
        for d in self.data_defenses:
            x, y = d.transform_batch(x, y, ctx)
        x, x_adv = self.perturb(self.precision.batch(x), y)
        self.tracker.target = (x if x_adv is None else x_adv, y)
        with self.precision.update():
            loss = self.objective.loss(self.net, x, x_adv, y, ctx)
        loss = loss.float()
        self.tracker.target = None
        self.check_loss(loss, step)
        self.opt.zero_grad(set_to_none=True)
        self.precision.backward_step(loss, self.opt)
        return loss.detach()

    def perturb(self, x, y):
        """``(clean, adversarial)``: the adversary's output, verified against the engine's own copy of ``x``."""
        if self.adversary is None:
            return x, None
        self.model.eval()
        clean = x.detach().clone()  # the engine's own copy: the check cannot be moved
        with frozen(self.model), self.precision.adversary():
            out = self.adversary.perturb(self.model, x, y, self.ctx)
        x_adv = verified(f"training adversary {self.adversary.name!r}", self.ctx.threat, clean, out,
                         eps=self.ctx.state.get("eps_map")).x_adv
        self.model.train()
        return clean, x_adv

    def check_loss(self, loss, step: int) -> None:
        ctx = self.ctx
        if not torch.isfinite(loss):
            raise UserError(f"the training loss became {float(loss)} at epoch {ctx.epoch + 1}, step {step + 1}; lower --lr")
        if ctx.label_smoothing and not ctx.smoothing_used:
            raise UserError(f"the objective {self.objective.name or 'cross-entropy'!r} does not apply label smoothing "
                            "(its loss does not use ctx.cross_entropy); drop --defense label-smoothing")

    def epoch(self, epoch: int, lr: float, quiet: bool) -> dict:
        """Train one epoch; return its loss, training accuracy and the defenses' notes."""
        seed_everything(derive_seed(self.seed, "global", epoch, self.dist.rank))
        set_lr(self.opt, lr)
        self.ctx.epoch = epoch
        for d in self.defenses:
            d.on_epoch_start(self.model, self.batches.data, self.ctx)
        index_batches = self.batches_of(epoch)
        self.steps = len(index_batches)
        loss_sum = seen = 0.0
        self.tracker.correct = self.tracker.seen = 0
        bar = progress(len(index_batches), f"epoch {epoch + 1}/{self.ctx.epochs}", quiet=quiet, unit="batch")
        handle = self.model.register_forward_hook(self.tracker.hook)
        try:
            for step, (idx, x, y) in enumerate(self.batches.iterate(index_batches)):
                loss_sum += float(self.step(step, idx, x, y)) * y.shape[0]
                seen += y.shape[0]
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}")
        finally:
            handle.remove()
            bar.close()
        for d in self.defenses:
            d.on_epoch_end(self.model, self.batches.data, self.ctx)
        notes, self.ctx.notes = list(self.ctx.notes) + self.precision.take_notes(self.steps), []
        loss_sum, seen, correct, counted = self.dist.all_sum(
            [loss_sum, seen, float(self.tracker.correct), float(self.tracker.seen)], self.ctx.device)
        return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / counted if counted else None, "notes": notes}

    def batches_of(self, epoch: int):
        from advkit._internal.training.batching import epoch_batches

        return epoch_batches(len(self.batches), self.batch_size, self.seed, epoch, self.dist.rank, self.dist.world)


def train(model=None, train_data=None, *, defenses=(), threat=None, val_data=None, device="auto",
          weights=None, data_dir=None, eps=None, norm="Linf", n_train=None, n_val=500, val_from="train",
          **options) -> TrainResult:
    """Train ``model`` on ``train_data`` with ``defenses`` composed at the four points; ``advkit train`` is this
    function with the same arguments and defaults.

    ``model``: an :class:`~advkit._internal.models.ImageClassifier` or a name for
    :func:`advkit._internal.models.load_model` (None: the architecture a plugin declares for training;
    ``weights``: a weights file to start from); ``train_data``: :class:`~advkit._internal.data.ImageData`
    or a dataset name (None: the declared default), whose first ``n_train`` images train (``data_dir``:
    where its files are); ``n_val`` images validate and choose ``best``: by default held out of the training
    split with the run's seed (their indices go to config.json), with ``val_from="test"`` the test split's
    first ``n_val`` (model selection on test data: the summary says so); ``val_data`` gives them instead;
    ``defenses``: :class:`~advkit._internal.defense.Defense` objects or ``"name[:k=v,...]"`` strings;
    ``threat`` (or ``eps``, ``norm``): the training and validation budget (default: Linf at the
    dataset's usual eps); ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda[:N]``.
    ``options`` are those of :class:`~advkit._internal.training.setup.Options`: ``epochs=10,
    batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
    schedule="multistep", augment=True, val_attack=None`` (the attack a plugin declares for validation,
    a spec such as ``"pgd:steps=20"``, or ``"none"``), ``val_eot=20`` (EOT samples of the
    validation attack on a stochastic model), ``out=None``, ``resume=False``,
    ``overwrite=False``, ``config=None`` (saved as ``OUT/config.json``),
    ``seed=0`` (seeds everything before the model is built), ``quiet=False, command=""``; ``amp="off"``
    (``"bf16"``/``"fp16"``: autocast for the update), ``amp_adversary=False`` (the training adversary
    under autocast too), ``channels_last=None`` (on for CUDA with image inputs; ``True``/``False``
    force it): see :mod:`advkit._internal.training.precision`.
    """
    unknown = sorted(set(options) - {k for k, f in Options.__dataclass_fields__.items() if f.init})
    if unknown:
        raise TypeError(f"train() got unexpected keyword arguments: {', '.join(unknown)}")
    o = Options(**options)
    o.fill(declared_recipe(architecture(model) if isinstance(model, str) or model is None else model))
    o.check()
    src = Sources(weights, data_dir, eps, norm, n_train, n_val, val_from)
    src.check()
    seed_everything(o.seed)
    dist, device = init_distributed(torch.device(D.resolve_device(device)))
    try:
        check_device(o.amp, device)
        named = model if isinstance(model, str) or model is None else None
        model, train_data, defenses, threat, val_data = resolve_inputs(model, train_data, defenses, threat,
                                                                       val_data, device, src, o.seed)
        if o.config is not None:  # saved resolved: names the defaults stood for, the validation images
            o.config = {**o.config, "model": o.config.get("model") or architecture(named),
                        "dataset": o.config.get("dataset") or getattr(getattr(train_data, "info", None), "name", None),
                        "validation": validation_record(train_data, val_data),
                        **{k: getattr(o, k) for k in RECIPE}}
        # one run per --out: a second one refuses instead of overwriting this one's checkpoints
        with lock_output(o.out) if o.out is not None and dist.main else contextlib.nullcontext():
            return _run(o, model, train_data, list(defenses), threat, val_data, dist, device)
    finally:
        if dist.owns_group:
            shutdown()


def _build(o: Options, model, train_data, defenses, threat, dist: Dist, device, out: Path | None) -> Trainer:
    """The optimizer, the (DDP) network, the batches and the context, tied into a :class:`Trainer`."""
    shape = tuple(getattr(getattr(train_data, "info", None), "input_shape", None) or model.input_shape)
    precision = Precision(o.amp, o.amp_adversary, o.channels_last, device, shape)
    precision.prepare_model(model)
    opt = build_optimizer(model, o.optimizer, o.lr, o.momentum, o.weight_decay)
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = Batches(train_data, device, loader_workers(train_data, dist.world), o.seed)
    augmenter = Augmenter(shape, o.augment, o.batch_size, len(batches), dist.rank, dist.world)
    ctx = TrainContext(threat=threat, device=device, epochs=o.epochs, quiet=o.quiet,
                       cache_dir=str(out / "cache") if out is not None else None)
    return Trainer(model, net, opt, defenses, ctx, batches, augmenter, seed=o.seed, batch_size=o.batch_size, dist=dist,
                   precision=precision)


def loader_workers(data, world: int) -> int:
    """DataLoader workers of a file-backed set: its own ``workers`` (else 4), at most ``cpus / ranks - 1``."""
    if in_memory(data) is not None:
        return 0
    own = getattr(data, "workers", None)
    return min(4 if own is None else int(own), max(0, (os.cpu_count() or 1) // world - 1))


def _run(o: Options, model, train_data, defenses, threat, val_data, dist: Dist, device) -> TrainResult:
    recipes = prepare_model(model, defenses, train_data, device)
    out = Path(o.out) if o.out is not None else None
    settings = settings_of(o, model, train_data, val_data, threat, recipes)
    resume = False
    if out is not None and (dist.main or o.resume):
        resume = state.prepare_out(out, resume=o.resume, overwrite=o.overwrite, main=dist.main)
    resume = D.all_gather(resume)[0]  # rank 0's answer
    trainer = _build(o, model, train_data, defenses, threat, dist, device, out)
    validator = None
    if val_data is not None and len(val_data):
        vx, vy = on_device(val_data, device)
        validator = Validator(model, vx, vy, threat, o.val_attack, stochastic=model.info["stochastic"], eot=o.val_eot,
                              batch_size=o.batch_size, dist=dist, quiet=o.quiet)
    for d in defenses:
        d.setup(model, train_data, trainer.ctx)
    history, best, start = [], {"epoch": None, "metric": -1.0}, 0
    if resume:
        meta = state.load_state(out, model, trainer.opt, defenses, settings, main=dist.main)
        start, history, best = int(meta["epoch"]), list(meta["history"]), meta["best"]
        trainer.precision.load_state_dict(meta.get("scaler") or {})
    elif out is not None and dist.main:
        from advkit._internal.files import atomic_write_json

        atomic_write_json(out / "config.json", o.config if o.config is not None
                          else {**settings, "validation": validation_record(train_data, val_data)})
    common = dict(dataset=settings["dataset"], command=o.command, seed=o.seed, threat=threat.as_dict(),
                  defenses=recipes, stochastic=model.info["stochastic"])
    board = records.TensorBoard(out if dist.main else None)
    if dist.main and not o.quiet:
        print(trainer.precision.describe(), flush=True)
        if o.filled:
            print(f"optimisation: {o.filled}", flush=True)
    try:
        for epoch in range(start, o.epochs):
            record = _epoch(trainer, validator, epoch, o)
            history.append(record)
            score = records.score(record)
            improved = best["epoch"] is None or score > best["metric"]
            if improved:
                best = {"epoch": epoch + 1, "metric": score}
            if dist.main and not o.quiet:
                print(records.epoch_line(record, o.epochs), flush=True)
                for note in record["notes"]:
                    print(f"  {note}", flush=True)
            if out is not None and dist.main:
                _commit(out, trainer, history, best, improved, dict(common, epoch=epoch + 1, metrics=record),
                        settings, board)
            barrier()
    finally:
        board.close()
    model.eval()
    best_record = history[best["epoch"] - 1] if best.get("epoch") and best["epoch"] <= len(history) else None
    return TrainResult(model=model, history=history, best_epoch=best.get("epoch"), best=best_record, out=out,
                       threat=threat, dataset=settings["dataset"], n_train=len(train_data),
                       defenses=[d.name for d in defenses], validation=settings["validation"])


def _epoch(trainer: Trainer, validator: Validator | None, epoch: int, o: Options) -> dict:
    """Train and validate one epoch; return its record."""
    t0 = time.time()
    lr = lr_at(o.lr, o.schedule, epoch, o.epochs)
    stats = trainer.epoch(epoch, lr, o.quiet)
    clean, robust = validator(epoch + 1) if validator is not None else (None, None)
    attack = validator is not None and validator.attack is not None
    notes = list(stats["notes"])
    per_epoch = -(-len(trainer.batches) // o.batch_size)
    if epoch * per_epoch < records.FIRST_STEPS <= (epoch + 1) * per_epoch:  # said once, when enough steps ran
        notes += records.not_learning(stats["train_loss"], getattr(trainer.model, "num_classes", None),
                                      o.optimizer, o.lr)
    return {
        "epoch": epoch + 1, "lr": lr, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
        "val_clean": clean, "val_robust": robust, "val_attack": validator.label if attack else None,
        "val_adaptive": validator.adaptive if attack else None, **trainer.precision.record(),
        "time": round(time.time() - t0, 3),
        "notes": notes,
    }


def _commit(out: Path, trainer: Trainer, history, best, improved: bool, info: dict, settings: dict, board) -> None:
    """Write the epoch's files, then commit the epoch with the training state (see :mod:`advkit._internal.training.state`)."""
    from advkit._internal.checkpoint import save_checkpoint

    save_checkpoint(trainer.model, out / "last.safetensors", **info)
    if improved:
        save_checkpoint(trainer.model, out / "best.safetensors", **info)
    records.write_records(out, history, board)
    state.save_state(out, trainer.model, trainer.opt, trainer.defenses, {
        "epoch": history[-1]["epoch"], "settings": settings, "world_size": trainer.dist.world,
        "history": history, "best": best, "scaler": trainer.precision.state_dict(),
    })
