"""``advkit report DIR...``: one table comparing the ``report.json`` of several ``advkit eval`` runs."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", default="md", show_default=True, type=click.Choice(["md", "csv", "latex"]),
              help="Markdown, CSV, or a LaTeX tabular (booktabs).")
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="Write the table here instead of stdout.")
def report_cmd(dirs, fmt, output):
    """Compare evaluation runs: clean, per-attack and worst-case accuracy (%) with a 95 % interval.

    Each DIR is an 'advkit eval --out' directory (or its report.json). An attack a run did not have
    is left empty; one that ran on no point reads n/a.
    """
    from advkit._internal.errors import UserError
    from advkit._internal.evaluation.compare import format_comparison, load_run
    from advkit._internal.files import atomic_write_bytes

    runs = {}
    for d in dirs:
        if d in runs:
            raise UserError(f"{d} is given twice")
        runs[d] = load_run(d)
    text = format_comparison(runs, fmt)
    if output:
        from pathlib import Path

        atomic_write_bytes(Path(output), text.encode())
        click.echo(f"table written to {output}", err=True)
    else:
        click.echo(text, nl=False)
