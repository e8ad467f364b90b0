"""``advkit eval``: load the dataset and the model the options name, evaluate, print the table."""

from __future__ import annotations

import click

from advkit import distributed as D
from advkit.errors import UserError


def run_eval(opts, *, model, weights, dataset, data_dir, split, attacks, norm, eps, attack_opts, n, batch_size,
             independent, out, eps_sweep, audit, eot):
    """Resolve names, evaluate (the engine checks every argument), print the table, say where the reports are."""
    from advkit.data import load_dataset
    from advkit.evaluation.engine import evaluate
    from advkit.evaluation.report import markdown
    from advkit.models import load_model
    from advkit.registry import parse_options
    from advkit.runtime import seed_everything

    D.init_from_env(opts.device)
    device = D.local_device(opts.device)
    if n is not None and n <= 0:
        raise UserError(f"-n must be positive, got {n}")
    data = load_dataset(dataset, split, data_dir=data_dir)
    info = data.info
    m = load_model(model, num_classes=info.num_classes, input_shape=info.input_shape, mean=info.mean, std=info.std,
                   weights=weights, device=device, context={"dataset": info.name, "norm": norm})
    if tuple(m.input_shape) != tuple(info.input_shape) or m.num_classes != info.num_classes:
        raise UserError(
            f"model {model!r} expects {m.num_classes} classes of shape {tuple(m.input_shape)}, "
            f"but {dataset!r} has {info.num_classes} classes of shape {tuple(info.input_shape)}"
        )
    seed_everything(opts.seed)
    meta = {
        "command": opts.command,
        "model": model,
        "model_info": {k: v for k, v in m.info.items() if k in ("checkpoint", "defenses", "stochastic", "epoch")}
        | {"arch": m.arch},
    }
    report = evaluate(
        m, data.first(n), attacks, eps=eps, norm=norm, attack_opts=parse_options(attack_opts),
        batch_size=batch_size, independent=independent, out=out, eps_sweep=eps_sweep, audit=audit,
        eot=eot, seed=opts.seed, device=device, quiet=opts.quiet, meta=meta,
    )
    if D.is_main():
        click.echo(markdown(report))
        if out:
            click.echo(f"reports written to {out}/ (report.json, report.md, results.csv)")
    D.shutdown()
    return report
