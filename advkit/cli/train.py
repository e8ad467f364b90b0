"""``advkit train``: load the data, the model and the defenses the options name, train, print a summary."""

from __future__ import annotations

import click

from advkit import distributed as D
from advkit.errors import UserError


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def run_train(opts, *, model, weights, dataset, data_dir, defenses, epochs, batch_size, lr, optimizer, momentum,
              weight_decay, schedule, norm, eps, augment, n_train, n_val, val_attack, out, resume):
    """Resolve names, train (the engine checks the numbers), print the best epoch and the checkpoints."""
    import torch

    from advkit.data import load_dataset
    from advkit.defense import create_defense
    from advkit.models import load_model
    from advkit.threat import ThreatModel
    from advkit.training.trainer import train

    if n_val is not None and n_val < 0:
        raise UserError(f"--n-val must be >= 0, got {n_val}")
    train_data = load_dataset(dataset, "train", data_dir=data_dir, n=n_train)
    val_data = load_dataset(dataset, "test", data_dir=data_dir, n=n_val) if n_val else None
    info = train_data.info
    threat = ThreatModel.parse(norm, eps if eps is not None else info.default_eps)
    torch.manual_seed(opts.seed)
    net = load_model(model, num_classes=info.num_classes, input_shape=info.input_shape, mean=info.mean,
                     std=info.std, weights=weights, device=opts.device, context={"dataset": info.name, "norm": norm})
    defs = [create_defense(spec) for spec in defenses]
    result = train(
        net, train_data, defenses=defs, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        momentum=momentum, weight_decay=weight_decay, schedule=schedule, threat=threat, augment=augment,
        val_data=val_data, val_attack=val_attack, out=out, resume=resume, seed=opts.seed, device=opts.device,
        quiet=opts.quiet, command=opts.command,
    )
    if D.is_main():
        names = ", ".join(d.name for d in defs) or "none (standard training)"
        click.echo(f"trained {net.arch} on {info.name} ({len(train_data)} images, {threat}); defenses: {names}")
        b = result.best
        if b is not None and b.get("val_clean") is None:
            click.echo(f"best epoch {b['epoch']}: train loss {b['train_loss']:.4f} (no validation)")
        elif b is not None:
            line = f"best epoch {b['epoch']}: val clean {_pct(b['val_clean'])}"
            if b.get("val_robust") is not None:
                line += f", val {b['val_attack']} {_pct(b['val_robust'])}"
            click.echo(line)
        if result.out is not None:
            click.echo(f"checkpoints: {result.out / 'best.safetensors'} (best), {result.out / 'last.safetensors'} (last)")
    return result
