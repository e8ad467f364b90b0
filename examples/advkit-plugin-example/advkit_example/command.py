"""Command ``advkit example-info``: a plugin command reads the root options from ``RunOptions``."""

from __future__ import annotations

import click

from advkit.plugin import dist_version, registry


@click.command("example-info")
@click.option("--kind", default=None, help="Only this kind (attack, defense, explainer, backbone, dataset, check).")
@click.pass_obj
def example_info(opts, kind):
    """Show what advkit-plugin-example registered, with the run's device and seed."""
    click.echo(f"advkit-plugin-example {dist_version('advkit-plugin-example')} "
               f"(device {opts.device}, seed {opts.seed})")
    for k in [kind] if kind else ["attack", "defense", "explainer", "backbone", "dataset", "check"]:
        names = [e.name for e in registry(k) if e.package == "advkit-plugin-example"]
        click.echo(f"  {k}s: {', '.join(names) or '-'}")
