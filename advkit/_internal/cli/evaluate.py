"""``advkit eval``: load the dataset and the model the options name, evaluate, print the table."""

from __future__ import annotations

import click


def run_eval(opts, *, model, weights, dataset, data_dir, split, attacks, norm, eps, attack_opts, n, batch_size,
             independent, out, eps_sweep, audit, adaptive, surrogate, eot, draws, save_adv, confirm):
    """``advkit.evaluate`` with the command's arguments (the engine resolves and checks them), then the table."""
    from advkit._internal import distributed as D
    from advkit._internal.evaluation.engine import evaluate
    from advkit._internal.evaluation.report import markdown
    from advkit._internal.grammar import merged, parse_options

    report = evaluate(
        model, dataset, attacks, weights=weights, split=split, data_dir=data_dir, eps=eps, norm=norm,
        attack_opts=merged(parse_options(attack_opts)), n=n, batch_size=batch_size, independent=independent,
        out=out, eps_sweep=eps_sweep, audit=audit, adaptive=adaptive, surrogate=surrogate, eot=eot, draws=draws, seed=opts.seed, device=opts.device_name,
        quiet=opts.quiet, meta={"command": opts.command}, save_adv=save_adv, confirm=confirm,
    )
    if D.is_main():
        if opts.verbose:
            for a in report.attacks:
                click.echo(f"{a.name}: {a.qualified} ({a.package} {a.version}), {a.implementation}; params {a.params}",
                           err=True)
        click.echo(markdown(report, per_class_table=bool(opts.verbose)))
        if out:
            click.echo(f"reports written to {out}/ ({', '.join(report.meta.get('written', []))})")
    return report
